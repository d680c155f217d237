"""Workflows for the crash tester's own tests; their steps note each side
effect in ``ledger``, which the tests' invariants read."""

from __future__ import annotations

import threading

import keel

ledger: list[str] = []
_lock = threading.Lock()


def note(entry: str) -> None:
    with _lock:
        ledger.append(entry)


def reset() -> None:
    ledger.clear()


def charged_once() -> None:
    """The user's invariant: no order is charged twice."""
    charges = [e for e in ledger if e.startswith("charge ")]
    assert len(charges) == len(set(charges)), f"charged twice: {charges}"


@keel.step(name="kit.reserve")
def reserve(order: str) -> str:
    return f"hold-{order}"


@keel.step(name="kit.charge_twice")
def charge_non_idempotent(order: str) -> str:
    """Charges again whenever it runs again: the bug the tester must find."""
    note(f"charge {order}")
    return f"receipt-{order}"


@keel.step(name="kit.charge_once")
def charge_idempotent(order: str) -> str:
    """Hands its idempotency key to the 'payment provider', which charges once per key."""
    step = keel.current_step()
    key = step.idempotency_key if step else order
    with _lock:
        if f"key {key}" not in ledger:
            ledger.append(f"key {key}")
            ledger.append(f"charge {order}")
    return f"receipt-{order}"


@keel.step(name="kit.label")
async def label(order: str) -> str:
    return f"label-{order}"


@keel.step(name="kit.ship")
async def ship(order: str, tag: str) -> str:
    return f"shipped {order} with {tag}"


@keel.step(name="kit.email")
def email(order: str) -> None:
    pass


@keel.workflow(name="kit.careless_order")
async def careless_order(order: str) -> str:
    """Write 1 journals reserve; write 2 journals the non-idempotent charge."""
    await reserve.aio(order)
    receipt = await charge_non_idempotent.aio(order)
    return receipt


@keel.workflow(name="kit.five_steps")
async def five_steps(order: str) -> str:
    """Five steps, sync and async, a durable sleep, an idempotent charge."""
    hold = await reserve.aio(order)
    receipt = await charge_idempotent.aio(order)
    tag = await label.aio(order)
    await keel.sleep(3600)  # an hour of workflow time, skipped
    shipped = await ship.aio(order, tag)
    await email.aio(order)
    return f"{hold} {receipt} {shipped}"


FLAKY = keel.RetryPolicy(max_attempts=4, initial_interval=60.0, jitter=0.0)


@keel.step(name="kit.flaky", retry=FLAKY)
def flaky(order: str) -> str:
    """Fails its first two attempts (a minute apart: skipped time), then succeeds."""
    step = keel.current_step()
    attempt = step.attempt if step else 3
    note(f"flaky attempt {attempt}")
    if attempt < 3:
        raise ConnectionError(f"provider down (attempt {attempt})")
    return f"ok after {attempt}"


@keel.workflow(name="kit.retrying")
async def retrying(order: str) -> str:
    return await flaky.aio(order)


@keel.step(name="kit.out_of_stock", retry=keel.RetryPolicy(max_attempts=1))
def out_of_stock(order: str) -> str:
    raise ValueError(f"{order} is out of stock")


@keel.workflow(name="kit.failing")
async def failing(order: str) -> str:
    await reserve.aio(order)
    return await out_of_stock.aio(order)


@keel.workflow(name="kit.reads_ledger")
async def reads_ledger(order: str) -> str:
    """Workflow code that reads what steps did outside the journal: not
    deterministic, so a crash changes what it does."""
    await charge_non_idempotent.aio(order)
    if len(ledger) > 1:
        await email.aio(order)
    return f"{len(ledger)} entries"


@keel.workflow(name="kit.child")
async def child(order: str) -> str:
    tag = await label.aio(order)
    return await ship.aio(order, tag)


@keel.workflow(name="kit.parent")
async def parent(order: str) -> str:
    hold = await reserve.aio(order)
    shipped = await keel.run_child(child, order)
    return f"{hold} {shipped}"


@keel.step(name="kit.render", queue="kit-render")
def render(order: str) -> str:
    note(f"render {order}")
    return f"pdf-{order}"


@keel.workflow(name="kit.invoice")
async def invoice(order: str) -> str:
    """A dispatched step: a task worker runs it and stores its result in its task."""
    pdf = await render.aio(order)
    return await ship.aio(order, pdf)


@keel.step(name="kit.inc")
def inc(x: int) -> int:
    return x + 1


@keel.workflow(name="kit.snapshots", snapshot_every=2)
async def snapshots(n: int) -> int:
    x = 0
    for _ in range(n):
        x = await inc.aio(x)
    return x


@keel.workflow(name="kit.continues")
async def continues(n: int, total: int = 0) -> int:
    total = await inc.aio(total)
    if n > 0:
        keel.continue_as_new(n - 1, total=total)
    return total


@keel.step(name="kit.keyed", idempotency_key=lambda order: f"key-{order}")
def keyed(order: str) -> str:
    note(f"keyed {order}")
    return f"done {order}"


@keel.workflow(name="kit.with_key")
async def with_key(order: str) -> str:
    return f"{await keyed.aio(order)} {await inc.aio(1)}"


@keel.workflow(name="kit.waits_for_approval")
async def waits_for_approval(order: str) -> str:
    await reserve.aio(order)
    approved: str = await keel.wait_for_signal("approve")
    return approved


numbers = keel.Graph("kit.numbers")


@numbers.node
def listed(n: int) -> list[int]:
    return list(range(1, n + 1))


@numbers.map("listed")
def doubled(item: int) -> int:
    note(f"double {item}")
    return 2 * item


@numbers.node
def summed(doubled: list[int]) -> int:
    return sum(doubled)


numbers_wf = numbers.build()

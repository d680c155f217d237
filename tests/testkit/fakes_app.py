"""A payment workflow whose failure paths the step-fake tests reach without
touching its code. The real steps record what they did in ``done``."""

from __future__ import annotations

import keel

done: list[str] = []

QUICK = keel.RetryPolicy(max_attempts=3, initial_interval=0.01, max_interval=0.01, jitter=0.0)


class CardDeclined(Exception):
    pass


@keel.step(name="fk.release")
def release(order: str) -> None:
    done.append(f"release {order}")


@keel.step(name="fk.reserve", compensate=release)
def reserve(order: str) -> str:
    done.append(f"reserve {order}")
    return f"hold-{order}"


@keel.step(name="fk.charge", retry=QUICK)
def charge(order: str, amount: int) -> str:
    done.append(f"charge {order} {amount}")
    return f"receipt-{order}"


@keel.step(name="fk.quote", retry=QUICK)
async def quote(order: str) -> int:
    done.append(f"quote {order}")
    return 100


@keel.workflow(name="fk.checkout")
async def checkout(order: str) -> str:
    amount = await quote.aio(order)
    async with keel.saga():
        hold = await reserve.aio(order)
        receipt = await charge.aio(order, amount)
    return f"{hold} {receipt}"


@keel.step(name="fk.render", queue="fk-render")
def render(order: str) -> str:
    done.append(f"render {order}")
    return f"pdf-{order}"


@keel.workflow(name="fk.invoice")
async def invoice(order: str) -> str:
    return await render.aio(order)  # dispatched to a queue: a task worker runs it

"""Workflows the dashboard's browser tests run on a real worker (``keel worker
tests.browser.apps``). Names carry a ``ui.`` prefix."""

from __future__ import annotations

from typing import Any

import keel
from keel import RetryPolicy
from keel.graph import Graph

FAST = RetryPolicy(max_attempts=4, initial_interval=0.3, max_interval=0.3, jitter=0.0)


@keel.step(name="ui.charge", retry=FAST)
def charge(amount: int, fail_times: int) -> dict[str, int]:
    """Fails its first ``fail_times`` attempts, then charges."""
    info = keel.current_step()
    assert info is not None
    if info.attempt <= fail_times:
        raise ConnectionError(f"payment gateway down (attempt {info.attempt})")
    return {"charged": amount}


@keel.step(name="ui.never", retry=RetryPolicy(max_attempts=2, initial_interval=0.1, jitter=0.0))
def never(reason: str) -> None:
    raise ValueError(reason)


@keel.workflow(name="ui.ship")
async def ship(amount: int) -> str:
    await keel.sleep(0.2)
    return f"shipped {amount}"


@keel.workflow(name="ui.order")
async def order(amount: int, fail_times: int = 2) -> dict[str, Any]:
    """A retried step, a timer, a child run and a signal: the timeline's cast."""
    paid = await charge(amount, fail_times)
    await keel.sleep(0.3)
    shipped = await keel.run_child(ship, amount)
    approved = await keel.wait_for_signal("approve", timeout=60)
    return {"paid": paid, "shipped": shipped, "approved": approved}


@keel.workflow(name="ui.waits")
async def waits() -> Any:
    """Waits for a signal (for a long time): something to cancel."""
    return await keel.wait_for_signal("go")


@keel.workflow(name="ui.fails")
async def fails(reason: str) -> None:
    """Fails for good after two attempts of its step."""
    await never(reason)


@keel.workflow(name="ui.quick")
async def quick(n: int) -> int:
    return n * 2


ui_approvals = Graph("ui.approvals")


@ui_approvals.node
def price(amount: int) -> int:
    return amount * 2


ui_approvals.approval("sign_off", after="price")


@ui_approvals.node(after=("sign_off", "approved"))
def book(price: int) -> str:
    return f"booked {price}"


approvals = ui_approvals.build()

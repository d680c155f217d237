"""Workflows whose recorded journals are committed under golden/.

Changing these functions in a way that breaks replay of runs recorded with the
old code makes tests/replay/test_golden.py fail: that is the point. Regenerate
the journals (python -m tests.replay.record_golden) only for a deliberate,
documented break.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import keel
from keel import RetryPolicy

registry = keel.Registry()
attempts: dict[str, int] = {}


@dataclass
class Order:
    order_id: str
    amount: Decimal
    items: list[str]


@dataclass
class Shipment:
    order_id: str
    tracking: str
    approved_by: str


@keel.step
def reserve(order: Order) -> list[str]:
    return [f"{item}-reserved" for item in order.items]


@keel.step(retry=RetryPolicy(max_attempts=3, initial_interval=0.01, jitter=0.0))
def charge(order_id: str, amount: Decimal) -> str:
    attempts[order_id] = attempts.get(order_id, 0) + 1
    if attempts[order_id] < 2:
        raise ConnectionError("payment gateway timeout")
    return f"charge-{order_id}-{amount}"


@keel.step
async def label(order_id: str, item: str) -> str:
    return f"{order_id}/{item}"


@keel.workflow(name="golden_order", registry=registry)
async def golden_order(order: Order) -> Shipment:
    reserved = await reserve(order)
    await charge(order.order_id, order.amount)
    labels = await asyncio.gather(*(label(order.order_id, r) for r in reserved))
    await keel.sleep(0.01)
    approver = await keel.wait_for_signal("approve", timeout=30)
    tracking = f"{keel.uuid4().hex[:8]}-{len(labels)}"
    return Shipment(order.order_id, tracking, str(approver))


# --- a saga cancelled while it waits: cleanup and compensations ---------------------------


@keel.step(name="golden.unbook")
def unbook(result: str) -> None:
    return None


@keel.step(name="golden.book", compensate=unbook)
def book(what: str) -> str:
    return f"booking-{what}"


@keel.step(name="golden.notify")
def notify(message: str) -> str:
    return message


@keel.workflow(name="golden_saga_cancelled", registry=registry)
async def golden_saga_cancelled(trip: str) -> str:
    try:
        async with keel.saga():
            await book(f"{trip}-hotel")
            await book(f"{trip}-flight")
            await keel.wait_for_signal("confirm")  # cancelled here when recorded
    except keel.WorkflowCancelled:
        await notify(f"{trip} cancelled")
        raise
    return "confirmed"

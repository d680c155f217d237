"""The demo's order workflow: steps, a flaky retried step, a durable sleep, a signal.

Run it with ``keel demo``, or serve it with ``keel worker keel.demo_app`` and
start runs with ``keel start process_order '{"order_id": "A-1", ...}' --app keel.demo_app``.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass
from datetime import datetime

import keel
from keel import RetryPolicy

__all__ = [
    "Approval",
    "Order",
    "PaymentGatewayTimeout",
    "Receipt",
    "charge_payment",
    "process_order",
    "release_inventory",
    "reserve_inventory",
    "ship",
]


@dataclass(frozen=True)
class Order:
    """What the customer bought."""

    order_id: str
    sku: str
    quantity: int
    amount_cents: int


@dataclass(frozen=True)
class Approval:
    """Payload of the ``approve`` signal."""

    approved_by: str
    approved: bool = True


@dataclass(frozen=True)
class Receipt:
    """The workflow's result."""

    order_id: str
    status: str
    reservation: str
    charge: str | None = None
    tracking: str | None = None
    approved_by: str | None = None
    finished_at: datetime | None = None


class PaymentGatewayTimeout(Exception):
    """A transient failure of the (pretend) payment provider."""


#: Attempts of ``charge_payment`` per run id: it fails the first two of every run.
charge_attempts: dict[str, int] = {}
_attempts_lock = threading.Lock()
FLAKY_ATTEMPTS = 2


@keel.step
async def reserve_inventory(order: Order) -> str:
    """Hold stock for the order; returns a reservation id."""
    await asyncio.sleep(0.05)  # a call to the inventory service
    return f"RSV-{order.order_id}-{order.quantity}x{order.sku}"


@keel.step
async def release_inventory(reservation: str) -> str:
    """Compensation: give the held stock back."""
    await asyncio.sleep(0.02)
    return f"released {reservation}"


@keel.step(
    retry=RetryPolicy(max_attempts=5, initial_interval=0.15, backoff_coefficient=2.0, jitter=0.1)
)
def charge_payment(order: Order) -> str:
    """Charge the card; the gateway times out on the first two attempts of every run.

    A sync step: it runs on the worker's thread pool. The idempotency key is what
    a real gateway would get, so a retried charge is never taken twice.
    """
    info = keel.current_step()
    run_id = info.run_id if info is not None else "direct"
    with _attempts_lock:
        attempt = charge_attempts[run_id] = charge_attempts.get(run_id, 0) + 1
    if attempt <= FLAKY_ATTEMPTS:
        raise PaymentGatewayTimeout(f"payment gateway timed out (attempt {attempt})")
    key = info.idempotency_key if info is not None else "-"
    return f"CH-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


@keel.step
async def ship(order: Order, reservation: str) -> str:
    """Hand the parcel to the carrier; returns a tracking number."""
    await asyncio.sleep(0.05)
    return f"TRK-{order.order_id}-{reservation[-6:]}"


@keel.workflow
async def process_order(
    order: Order, warehouse_delay: float = 2.0, approval_timeout: float = 30.0
) -> Receipt:
    """Reserve, charge (with retries), wait for the warehouse, get approval, ship."""
    reservation = await reserve_inventory(order)
    charge = await charge_payment(order)
    await keel.sleep(warehouse_delay)  # durable: the run suspends, no worker is held
    try:
        approval: Approval = await keel.wait_for_signal(
            "approve", type=Approval, timeout=approval_timeout
        )
    except keel.SignalTimeoutError:
        await release_inventory(reservation)
        return Receipt(order.order_id, "not approved", reservation, charge)
    if not approval.approved:
        await release_inventory(reservation)
        return Receipt(order.order_id, "rejected", reservation, charge, None, approval.approved_by)
    tracking = await ship(order, reservation)
    return Receipt(
        order.order_id, "shipped", reservation, charge, tracking, approval.approved_by, keel.now()
    )

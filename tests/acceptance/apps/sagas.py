"""A saga for the crash-during-compensation scenario: three completed steps,
a failing one, and three compensations, the second of which can be gated."""

from __future__ import annotations

import keel
from tests.acceptance.apps._record import record, wait_gate

ONCE = keel.RetryPolicy(max_attempts=1)


@keel.step(name="acc.saga.release")
def release(item: str) -> None:
    record()


@keel.step(name="acc.saga.reserve", compensate=release)
def reserve(item: str) -> str:
    record()
    return item


@keel.step(name="acc.saga.refund")
def refund(gate: str, result: str) -> None:
    record()
    if gate:
        wait_gate(gate)
    record("end")


@keel.step(name="acc.saga.charge", compensate=refund)
def charge(amount: int, gate: str) -> str:
    record()
    return f"receipt-{amount}"


@keel.step(name="acc.saga.unship")
def unship(item: str) -> None:
    record()


@keel.step(name="acc.saga.ship", compensate=unship)
def ship(item: str) -> str:
    record()
    return item


@keel.step(name="acc.saga.fail", retry=ONCE)
def fail() -> None:
    record()
    raise ValueError("out of stock")


@keel.workflow(name="acc.saga.trip")
async def trip(gate: str) -> str:
    """Compensations run newest first: unship, refund (waits for ``gate``), release."""
    async with keel.saga():
        await reserve("room")
        await charge(5, gate)
        await ship("box")
        await fail()
    return "unreachable"

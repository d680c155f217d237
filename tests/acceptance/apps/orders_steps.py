"""Steps of ``acc.orders``, shared by every deploy of it (steps are registered
by name, so one process loads each step once)."""

from __future__ import annotations

import keel
from tests.acceptance.apps._record import record


@keel.step(name="acc.o.prepare")
def prepare(order: str) -> str:
    record()
    return f"prepared {order}"


@keel.step(name="acc.o.gift_wrap")
def gift_wrap(note: str) -> str:
    record()
    return f"{note}, wrapped"


@keel.step(name="acc.o.ship")
def ship(note: str) -> str:
    record()
    return f"shipped ({note})"

"""Deploy 1 of ``acc.orders``: prepare, wait for "approve", ship.

Its version is the default one, a hash of the function's code.
"""

from __future__ import annotations

import keel
from tests.acceptance.apps.orders_steps import prepare, ship


@keel.workflow(name="acc.orders")
async def orders(order: str) -> str:
    note = await prepare(order)
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")

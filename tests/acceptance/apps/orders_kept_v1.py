"""Deploy 1's ``acc.orders`` kept beside deploy 2 for the runs started on it.

The function is copied unchanged but for its name and decorator, which the
version hash leaves out, so it keeps deploy 1's version.
"""

from __future__ import annotations

import keel
from tests.acceptance.apps.orders_steps import prepare, ship


@keel.workflow(name="acc.orders", current=False)
async def orders_v1(order: str) -> str:
    note = await prepare(order)
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")

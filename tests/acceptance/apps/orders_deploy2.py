"""Deploy 2 of ``acc.orders``: the code changed (a gift-wrap step), so it is a
new version; runs started on deploy 1 need ``orders_kept_v1`` loaded too."""

from __future__ import annotations

import keel
from tests.acceptance.apps.orders_steps import gift_wrap, prepare, ship


@keel.workflow(name="acc.orders")
async def orders(order: str) -> str:
    note = await gift_wrap(await prepare(order))
    by = await keel.wait_for_signal("approve")
    return await ship(f"{note}, approved by {by}")

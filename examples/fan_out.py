"""Child workflows: a basket fans out one child run per item, then fans in.

Run it with ``python examples/fan_out.py``; each run starts a new basket.
"""

import asyncio
from decimal import Decimal

import keel

PRICES = {"mug": Decimal("8.50"), "tea": Decimal("4.20"), "spoon": Decimal("1.10")}


@keel.step
async def look_up_price(sku: str) -> Decimal:
    return PRICES[sku]  # a real app would call a pricing service here


@keel.workflow
async def quote(sku: str, qty: int) -> Decimal:
    return await look_up_price.aio(sku) * qty


@keel.workflow
async def basket(items: dict[str, int]) -> Decimal:
    handles = [await keel.start_child(quote, sku, qty) for sku, qty in items.items()]
    totals = await asyncio.gather(*(h.result() for h in handles))  # children run in parallel
    return sum(totals, Decimal(0))


async def main() -> None:
    async with keel.Worker("sqlite:///baskets.db") as worker:
        client = worker.client()
        run = await client.start(basket, {"mug": 2, "tea": 1, "spoon": 4})
        print(f"basket {run.run_id}: {await run.result(timeout=30)}")
        try:
            await client.start(basket, {"mug": "two"})  # checked here, not in the worker
        except keel.InvalidInputError as exc:
            print(f"refused: {exc}")


if __name__ == "__main__":
    asyncio.run(main())

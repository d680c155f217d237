import asyncio
from dataclasses import dataclass
from decimal import Decimal

import keel


@dataclass
class Order:
    id: str
    amount: Decimal


@keel.step(retry=keel.RetryPolicy(max_attempts=5, initial_interval=0.5))
def charge(order: Order) -> str:  # sync steps run on a thread pool
    step = keel.current_step()  # None when called outside a workflow
    key = step.idempotency_key if step else order.id  # hand it to your payment API
    return f"charged {order.amount} (idempotency key {key})"


@keel.step
async def ship(order: Order) -> str:  # async steps run on the worker's event loop
    return f"order {order.id} shipped"


@keel.workflow
async def order_flow(order: Order) -> str:
    receipt = await charge.aio(order)  # journaled once; a replay returns it
    try:
        await keel.wait_for_signal("approve", timeout=3600)
    except keel.SignalTimeoutError:
        return "not approved"
    await keel.sleep(0.5)  # durable; a long sleep suspends the run and frees the worker
    return f"{receipt}; {await ship.aio(order)}"


async def main() -> None:
    async with keel.Worker("sqlite:///orders.db") as worker:
        client = worker.client()
        order = Order("o-1", Decimal("9.99"))
        # The order's id as the run id: starting it again returns the same run.
        run = await client.start(order_flow, order, run_id=f"order-{order.id}")
        # A delivery id makes the signal safe to send again, even once the run ended.
        await client.signal(run.run_id, "approve", {"by": "ana"}, delivery_id="approve-o-1")
        print(await run.result(timeout=30))
        if not run.created:
            print(f"run {run.run_id} existed already: nothing ran twice")


if __name__ == "__main__":
    asyncio.run(main())

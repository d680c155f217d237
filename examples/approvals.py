"""Signals: an expense waits for two approvals, sent with delivery ids so that a
sender may retry safely; a cancelled expense refuses further signals.

Run it with ``python examples/approvals.py``; each run files new expenses.
"""

import asyncio
from dataclasses import dataclass

import keel


@dataclass
class Approval:
    by: str
    ok: bool


@keel.step
def pay_out(expense_id: str, amount: int) -> str:
    return f"paid {amount} for {expense_id}"


@keel.workflow
async def expense(expense_id: str, amount: int) -> str:
    approvers: set[str] = set()
    while len(approvers) < 2:
        approval = await keel.wait_for_signal("approval", type=Approval, timeout=86400)
        if not approval.ok:
            return f"rejected by {approval.by}"
        approvers.add(approval.by)
    return await pay_out.aio(expense_id, amount)


async def main() -> None:
    async with keel.Worker("sqlite:///expenses.db") as worker:
        client = worker.client()
        run = await client.start(expense, "taxi", 42)
        for by in ("ana", "ana", "bo"):  # ana's approval is sent twice (a retry)...
            sent = await client.signal(
                run.run_id, "approval", Approval(by, True), delivery_id=f"{run.run_id}/{by}"
            )
            print(f"approval by {by}: {'delivered' if sent else 'a repeat, ignored'}")
        print(await run.result(timeout=30))  # ...and counted once

        other = await client.start(expense, "hotel", 300)
        await client.cancel(other.run_id)
        try:
            await client.signal(other.run_id, "approval", Approval("ana", True))
        except (keel.RunCancellingError, keel.RunFinishedError) as exc:
            print(f"refused: {exc}")


if __name__ == "__main__":
    asyncio.run(main())

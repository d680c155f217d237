"""Version 1 of ``acc.versioned``: step a, wait for "go", step b.

Both versions declare ``version="1"``: the deploy claims the change is
compatible, so only replay can notice that it is not.
"""

from __future__ import annotations

import keel
from tests.acceptance.apps._record import record


@keel.step(name="acc.v.a")
def a() -> str:
    record()
    return "a"


@keel.step(name="acc.v.b")
def b(prev: str) -> str:
    record()
    return prev + "b"


@keel.workflow(name="acc.versioned", version="1")
async def versioned() -> str:
    first = await a()
    go = await keel.wait_for_signal("go")
    return str(await b(f"{first}{go}"))

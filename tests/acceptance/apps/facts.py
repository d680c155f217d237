"""Large step results, stored once as facts: a code workflow and a graph whose
large values are equal for equal seeds (so every run shares one fact).

Used in-process by tests/integration/test_facts.py and by ``keel worker``
processes in tests/acceptance/test_facts_crash.py; step bodies leave evidence
(see ``_record``) only when the acceptance harness set its directory.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import keel
from keel.graph import Graph
from tests.acceptance.apps._record import DIR_ENV, record, wait_gate

SIZE = 200_000  # characters: the value is ~195 KiB of JSON, over the 64 KiB threshold


def text_of(seed: str) -> str:
    return (seed * SIZE)[:SIZE]


def summary(text: str) -> dict[str, Any]:
    return {"size": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


@keel.step(name="accf.blob")
def blob(seed: str) -> str:
    if DIR_ENV in os.environ:
        record()
    return text_of(seed)


@keel.step(name="accf.wait")
def wait(gate: str) -> str:
    if DIR_ENV in os.environ:
        record()
        wait_gate(gate)
    return gate


@keel.workflow(name="accf.flow")
async def flow(seed: str, gate: str = "") -> dict[str, Any]:
    text = await blob.aio(seed)
    if gate:
        await wait.aio(gate)
    await keel.sleep(0.01)  # a suspend: the next turn replays the journal
    return summary(text)


docs = Graph("accf.graph")


@docs.node
def doc(seed: str) -> str:
    return text_of(seed)


@docs.node
def size(doc: str) -> int:
    return len(doc)


docs_wf = docs.build()

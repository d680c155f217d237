"""Unit tests are pure: no database (SQLite or PostgreSQL) and no subprocess.

Each runs inside :data:`tests.fence.FENCE`: an attempt raises, and fails the
test even if the code under test caught the error. Tests that need a real
database belong in tests/store (one store) or tests/integration.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fence import FENCE


@pytest.fixture(autouse=True)
def _pure(request: pytest.FixtureRequest) -> Iterator[None]:
    with FENCE.closed(request.node.nodeid) as breaches:
        yield
    if breaches:
        pytest.fail("\n".join(breaches), pytrace=False)

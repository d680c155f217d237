"""Live values for ``now()``, ``uuid4()`` and ``random()`` at the live tail."""

from __future__ import annotations

import random as _random
import uuid
from datetime import UTC, datetime


class SystemLiveSource:
    """Wall clock and OS randomness; replay never calls these."""

    def __init__(self) -> None:
        self._rng = _random.SystemRandom()

    def now(self) -> datetime:
        return datetime.now(UTC)

    def uuid4(self) -> uuid.UUID:
        return uuid.uuid4()

    def random(self) -> float:
        return self._rng.random()

"""Live values for ``now()``, ``uuid4()`` and ``random()`` at the live tail."""

from __future__ import annotations

import random as _random
import uuid
from datetime import UTC, datetime

from keel.worker.clock import SYSTEM_CLOCK, Clock


class SystemLiveSource:
    """The worker's clock and OS randomness; replay never calls these."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK) -> None:
        self._rng = _random.SystemRandom()
        self._clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock.now(), UTC)

    def uuid4(self) -> uuid.UUID:
        return uuid.uuid4()

    def random(self) -> float:
        return self._rng.random()

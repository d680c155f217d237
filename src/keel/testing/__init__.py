"""Keel's test kit for users.

- :class:`TestEnv`: a store, a started in-process worker and a client on a
  :class:`TestClock`, whose time the test skips (``await env.sleep(3600)``);
- the pytest plugin (:mod:`keel.testing.pytest_plugin`, enabled by Keel's
  ``pytest11`` entry point): ``async def`` tests and the ``keel_*`` fixtures.

:mod:`keel.testing.conformance` holds the store conformance suite (it needs
pytest, so it is not imported here).
"""

from keel.testing.clock import TestClock
from keel.testing.env import StillBusyError, TestEnv

__all__ = ["StillBusyError", "TestClock", "TestEnv"]

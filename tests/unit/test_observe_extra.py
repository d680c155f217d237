"""``--metrics-port`` without the metrics extra: a clear error naming the extra."""

from __future__ import annotations

import sys

import pytest

from keel.errors import ConfigurationError
from keel.observe.endpoints import install_meter_provider


def test_without_the_extra_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.prometheus", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'keel\[metrics\]'"):
        install_meter_provider()

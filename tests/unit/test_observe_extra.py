"""``--metrics-port``: without the metrics extra, a clear error naming the extra;
by default, loopback only."""

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


def test_the_endpoints_listen_on_loopback_unless_told_otherwise() -> None:
    from click.core import Option

    from keel.cli.main import worker
    from keel.cli.serve import WorkerOptions

    # The endpoints have no authentication: every default keeps them off the network.
    host = next(p for p in worker.params if isinstance(p, Option) and p.name == "metrics_host")
    assert host.default == "127.0.0.1"
    opts = WorkerOptions("sqlite:///x.db", (), 1, 30.0, 1.0, True, 30.0)
    assert opts.metrics_host == "127.0.0.1"

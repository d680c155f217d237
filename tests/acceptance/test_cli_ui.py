"""`keel ui` as a user runs it: a subprocess serving the dashboard, with the
database password and the operator token never shown or logged."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError
from urllib.request import Request, urlopen

import pytest

from tests import pg

KEEL = str(Path(sys.executable).with_name("keel"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, timeout: float = 30) -> str:
    """GET ``url`` once the server answers (deadline ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urlopen(Request(url), timeout=5) as response:
                return str(response.read().decode())
        except (URLError, ConnectionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_keel_ui_serves_the_dashboard_without_showing_secrets(tmp_path: Path) -> None:
    pg.require_postgres()
    url = pg.fresh_database_url()
    secret_url = url.replace("postgres@", "postgres:hunter2@", 1)  # trust auth ignores it
    assert "hunter2" in secret_url
    port = free_port()
    env = dict(os.environ, KEEL_UI_TOKEN="tok-9f8e7d")
    log = tmp_path / "ui.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [KEEL, "ui", "--db", secret_url, "--port", str(port)], env=env, stdout=out, stderr=out
        )
    try:
        page = get(f"http://127.0.0.1:{port}/")
        assert "Keel" in page and "No runs match" in page
        assert "hunter2" not in page and "tok-9f8e7d" not in page and "***" in page
        assert "hunter2" not in get(f"http://127.0.0.1:{port}/workers")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        pg.drop_database_later(url)
    logged = log.read_text()
    assert "Keel dashboard for" in logged and "actions need the operator token" in logged
    assert "hunter2" not in logged and "tok-9f8e7d" not in logged


def test_keel_ui_refuses_an_empty_token_and_a_missing_database(tmp_path: Path) -> None:
    env = dict(os.environ, KEEL_UI_TOKEN=" ")
    db = str(tmp_path / "none.db")
    result = subprocess.run(
        [KEEL, "ui", "--db", db], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "token is empty" in result.stderr
    env.pop("KEEL_UI_TOKEN")
    result = subprocess.run([KEEL, "ui", "--db", db], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "no Keel database" in result.stderr
    assert not Path(db).exists()


pytestmark = pytest.mark.acceptance

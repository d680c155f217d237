"""Passwords masked in URLs, in messages that quote them, and in Keel's own errors."""

from __future__ import annotations

import pytest

from keel.core.redact import redact
from keel.errors import ConfigurationError, error_info
from keel.store import open_store
from keel.store.postgres import PostgresStore

SECRET = "s3cretPW9x"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        (f"postgresql://app:{SECRET}@db:5432/app", "postgresql://app:***@db:5432/app"),
        (f"postgres://app:{SECRET}@[::1]:5432/app", "postgres://app:***@[::1]:5432/app"),
        (
            f'in URI: "postgresql://app:{SECRET}@[::1/app"',
            'in URI: "postgresql://app:***@[::1/app"',
        ),
        (f"x postgresql://app:p@{SECRET}@db/app?a=b@c y", "x postgresql://app:***@db/app?a=b@c y"),
        (f"postgresql://app:pa/{SECRET}@db/app", "postgresql://app:***@db/app"),
        (
            f"postgresql://app@db/app?password={SECRET}&x=1",
            "postgresql://app@db/app?password=***&x=1",
        ),
        (f"host=db password={SECRET} dbname=app", "host=db password=*** dbname=app"),
        (f"host=db PASSWORD = '{SECRET} 2' dbname=app", "host=db PASSWORD = *** dbname=app"),
    ],
)
def test_redact_masks_the_password(text: str, shown: str) -> None:
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app@db:5432/app",
        "postgresql://db:5432/app",
        "sqlite:////var/lib/a:b@c.db",
        "memory://",
        "no url here: a@b c:d",
    ],
)
def test_redact_leaves_text_without_password_alone(text: str) -> None:
    assert redact(text) == text


@pytest.mark.parametrize(
    "url",
    [
        f"mysql://app:{SECRET}@db/app",  # unsupported scheme
        f"sqlite:///x.db?password={SECRET}",  # unknown SQLite option
    ],
)
def test_open_store_errors_mask_the_password(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(url)
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_postgres_url_errors_mask_the_password() -> None:
    # libpq quotes a URI it cannot parse back in its message.
    with pytest.raises(ConfigurationError) as info:
        PostgresStore(f"postgresql://app:{SECRET}@[::1/app")
    assert SECRET not in str(info.value)
    store = PostgresStore(f"postgresql://app:{SECRET}@db/app")
    assert SECRET not in repr(store)


def test_recorded_errors_mask_the_password() -> None:
    try:
        raise ConnectionError(f"could not reach postgresql://app:{SECRET}@db/app")
    except ConnectionError as exc:
        info = error_info(exc)
    assert SECRET not in info["message"] and SECRET not in info["traceback"]
    assert "postgresql://app:***@db/app" in info["message"]

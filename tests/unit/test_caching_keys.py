"""Cache keys: equal code and inputs give equal keys in every process; a change
of source, of a captured value or of a default gives another; a version pin
stands in for the source."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keel.core import codec
from keel.errors import ConfigurationError
from keel.workflow.caching import cache_key, code_digest, policy, ttl_seconds


def make(rate: float, offset: int = 0) -> Any:
    def price(amount: int, currency: str = "EUR") -> float:
        return amount * rate + offset

    return price


def other_body(amount: int, currency: str = "EUR") -> float:
    return amount * 2.0


def test_equal_code_and_captured_values_give_equal_digests() -> None:
    assert code_digest(make(1.5)) == code_digest(make(1.5))
    assert len(code_digest(make(1.5))) == 16


def test_a_captured_value_or_a_default_changes_the_digest() -> None:
    assert code_digest(make(1.5)) != code_digest(make(2.5))
    assert code_digest(make(1.5, 0)) != code_digest(make(1.5, 1))

    def with_default(x: int = 1) -> int:
        return x

    before = code_digest(with_default)
    with_default.__defaults__ = (2,)
    assert code_digest(with_default) != before


def test_the_source_changes_the_digest_unless_a_version_pins_it() -> None:
    price = make(2.0)
    assert code_digest(price) != code_digest(other_body)
    assert code_digest(price, version="3") == code_digest(price, version="3")
    assert code_digest(price, version="3") != code_digest(price, version="4")


def test_keys_digest_the_arguments_canonically() -> None:
    price = make(1.0)
    encode = codec.function_codec(price).encode_args
    cached = policy(price, None, None)

    def key(*args: Any, **kwargs: Any) -> str:
        return cached.key(encode(args, kwargs))

    assert key(10) == key(10, "EUR") == key(amount=10, currency="EUR")  # defaults applied
    assert key(10) != key(11)
    assert key(10).startswith(f"cache:{code_digest(price)}:")
    assert cache_key("c", b'{"a":1}') != cache_key("c", b'{"a":2}')


def test_a_ttl_is_positive_finite_seconds_or_a_timedelta() -> None:
    assert ttl_seconds(None) is None
    assert ttl_seconds(90) == ttl_seconds(timedelta(minutes=1.5)) == 90.0
    assert ttl_seconds(0.25) == 0.25
    for bad in (0, -1, float("inf"), float("nan"), timedelta(0), True, "1h", [1]):
        with pytest.raises(ConfigurationError, match="cache_ttl"):
            ttl_seconds(bad)


def test_the_ttl_is_not_part_of_the_key() -> None:
    # Reuse is bounded by age at read time: a TTL change keeps the stored entries.
    price = make(1.0)
    assert policy(price, None, 60.0).key(b"{}") == policy(price, None, None).key(b"{}")


def test_decorator_options_do_not_change_the_digest() -> None:
    import keel

    registry = keel.Registry()

    @keel.step(name="digest.a", cache=True, cache_ttl=60, registry=registry)
    def a(x: int) -> int:
        return x

    first = a.cache
    assert first is not None and first.ttl == 60.0

    @keel.step(name="digest.a", cache=True, cache_ttl=3600, registry=registry)  # type: ignore[no-redef]
    def a(x: int) -> int:
        return x

    assert a.cache is not None and a.cache.code == first.code and a.cache.ttl == 3600.0


def test_a_cached_call_encodes_its_arguments_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import keel

    @keel.step(name="digest.once", cache=True, registry=keel.Registry())
    def once(x: int, y: str = "a") -> int:
        return x

    calls: list[bytes] = []
    real = codec._CANONICAL_ENCODER

    class Counting:  # the encoder every canonical argument encoding goes through
        def encode(self, value: Any) -> bytes:
            calls.append(real.encode(value))
            return calls[-1]

    monkeypatch.setattr(codec, "_CANONICAL_ENCODER", Counting())

    class Execution:
        issued: dict[str, Any] = {}

        def issue(self, *_: Any, **kw: Any) -> Any:
            self.issued = kw
            return type("Cmd", (), {"future": None})()

    ex = Execution()
    once._issue(ex, (3,), {})
    # One encoding serves the command's arguments and the cache key.
    assert calls == [b'{"x":3,"y":"a"}']
    assert ex.issued["args"] == calls[0]
    assert once.cache is not None and ex.issued["idempotency_key"] == once.cache.key(calls[0])

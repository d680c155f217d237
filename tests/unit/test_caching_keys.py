"""Cache keys: equal code and inputs give equal keys in every process; a change
of source, of a captured value or of a default gives another; a version pin
stands in for the source."""

from __future__ import annotations

from typing import Any

from keel.core import codec
from keel.workflow.caching import cache_key, code_digest, key_function


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
    key = key_function(price, None, codec.function_codec(price).encode_args)
    assert key(10) == key(10, "EUR") == key(amount=10, currency="EUR")  # defaults applied
    assert key(10) != key(11)
    assert key(10).startswith(f"cache:{code_digest(price)}:")
    assert cache_key("c", b'{"a":1}') != cache_key("c", b'{"a":2}')

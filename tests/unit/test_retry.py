"""Retry policy: backoff math, jitter bounds, retry decisions and validation."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from keel.core.retry import NO_RETRY, RetryPolicy
from keel.errors import ConfigurationError, StepTimeoutError, WorkflowCancelled

NO_JITTER = RetryPolicy(jitter=0.0)


def test_defaults() -> None:
    policy = RetryPolicy()
    assert policy.max_attempts == 3
    assert policy.initial_interval == 1.0
    assert policy.backoff_coefficient == 2.0
    assert policy.max_interval == 60.0
    assert policy.jitter == 0.1
    assert policy.non_retryable == ()
    assert policy.timeout is None


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 32.0), (7, 60.0), (8, 60.0)],
)
def test_exponential_backoff_table(attempt: int, expected: float) -> None:
    assert NO_JITTER.delay(attempt, 0.0) == expected


@pytest.mark.parametrize(
    ("policy", "delays"),
    [
        (RetryPolicy(initial_interval=0.5, backoff_coefficient=3, jitter=0), [0.5, 1.5, 4.5, 13.5]),
        (RetryPolicy(initial_interval=2, backoff_coefficient=1, jitter=0), [2, 2, 2, 2]),
        (RetryPolicy(initial_interval=0, max_interval=0, jitter=0), [0, 0, 0, 0]),
        (RetryPolicy(initial_interval=0, jitter=0.5), [0, 0, 0, 0]),
        (RetryPolicy(initial_interval=1, max_interval=5, jitter=0), [1, 2, 4, 5]),
        (RetryPolicy(initial_interval=3, max_interval=3, jitter=0), [3, 3, 3, 3]),
    ],
)
def test_backoff_shapes(policy: RetryPolicy, delays: list[float]) -> None:
    assert [policy.delay(n, 0.3) for n in range(1, 5)] == delays


@pytest.mark.parametrize("attempt", [10_000, 10**9])
def test_huge_attempt_numbers_do_not_overflow(attempt: int) -> None:
    assert NO_JITTER.delay(attempt, 0.0) == 60.0
    policy = RetryPolicy(initial_interval=1e-300, backoff_coefficient=1.0000001, max_interval=1e300)
    assert policy.delay(attempt, 0.5) <= 1e300


def test_jitter_spreads_uniformly_around_the_delay() -> None:
    policy = RetryPolicy(initial_interval=10, max_interval=100, jitter=0.2)
    assert policy.delay(1, 0.0) == pytest.approx(8.0)  # d * (1 - jitter)
    assert policy.delay(1, 0.5) == pytest.approx(10.0)  # midpoint: no change
    assert policy.delay(1, 0.75) == pytest.approx(11.0)
    assert policy.delay(1, 0.999999) == pytest.approx(12.0, rel=1e-5)  # -> d * (1 + jitter)


def test_jitter_is_capped_at_max_interval() -> None:
    policy = RetryPolicy(initial_interval=10, max_interval=10, jitter=0.5)
    assert policy.delay(1, 0.0) == 5.0
    assert policy.delay(1, 0.5) == 10.0
    assert policy.delay(1, 0.9) == 10.0  # would be 14 before the cap


@given(
    initial=st.floats(0, 1e6),
    coefficient=st.floats(1, 1e3),
    extra=st.floats(0, 1e6),
    jitter=st.floats(0, 1),
    attempt=st.integers(1, 100_000),
    rand=st.floats(0, 1, exclude_max=True),
)
def test_delay_is_always_within_bounds(
    initial: float, coefficient: float, extra: float, jitter: float, attempt: int, rand: float
) -> None:
    policy = RetryPolicy(
        initial_interval=initial,
        backoff_coefficient=coefficient,
        max_interval=initial + extra,
        jitter=jitter,
    )
    delay = policy.delay(attempt, rand)
    assert math.isfinite(delay)
    assert 0.0 <= delay <= policy.max_interval
    try:
        raw = initial * coefficient ** (attempt - 1) if initial else 0.0
    except OverflowError:
        raw = math.inf
    base = min(raw, policy.max_interval)
    assert delay >= base * (1 - jitter) * (1 - 1e-9)


@pytest.mark.parametrize(("attempt", "rand"), [(0, 0.5), (-1, 0.5), (1, -0.1), (1, 1.0)])
def test_delay_rejects_bad_input(attempt: int, rand: float) -> None:
    with pytest.raises(ValueError):
        NO_JITTER.delay(attempt, rand)


class PaymentDeclined(Exception):
    pass


class CardExpired(PaymentDeclined):
    pass


def test_should_retry_until_max_attempts() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, ValueError())
    assert policy.should_retry(2, ValueError())
    assert not policy.should_retry(3, ValueError())
    assert not policy.should_retry(4, ValueError())


def test_non_retryable_types_and_subclasses_fail_at_once() -> None:
    policy = RetryPolicy(max_attempts=10, non_retryable=(PaymentDeclined, KeyError))
    assert not policy.should_retry(1, PaymentDeclined())
    assert not policy.should_retry(1, CardExpired())
    assert not policy.should_retry(1, KeyError("k"))
    assert policy.should_retry(1, LookupError())  # a base class of KeyError still retries
    assert policy.should_retry(1, StepTimeoutError("slow"))


def test_base_exceptions_are_never_retried() -> None:
    policy = RetryPolicy(max_attempts=10)
    assert not policy.should_retry(1, KeyboardInterrupt())
    assert not policy.should_retry(1, WorkflowCancelled())
    assert not policy.should_retry(1, SystemExit(1))


def test_no_retry_makes_one_attempt() -> None:
    assert NO_RETRY.max_attempts == 1
    assert not NO_RETRY.should_retry(1, ValueError())


def test_non_retryable_accepts_a_single_class_or_a_list() -> None:
    assert RetryPolicy(non_retryable=KeyError).non_retryable == (KeyError,)  # type: ignore[arg-type]
    single = RetryPolicy(non_retryable=[KeyError, ValueError])  # type: ignore[arg-type]
    assert single.non_retryable == (KeyError, ValueError)


def test_policies_are_frozen_hashable_and_normalised() -> None:
    a = RetryPolicy(initial_interval=1, max_interval=60, timeout=5)
    b = RetryPolicy(initial_interval=1.0, timeout=5.0)
    assert a == b
    assert hash(a) == hash(b)
    assert isinstance(a.initial_interval, float)
    assert isinstance(a.timeout, float)
    with pytest.raises(AttributeError):
        a.max_attempts = 5  # type: ignore[misc]


def test_with_returns_a_validated_copy() -> None:
    policy = RetryPolicy()
    changed = policy.with_(max_attempts=5, timeout=2.5)
    assert (changed.max_attempts, changed.timeout) == (5, 2.5)
    assert policy.max_attempts == 3
    with pytest.raises(ConfigurationError, match="max_attempts"):
        policy.with_(max_attempts=0)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be >= 1, got 0"),
        ({"max_attempts": -3}, "max_attempts must be >= 1, got -3"),
        ({"max_attempts": 2.0}, "max_attempts must be an int, got 2.0"),
        ({"max_attempts": True}, "max_attempts must be an int, got True"),
        ({"max_attempts": "3"}, "max_attempts must be an int, got '3'"),
        ({"initial_interval": -1}, "initial_interval must be >= 0, got -1"),
        ({"initial_interval": math.nan}, "initial_interval must be finite, got nan"),
        ({"initial_interval": True}, "initial_interval must be a number, got True"),
        ({"initial_interval": "1"}, "initial_interval must be a number, got '1'"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient must be >= 1, got 0.5"),
        ({"backoff_coefficient": math.inf}, "backoff_coefficient must be finite, got inf"),
        ({"max_interval": 0.5}, "max_interval must be >= initial_interval (1.0), got 0.5"),
        ({"max_interval": math.inf}, "max_interval must be finite, got inf"),
        ({"jitter": -0.1}, "jitter must be within 0..1, got -0.1"),
        ({"jitter": 1.5}, "jitter must be within 0..1, got 1.5"),
        ({"jitter": math.nan}, "jitter must be finite, got nan"),
        ({"timeout": 0}, "timeout must be > 0, got 0"),
        ({"timeout": -1}, "timeout must be > 0, got -1"),
        ({"timeout": math.inf}, "timeout must be finite, got inf"),
        ({"timeout": False}, "timeout must be a number, got False"),
        (
            {"non_retryable": (ValueError, "KeyError")},
            "non_retryable must hold exception types, got 'KeyError'",
        ),
        ({"non_retryable": (int,)}, "non_retryable must hold exception types, got <class 'int'>"),
        ({"non_retryable": 3}, "non_retryable must be exception types, got 3"),
    ],
)
def test_invalid_values_are_configuration_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RetryPolicy(**changes)
    assert str(info.value) == f"RetryPolicy.{message}"

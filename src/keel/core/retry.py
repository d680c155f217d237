"""Retry policy for steps: how many attempts, how long to wait between them.

Pure: :meth:`RetryPolicy.delay` takes the random number from the caller, so the
worker draws it (and journals the resulting ``retry_at``) while this stays
deterministic and testable.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from keel.errors import ConfigurationError

__all__ = ["NO_RETRY", "RetryPolicy"]


def _number(name: str, value: object) -> float:
    # bool is an int subclass; ``timeout=True`` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"RetryPolicy.{name} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(f"RetryPolicy.{name} must be finite, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing step is retried.

    The wait after failed attempt ``n`` is ``initial_interval *
    backoff_coefficient ** (n - 1)``, capped at ``max_interval``, spread uniformly
    over ``±jitter`` of itself and capped again. Exceptions that are instances of
    a ``non_retryable`` type (subclasses included) fail the step at once;
    ``timeout`` bounds each attempt, in seconds.
    """

    max_attempts: int = 3
    initial_interval: float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: float = 60.0
    jitter: float = 0.1
    non_retryable: tuple[type[BaseException], ...] = ()
    timeout: float | None = None

    def __post_init__(self) -> None:
        # Frozen: normalise through object.__setattr__ so ints become floats and
        # equal policies compare (and hash) equal however they were spelled.
        set_ = object.__setattr__
        attempts = self.max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int):
            raise ConfigurationError(f"RetryPolicy.max_attempts must be an int, got {attempts!r}")
        if attempts < 1:
            raise ConfigurationError(f"RetryPolicy.max_attempts must be >= 1, got {attempts!r}")

        initial = _number("initial_interval", self.initial_interval)
        if initial < 0:
            raise ConfigurationError(
                f"RetryPolicy.initial_interval must be >= 0, got {self.initial_interval!r}"
            )
        coefficient = _number("backoff_coefficient", self.backoff_coefficient)
        if coefficient < 1:
            raise ConfigurationError(
                f"RetryPolicy.backoff_coefficient must be >= 1, got {self.backoff_coefficient!r}"
            )
        maximum = _number("max_interval", self.max_interval)
        if maximum < initial:
            raise ConfigurationError(
                f"RetryPolicy.max_interval must be >= initial_interval ({initial!r}), "
                f"got {self.max_interval!r}"
            )
        jitter = _number("jitter", self.jitter)
        if not 0 <= jitter <= 1:
            raise ConfigurationError(f"RetryPolicy.jitter must be within 0..1, got {self.jitter!r}")
        for name, value in (
            ("initial_interval", initial),
            ("backoff_coefficient", coefficient),
            ("max_interval", maximum),
            ("jitter", jitter),
        ):
            set_(self, name, value)

        set_(self, "non_retryable", _exception_types(self.non_retryable))

        if self.timeout is not None:
            timeout = _number("timeout", self.timeout)
            if timeout <= 0:
                raise ConfigurationError(f"RetryPolicy.timeout must be > 0, got {self.timeout!r}")
            set_(self, "timeout", timeout)

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based).

        ``rand`` is a uniform draw from [0, 1) supplied by the caller; 0.5 gives
        the un-jittered delay.
        """
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise ValueError(f"attempt must be an int >= 1, got {attempt!r}")
        if not 0.0 <= rand < 1.0:
            raise ValueError(f"rand must be within [0, 1), got {rand!r}")
        base = self._base_delay(attempt)
        spread = base * (1.0 - self.jitter + 2.0 * self.jitter * rand)
        return min(spread, self.max_interval)

    def _base_delay(self, attempt: int) -> float:
        initial, coefficient, cap = (
            self.initial_interval,
            self.backoff_coefficient,
            self.max_interval,
        )
        if initial == 0.0 or coefficient == 1.0:
            return initial
        exponent = attempt - 1
        # Compare in log space first: coefficient ** 9_999 overflows a float.
        if exponent * math.log(coefficient) >= math.log(cap) - math.log(initial):
            return cap
        try:
            return min(initial * coefficient**exponent, cap)
        except OverflowError:  # a tiny initial_interval times a power beyond float range
            return min(math.exp(math.log(initial) + exponent * math.log(coefficient)), cap)

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        """Whether to try again after attempt number ``attempt`` failed with ``exc``.

        Only ordinary ``Exception``s are retried: ``BaseException``s such as
        cancellation or Keel's control flow must propagate.
        """
        if attempt >= self.max_attempts:
            return False
        if not isinstance(exc, Exception):
            return False
        return not isinstance(exc, self.non_retryable)

    def with_(self, **changes: Any) -> RetryPolicy:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)


def _exception_types(value: object) -> tuple[type[BaseException], ...]:
    # Accept a single class or any iterable of classes; store a tuple so the
    # policy stays hashable and ``isinstance(exc, policy.non_retryable)`` works.
    items: Any = (value,) if isinstance(value, type) else value
    try:
        types: tuple[object, ...] = tuple(items)
    except TypeError:
        raise ConfigurationError(
            f"RetryPolicy.non_retryable must be exception types, got {value!r}"
        ) from None
    checked: list[type[BaseException]] = []
    for item in types:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise ConfigurationError(
                f"RetryPolicy.non_retryable must hold exception types, got {item!r}"
            )
        checked.append(item)
    return tuple(checked)


#: A policy that makes exactly one attempt.
NO_RETRY = RetryPolicy(max_attempts=1)

"""Step fakes: replace what a step does in a test, without touching workflow code.

::

    with mock_step(charge, raises=CardDeclined("insufficient funds")):
        run = await client.start(order_flow, order)
        ...   # the saga's compensations run; charge's body never does

Inside the ``with`` every worker of this process runs the fake instead of the
step's body: in the run's own worker and in task workers (dispatched steps),
sync and async steps alike, ``await step(...)`` and ``await step.aio(...)``.
Everything else is as for the real step: its retry policy, timeout and
idempotency key apply, the fake's result is encoded and journaled as the
step's result (a replay returns it without calling anything), and what it
raises is an attempt that failed. The real body is back when the ``with``
ends, also when it ends with an error.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec, TypeVar, cast

from keel.core import codec
from keel.errors import ConfigurationError
from keel.testing.step_bodies import as_body, check_step, replaced_body
from keel.workflow.definitions import StepDef

P = ParamSpec("P")
R = TypeVar("R")

__all__ = ["StepCall", "StepMock", "mock_step"]


class _Missing(enum.Enum):
    MISSING = enum.auto()


_MISSING = _Missing.MISSING

#: One item of a ``side_effect`` sequence: a value to return or an exception to raise.
Outcome = object


@dataclass(frozen=True, slots=True)
class StepCall:
    """One call of a mocked step: the arguments the worker decoded for it."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


@dataclass
class StepMock(Generic[P, R]):
    """The fake of one step while its ``with`` lasts; ``calls`` records every
    call (thread-safe: sync steps run on step threads)."""

    step: StepDef[P, R]
    calls: list[StepCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def call_count(self) -> int:
        return len(self.calls)

    def _record(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
        with self._lock:
            self.calls.append(StepCall(args, dict(kwargs)))
            return len(self.calls)


def _raise(error: BaseException | type[BaseException]) -> Any:
    if isinstance(error, type):
        raise error()
    # A fresh copy per call: raising one instance again and again would grow
    # its traceback by every raise (and share it between step threads).
    try:
        fresh = copy.copy(error)
    except Exception:  # an exception whose arguments do not rebuild it
        fresh = error
    raise fresh.with_traceback(None)


def _is_error(value: object) -> bool:
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


@contextlib.contextmanager
def mock_step(
    step: StepDef[P, R],
    *,
    returns: object = _MISSING,
    raises: BaseException | type[BaseException] | None = None,
    side_effect: Callable[..., object] | Iterable[Outcome] | None = None,
) -> Iterator[StepMock[P, R]]:
    """Replace ``step``'s body inside the ``with``; yields a :class:`StepMock`.

    Give at most one of:

    - ``returns=value``: every call returns ``value`` (it must encode as the
      step's result, like a real result);
    - ``raises=error``: every call raises ``error`` (an exception or its class):
      a failed attempt, retried under the step's policy;
    - ``side_effect=fn``: every call is ``fn(*args, **kwargs)`` with the step's
      arguments (``fn`` may be async, for sync and async steps alike);
    - ``side_effect=[...]``: one item per call, in order: an exception (or its
      class) is raised, anything else returned. ``[TimeoutError, TimeoutError,
      "ok"]`` fails twice, then succeeds; a call past the end raises
      ``AssertionError`` (a failed attempt that says so).

    With none, every call returns ``None``. Bad use raises
    :class:`keel.ConfigurationError` (a ``returns=`` value that cannot be
    journaled, :class:`keel.SerializationError`) before anything is replaced.
    """
    target = check_step(step, "mock_step()")
    given = [
        name
        for name, value in (
            ("returns", returns is not _MISSING),
            ("raises", raises is not None),
            ("side_effect", side_effect is not None),
        )
        if value
    ]
    if len(given) > 1:
        raise ConfigurationError(
            f"mock_step({target.name!r}): give one of returns=, raises= or side_effect=, "
            f"not {' and '.join(given)}"
        )
    if raises is not None and not _is_error(raises):
        raise ConfigurationError(
            f"mock_step({target.name!r}): raises= takes an exception or an exception class, "
            f"not {raises!r}"
        )
    if returns is not _MISSING:  # a value no worker could journal: say so here
        codec.encode(returns, what=f"mock_step({target.name!r}) returns=")
    mock: StepMock[P, R] = StepMock(target)
    behave = _behaviour(target.name, returns, raises, side_effect)

    def fake(*args: Any, **kwargs: Any) -> Any:
        return behave(mock._record(args, kwargs), args, kwargs)

    with replaced_body(target, as_body(target, fake)):
        yield mock


def _behaviour(
    name: str,
    returns: object,
    raises: BaseException | type[BaseException] | None,
    side_effect: Callable[..., object] | Iterable[Outcome] | None,
) -> Callable[[int, tuple[Any, ...], dict[str, Any]], Any]:
    """What the ``n``-th call (from 1) of the fake does."""
    if raises is not None:
        error = raises
        return lambda n, args, kwargs: _raise(error)
    if side_effect is None:
        value = None if returns is _MISSING else returns
        return lambda n, args, kwargs: value
    if callable(side_effect):
        fn = side_effect
        return lambda n, args, kwargs: fn(*args, **kwargs)
    if isinstance(side_effect, str | bytes):
        raise ConfigurationError(
            f"mock_step({name!r}): side_effect= takes a function or a list of outcomes, "
            f"not {side_effect!r} (for a fixed result use returns=)"
        )
    try:
        items = list(side_effect)
    except TypeError:
        raise ConfigurationError(
            f"mock_step({name!r}): side_effect= takes a function or a list of outcomes, "
            f"not {side_effect!r}"
        ) from None

    def nth(n: int, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if n > len(items):
            raise AssertionError(
                f"mock_step({name!r}): called {n} times, but side_effect lists "
                f"{len(items)} outcome{'s' if len(items) != 1 else ''}"
            )
        item = items[n - 1]
        return _raise(cast(BaseException, item)) if _is_error(item) else item

    return nth

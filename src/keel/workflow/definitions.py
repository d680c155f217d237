"""The ``@workflow`` and ``@step`` decorators and what they define."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import re
import textwrap
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, Generic, ParamSpec, Protocol, TypeVar, overload

from keel.core import codec, names
from keel.core.events import CommandKind
from keel.core.replay import current_execution
from keel.core.retry import RetryPolicy
from keel.errors import ConfigurationError
from keel.workflow.caching import CachePolicy, policy, ttl_seconds
from keel.workflow.registry import Registry, default_registry, origin

P = ParamSpec("P")
R = TypeVar("R")
KeyFunc = Callable[..., "str | None"]


#: Default of ``@workflow(snapshot_every=...)``: journal events between snapshots.
DEFAULT_SNAPSHOT_EVERY = 1000


def _check_snapshot_every(value: object) -> int | None:
    if value is None or (value == 0 and not isinstance(value, bool)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"workflow snapshot_every must be a positive number of journal events "
            f"(or None/0 to turn snapshots off), not {value!r}"
        )
    return value


class WorkflowDef(Generic[P, R]):
    """A registered workflow: an ``async def`` made durable.

    Calling it directly runs the function as plain async code; start it through
    a :class:`keel.Client` to make it durable. ``current`` is False for a version
    kept only to finish the runs that started on it.
    """

    def __init__(
        self,
        fn: Callable[P, Coroutine[Any, Any, R]],
        name: str,
        version: str | None,
        *,
        current: bool = True,
        snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
    ) -> None:
        self.fn = fn
        self.name = name
        self.version = version or _code_hash(fn)
        self.current = current
        #: Journal events between snapshots of a run's replay state (None: never).
        self.snapshot_every = _check_snapshot_every(snapshot_every)
        # Builds (and validates) the argument codec now, so a type Keel cannot
        # decode is an error at import time, not at the first run.
        self.codec = codec.function_codec(fn)
        self.result_type = self.codec.result_type
        functools.update_wrapper(self, fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        old = "" if self.current else " (not current)"
        return f"<keel workflow {self.name!r} version {self.version!r}{old}>"


class StepDef(Generic[P, R]):
    """A step: a function whose result is journaled once when called in a workflow.

    Inside a workflow, ``await my_step(...)`` runs it under its retry policy and
    journals the result; outside a workflow it is a plain function call.
    """

    def __init__(
        self,
        fn: Callable[P, Any],
        name: str,
        retry: RetryPolicy,
        idempotency_key: KeyFunc | str | None = None,
        queue: str | None = None,
        priority: int = 0,
        compensate: StepDef[..., Any] | None = None,
        cache: CachePolicy | None = None,
    ) -> None:
        self.fn = fn
        self.name = name
        self.retry = retry
        self.idempotency_key = idempotency_key
        #: ``cache=True``: the key is this policy's digest of code and arguments.
        self.cache = cache
        #: How old a result stored under the call's key may be to be reused
        #: (seconds, by the store's clock; ``None``: any age).
        self.key_max_age = cache.ttl if cache is not None else None
        self.queue = _check_queue(queue)
        self.priority = _check_priority(priority)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.codec = codec.function_codec(fn)
        self.result_type = self.codec.result_type
        self._label = f"step {name!r}"  # names it in argument errors; built once
        #: The step that undoes this one inside a ``keel.saga()`` block.
        self.compensate = compensate
        functools.update_wrapper(self, fn)

    def options(
        self,
        *,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = None,
        queue: str | None = None,
        priority: int | None = None,
    ) -> StepDef[P, R]:
        """This step with other options for one call: ``await charge.options(
        idempotency_key=f"charge-{order.id}")(order)``.

        A step called with an idempotency key reuses the result stored by an
        earlier completion with the same key (in any run) without running again;
        on a ``cache=True`` step, that key replaces the cache's key (and its TTL).
        With a ``queue`` the call is dispatched to that queue (see :func:`step`);
        ``priority`` orders it among the queue's due tasks (higher first).
        """
        if idempotency_key is not None and (
            not isinstance(idempotency_key, str) or not idempotency_key
        ):
            raise ConfigurationError(
                f"idempotency_key must be a non-empty string: {idempotency_key!r}"
            )
        policy = _policy(retry or self.retry, timeout)
        return StepDef(
            self.fn,
            self.name,
            policy,
            idempotency_key or self.idempotency_key,
            queue=self.queue if queue is None else queue,
            priority=self.priority if priority is None else priority,
            compensate=self.compensate,
            cache=None if idempotency_key is not None else self.cache,
        )

    def key_for(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], encoded: bytes | None = None
    ) -> str | None:
        """The idempotency key of a call, if this step has one. ``encoded``: the
        call's canonical argument bytes, if already encoded (a cached step's key
        digests them; they are encoded here otherwise)."""
        key = self.idempotency_key
        if key is None and self.cache is not None:
            if encoded is None:
                encoded = self.codec.encode_args(args, kwargs, what=self._label)
            return self.cache.key(encoded)
        if key is None or isinstance(key, str):
            return key
        value = key(*args, **kwargs)
        if value is not None and (not isinstance(value, str) or not value):
            raise ConfigurationError(
                f"idempotency_key of step {self.name!r} must return a non-empty str or None, "
                f"not {value!r}"
            )
        return value

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Any:
        execution = current_execution()
        if execution is None:
            return self.fn(*args, **kwargs)
        return self._issue(execution, args, kwargs)

    def aio(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """Typed form of a call inside a workflow: ``await charge.aio(order)``.

        Outside a workflow it runs the function (on a thread if it is sync).
        """
        execution = current_execution()
        if execution is None:
            if self.is_async:
                return self.fn(*args, **kwargs)  # type: ignore[no-any-return]
            import asyncio

            return asyncio.to_thread(self.fn, *args, **kwargs)
        awaitable: Awaitable[R] = self._issue(execution, args, kwargs)
        return awaitable

    def _issue(self, execution: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        data = self.codec.encode_args(args, kwargs, what=self._label)
        cmd = execution.issue(
            CommandKind.STEP,
            self.name,
            result_type=self.result_type,
            target=self,
            args=data,
            # One encoding serves the command and a cached step's key.
            idempotency_key=(
                None
                if self.idempotency_key is None and self.cache is None
                else self.key_for(args, kwargs, data)
            ),
        )
        if self.compensate is not None:
            from keel.workflow.saga import track  # keel.workflow.saga builds on this module

            track(self, cmd.future, args, kwargs)
        return cmd.future

    def __repr__(self) -> str:
        return f"<keel step {self.name!r}>"


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, R]], /) -> WorkflowDef[P, R]: ...


@overload
def workflow(
    *,
    name: str | None = None,
    version: str | None = None,
    current: bool = True,
    registry: Registry | None = None,
    snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], WorkflowDef[P, R]]: ...


def workflow(
    fn: Callable[P, Coroutine[Any, Any, R]] | None = None,
    /,
    *,
    name: str | None = None,
    version: str | None = None,
    current: bool = True,
    registry: Registry | None = None,
    snapshot_every: int | None = DEFAULT_SNAPSHOT_EVERY,
) -> Any:
    """Declare an ``async def`` function as a durable workflow.

    ``name`` defaults to the function's qualified name; ``version`` defaults to
    a hash of the function's source (without its decorators and name). A run
    is resumed only by the version it started on. To keep an old version for
    the runs started on it, register it under the same ``name`` with its
    ``version`` and ``current=False``; new runs start on the current one.

    ``snapshot_every``: once a run's journal has grown by this many events
    since its last snapshot, the worker stores a snapshot of its replay state,
    so recovery replays the snapshot plus the journal after it instead of the
    whole journal (events are never deleted). ``None`` or ``0`` turns it off.
    """
    every = _check_snapshot_every(snapshot_every)

    def wrap(f: Callable[P, Coroutine[Any, Any, R]]) -> WorkflowDef[P, R]:
        if not inspect.iscoroutinefunction(f):
            raise ConfigurationError(
                f"@workflow needs an 'async def' function; {origin(f)} is not one"
            )
        wf_name = _check_name(name if name is not None else f.__qualname__, "workflow")
        if version is not None and (not isinstance(version, str) or not version):
            raise ConfigurationError(
                f"workflow version must be a non-empty string, not {version!r}"
            )
        if not isinstance(current, bool):
            raise ConfigurationError(f"workflow current= must be True or False, not {current!r}")
        wf = WorkflowDef(f, wf_name, version, current=current, snapshot_every=every)
        (registry or default_registry).add(wf)
        return wf

    return wrap(fn) if fn is not None else wrap


class StepDecorator(Protocol):
    """What ``@step(...)`` with options returns: a decorator typed like bare ``@step``."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> StepDef[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> StepDef[P, R]: ...


# An async step is a StepDef of what its coroutine returns, so ``await s.aio(...)``
# has the step's result type for sync and async steps alike.
@overload
def step(fn: Callable[P, Coroutine[Any, Any, R]], /) -> StepDef[P, R]: ...


@overload
def step(fn: Callable[P, R], /) -> StepDef[P, R]: ...


@overload
def step(
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    idempotency_key: KeyFunc | None = None,
    queue: str | None = None,
    priority: int = 0,
    compensate: StepDef[..., Any] | None = None,
    cache: bool = False,
    cache_version: str | None = None,
    cache_ttl: float | timedelta | None = None,
    registry: Registry | None = None,
) -> StepDecorator: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    retry: RetryPolicy | None = None,
    timeout: float | None = None,
    idempotency_key: KeyFunc | None = None,
    queue: str | None = None,
    priority: int = 0,
    compensate: StepDef[..., Any] | None = None,
    cache: bool = False,
    cache_version: str | None = None,
    cache_ttl: float | timedelta | None = None,
    registry: Registry | None = None,
) -> Any:
    """Declare a sync or async function as a step.

    ``retry`` is its :class:`RetryPolicy` (default: 3 attempts, exponential
    backoff from 1 s); ``timeout`` overrides the policy's per-attempt timeout.
    ``idempotency_key`` maps the call's arguments to a key (or ``None``): a
    call whose key was completed before, in any run, reuses that result.

    With a ``queue`` the step is *dispatched*: the run's worker does not run it
    but stores it as a task of that queue, and a worker serving the queue
    (``Worker(queues=...)``, ``keel worker --queue``) runs it; the run waits
    without holding its lease. ``priority`` orders due tasks of a queue (higher
    first). Steps are registered by name (in ``registry``, default the global
    one) so task workers can find them.

    ``compensate`` is the step that undoes this one when a ``keel.saga()``
    block it completed in fails or is cancelled. The compensation receives, by
    name, those of this step's arguments that it declares as parameters, and
    this step's result as ``result`` if it declares that parameter.

    ``cache=True`` reuses, across runs, the result of an earlier call with
    equal arguments to the same code (see :mod:`keel.workflow.caching`): the
    key digests the function's source, captured values and defaults, or
    ``cache_version`` if given. It is an idempotency key, so it cannot be
    combined with ``idempotency_key``. ``cache_ttl`` (seconds or a
    ``timedelta``) bounds reuse: a result stored longer ago than that, by the
    store's clock, is computed again and replaces the stored one.
    """
    if not isinstance(cache, bool):
        raise ConfigurationError(f"@step cache= must be True or False, not {cache!r}")
    if cache and idempotency_key is not None:
        raise ConfigurationError("@step takes cache=True or idempotency_key=, not both")
    if cache_version is not None and (not isinstance(cache_version, str) or not cache_version):
        raise ConfigurationError(f"cache_version must be a non-empty str: {cache_version!r}")
    ttl = ttl_seconds(cache_ttl, "cache_ttl")
    if not cache and (ttl is not None or cache_version is not None):
        given = "cache_ttl" if ttl is not None else "cache_version"
        raise ConfigurationError(f"@step({given}=...) needs cache=True")
    if compensate is not None and not isinstance(compensate, StepDef):
        raise ConfigurationError(
            f"compensate= takes a @keel.step (the step that undoes this one), not {compensate!r}"
        )
    retry_policy = _policy(retry or RetryPolicy(), timeout)
    if idempotency_key is not None and not callable(idempotency_key):
        raise ConfigurationError(
            "@step(idempotency_key=...) takes a function of the step's arguments; "
            "for a fixed key use my_step.options(idempotency_key='...')"
        )
    _check_queue(queue)
    _check_priority(priority)

    def wrap(f: Callable[P, Any]) -> StepDef[P, Any]:
        if not callable(f):
            raise ConfigurationError(f"@step needs a function, not {f!r}")
        step_name = _check_name(name if name is not None else f.__qualname__, "step")
        if compensate is not None:
            _check_compensation(f, step_name, compensate)
        st: StepDef[P, Any] = StepDef(
            f,
            step_name,
            retry_policy,
            idempotency_key,
            queue=queue,
            priority=priority,
            compensate=compensate,
            cache=policy(f, cache_version, ttl) if cache else None,
        )
        (registry or default_registry).add_step(st)
        return st

    return wrap(fn) if fn is not None else wrap


def _policy(retry: object, timeout: float | None) -> RetryPolicy:
    if not isinstance(retry, RetryPolicy):
        raise ConfigurationError(f"retry must be a keel.RetryPolicy, not {type(retry).__name__}")
    return retry if timeout is None else retry.with_(timeout=timeout)


def by_name_params(fn: Callable[..., Any]) -> frozenset[str]:
    """Parameters of ``fn`` that can be passed by name (what a compensation receives)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    params = codec.function_codec(fn).signature.parameters  # cached per function
    return frozenset(name for name, p in params.items() if p.kind in kinds)


def _check_compensation(fn: Callable[..., Any], name: str, undo: StepDef[..., Any]) -> None:
    """Every parameter the compensation needs must be one it will receive."""
    given = set(inspect.signature(fn).parameters)
    if "result" in given and "result" in by_name_params(undo.fn):
        raise ConfigurationError(
            f"step {name!r} has a parameter named 'result', so its compensation "
            f"{undo.name!r} cannot tell it from the step's result: rename one of them"
        )
    for pname, param in inspect.signature(undo.fn).parameters.items():
        required = param.default is inspect.Parameter.empty
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY and required:
            raise ConfigurationError(
                f"compensation {undo.name!r} of step {name!r}: parameter {pname!r} is "
                "positional-only, but a compensation receives its arguments by name"
            )
        if required and pname not in given and pname != "result":
            raise ConfigurationError(
                f"compensation {undo.name!r} of step {name!r} needs {pname!r}, which it would "
                f"not receive: a compensation gets, by name, the step's arguments "
                f"({', '.join(sorted(given)) or 'none'}) and the step's result as 'result'"
            )


def _check_queue(queue: object) -> str | None:
    if queue is None:
        return None
    if not isinstance(queue, str) or not queue or "#" in queue or len(queue) > 200:
        raise ConfigurationError(
            f"queue must be a non-empty string without '#' (at most 200 chars): {queue!r}"
        )
    return queue


def _check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"priority must be an int, not {priority!r}")
    if not -(2**31) <= priority < 2**31:  # stored in a 32-bit column
        raise ConfigurationError(f"priority must fit in 32 bits, not {priority!r}")
    return priority


def _check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not name or "#" in name or len(name) > 200:
        raise ConfigurationError(
            f"{what} name must be a non-empty string without '#' (at most 200 chars): {name!r}"
        )
    return names.text(name, f"{what} name")  # stored: no NUL, no lone surrogate


def _code_hash(fn: Callable[..., Any]) -> str:
    """A hash of the function's source text from ``def`` on, with the name blanked.

    Decorators and the function's own name are left out, so an old version
    copied unchanged into another module (renamed, registered with
    ``current=False``) keeps its version.
    """
    try:
        source = _without_decorators_and_name(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        source = repr(code.co_code if code is not None else fn)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def _without_decorators_and_name(source: str) -> str:
    try:
        node = ast.parse(source).body[0]
    except (SyntaxError, IndexError):
        return source
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return source
    text = "\n".join(source.splitlines()[node.lineno - 1 :])  # lineno is the ``def`` line
    return re.sub(rf"\bdef\s+{re.escape(node.name)}\b", "def _", text, count=1)

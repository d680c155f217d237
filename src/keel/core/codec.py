"""Typed JSON payloads: encode Python values, decode them back to annotated types.

Built on msgspec. Natively supported: None, bool, int, float, str, bytes (base64),
list/tuple/set/frozenset/dict, dataclasses, msgspec Structs, enums, datetime/date/
time/timedelta, UUID, Decimal (written as a string). pydantic v2 models are
supported through hooks, without importing pydantic ourselves: a model instance or
model class can only exist once the user has imported pydantic.

The engine should use :class:`FunctionCodec` (one per step or workflow function,
get it from :func:`function_codec`): it resolves the signature, type hints and
msgspec decoders once, so each call costs about a microsecond. The module-level
functions are conveniences with the same behaviour.

Notes on fidelity: results and other values keep dict insertion order, while
step arguments are written canonically (sets and str-keyed dicts sorted) so
their hash is the same in every process; a tz-aware datetime comes back with a
fixed-offset ``timezone`` (the same instant, not the same ``ZoneInfo``); values
decoded as ``Any`` come back as plain JSON values (dicts, lists, str, ...).

What JSON cannot hold is refused with :class:`SerializationError` rather than
silently changed: NaN and ±Infinity (msgspec would write ``null``) and dict keys
that collide once written as strings (``{1: "a", "1": "b"}``). Old journals never
hold such values, so refusing them keeps every existing payload and hash as is.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
import re
import reprlib
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, Final, TypedDict

import msgspec

from keel.errors import ConfigurationError, SerializationError

__all__ = [
    "FunctionCodec",
    "args_hash",
    "decode",
    "decode_args",
    "encode",
    "encode_args",
    "function_codec",
    "return_type",
    "roundtrip",
]

_SUPPORTED: Final = (
    "use JSON types, dataclasses, msgspec Structs, pydantic models, enums, "
    "datetime/date/time/timedelta, UUID, Decimal or bytes"
)

_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)


class _UnsupportedValue(TypeError):
    """Raised by the encode hook; carries the offending value for the error message."""

    def __init__(self, value: object) -> None:
        super().__init__(type(value).__qualname__)
        self.value = value


class _LossyValue(ValueError):
    """A value JSON would silently change: a non-finite float or colliding dict keys."""


def _pydantic_base() -> type | None:
    # Looked up lazily in sys.modules: importing pydantic takes tens of ms, and a
    # pydantic model cannot exist unless the user has imported pydantic already.
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return base if isinstance(base, type) else None


def _enc_hook(value: object) -> object:
    base = _pydantic_base()
    if base is not None and isinstance(value, base):
        return value.model_dump(mode="json")  # type: ignore[attr-defined]
    raise _UnsupportedValue(value)


def _dec_hook(type_: type, obj: object) -> object:
    base = _pydantic_base()
    if base is not None and isinstance(type_, type) and issubclass(type_, base):
        # Validate from JSON, not from Python objects: strict models only accept
        # e.g. an ISO string for a datetime in JSON mode, and that is what we hold.
        try:
            return type_.model_validate_json(_ENCODER.encode(obj))  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ValueError(_pydantic_message(type_, exc)) from None
    # msgspec turns TypeError into a ValidationError carrying the path.
    raise TypeError(f"Keel cannot decode values of type `{_type_name(type_)}`; {_SUPPORTED}")


def _pydantic_message(type_: type, exc: ValueError) -> str:
    # pydantic's own message spans many lines with a URL per error; one line reads
    # better inside ours (msgspec appends the path, e.g. "- at `$.order`").
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors(include_url=False):
        loc = ".".join(str(part) for part in error.get("loc", ()))
        parts.append(f"{loc}: {error.get('msg')}" if loc else str(error.get("msg")))
    return f"invalid {type_.__qualname__} ({'; '.join(parts)})"


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)
# Sorts sets and str-keyed dicts, so equal values give equal bytes in every
# process (set order follows per-process string hashing).
_CANONICAL_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook, order="deterministic")
_ANY_DECODER: Final = msgspec.json.Decoder(dec_hook=_dec_hook)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60


def _type_name(tp: object) -> str:
    """``int``, ``mymod.Card``, ``list[int]``, ``Optional[str]`` -- for messages."""
    if isinstance(tp, type) and not isinstance(tp, types.GenericAlias):
        if tp.__module__ == "builtins":
            return tp.__qualname__
        return f"{tp.__module__}.{tp.__qualname__}"
    return repr(tp).replace("typing.", "")


_CONTAINERS: Final = (tuple, list, dict, set, frozenset, bytes, bytearray)


def _encode_error(what: str, exc: Exception) -> SerializationError:
    if isinstance(exc, _UnsupportedValue) and isinstance(exc.value, _CONTAINERS):
        # msgspec only hands a natively supported container to the hook when it
        # is used as a dict key.
        detail = (
            f"dict keys of type '{type(exc.value).__name__}' are not supported "
            f"(got {_repr.repr(exc.value)}); use str, int, float, enum, UUID, "
            "Decimal or date/time keys"
        )
    elif isinstance(exc, _UnsupportedValue):
        value = exc.value
        detail = (
            f"values of type '{_type_name(type(value))}' are not JSON-serializable "
            f"(got {_repr.repr(value)}); {_SUPPORTED}"
        )
    elif isinstance(exc, _LossyValue):
        detail = str(exc)
    elif isinstance(exc, RecursionError):
        detail = "the value is nested too deeply or contains itself"
    else:
        detail = f"{type(exc).__name__}: {exc}"
    return SerializationError(f"cannot encode {what}: {detail}")


# Exceptions msgspec (or a pydantic model_dump) raises for values it cannot write.
_ENCODE_FAILURES: Final = (
    TypeError,
    ValueError,
    OverflowError,
    RecursionError,
    msgspec.MsgspecError,
)


def _path(parts: tuple[object, ...]) -> str:
    """``$.items[3].price`` -- the place of a value, as msgspec's errors write it."""
    out = ["$"]
    for part in parts:
        if isinstance(part, str) and part.isidentifier():
            out.append(f".{part}")
        else:
            out.append(f"[{part!r}]")
    return "".join(out)


_MSGPACK: Final = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
# A float64 in msgpack is 0xcb and 8 big-endian bytes; exponent bits all set is
# NaN or ±Infinity. Valid UTF-8 never holds 0xcb followed by 0x7f or 0xff, so
# only bytes values and the insides of other numbers can match without one.
_NON_FINITE_MSGPACK: Final = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")


def _may_hold_non_finite(value: object) -> bool:
    """False if ``value`` certainly holds no NaN or infinite float (msgpack keeps them)."""
    try:
        packed = _MSGPACK.encode(value)
    except _ENCODE_FAILURES:
        return True  # e.g. an int beyond 64 bits: let the exact walk decide
    return _NON_FINITE_MSGPACK.search(packed) is not None


def _refuse_non_finite(value: object) -> None:
    """Raise :class:`_LossyValue` naming the first NaN or infinite float in ``value``."""
    # The JSON encoder wrote ``null`` for it. A msgpack encoding (which keeps
    # floats as they are) rules most values out at C speed; the rest are walked
    # as the encoder saw them (dataclasses, Structs, pydantic models as dicts).
    if not _may_hold_non_finite(value):
        return
    stack: list[tuple[object, tuple[object, ...]]] = [
        (msgspec.to_builtins(value, enc_hook=_enc_hook), ())
    ]
    while stack:
        item, parts = stack.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                raise _LossyValue(
                    f"the float {item!r} at `{_path(parts)}` has no JSON form "
                    "(NaN and infinities would silently become null)"
                )
        elif isinstance(item, dict):
            stack.extend((v, (*parts, k)) for k, v in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((v, (*parts, i)) for i, v in reversed(list(enumerate(item))))


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """``object_pairs_hook`` refusing an object that repeats a key."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _LossyValue(
                    f"two keys of one dict are both written as {json.dumps(key)} "
                    "(a key such as 1 and the string '1'), so one would silently "
                    "replace the other; make the keys distinct as strings"
                )
            seen.add(key)
    return result


def _str_keys_only(value: object) -> bool:
    """True if every dict in ``value`` has str keys (the canonical encoder stops at
    the first that has not), so no two keys can collide once written."""
    try:
        _CANONICAL_ENCODER.encode(value)
    except _ENCODE_FAILURES:
        return False  # a non-str key, or a set it cannot sort: the exact check decides
    return True


def _lossless(value: object, data: bytes, *, str_keys: bool) -> bytes:
    """``data`` if it holds ``value`` exactly; :class:`_LossyValue` if JSON changed it."""
    if b"null" in data:  # NaN and ±Infinity are written as null
        _refuse_non_finite(value)
    if not str_keys and b"{" in data:
        # Only the keys matter: numbers stay text (no int or float conversion).
        json.loads(data, object_pairs_hook=_unique_pairs, parse_int=str, parse_float=str)
    return data


def _encode_checked(value: object, *, canonical: bool) -> bytes:
    """Encode ``value`` (see :func:`encode`); raises msgspec's or our own exceptions."""
    if canonical:
        try:
            return _lossless(value, _CANONICAL_ENCODER.encode(value), str_keys=True)
        except _UnsupportedValue:
            raise
        except TypeError:
            # Keys or set members msgspec cannot sort (int keys, mixed types):
            # fall back to iteration order, which is the best we can do.
            return _lossless(value, _ENCODER.encode(value), str_keys=False)
    data = _ENCODER.encode(value)
    return _lossless(value, data, str_keys=b"{" not in data or _str_keys_only(value))


def encode(value: object, *, what: str = "value", canonical: bool = False) -> bytes:
    """Encode ``value`` as JSON; :class:`SerializationError` names ``what`` and the bad type.

    ``canonical=True`` writes sets and str-keyed dicts sorted, so equal values
    give equal bytes (and hashes) in every process; use it for anything hashed.
    By default dicts keep their insertion order. NaN, ±Infinity and dict keys
    that collide as strings are refused: JSON would change them silently.
    """
    try:
        return _encode_checked(value, canonical=canonical)
    except _ENCODE_FAILURES as exc:
        raise _encode_error(what, exc) from None


def _build_decoder(type_: object, what: str) -> msgspec.json.Decoder[Any]:
    if type_ is Any:
        return _ANY_DECODER
    try:
        return msgspec.json.Decoder(type_, dec_hook=_dec_hook)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"cannot decode {what}: type {_type_name(type_)} is not supported: {exc}"
        ) from None


@functools.lru_cache(maxsize=1024)
def _cached_decoder(type_: object) -> msgspec.json.Decoder[Any]:
    return _build_decoder(type_, "value")


def _decoder(type_: object, what: str) -> msgspec.json.Decoder[Any]:
    try:
        return _cached_decoder(type_)
    except TypeError:
        # Unhashable annotation (e.g. Annotated with a list in its metadata).
        return _build_decoder(type_, what)
    except SerializationError:
        return _build_decoder(type_, what)  # re-raise with the caller's label


def decode(data: bytes, type_: object = Any, *, what: str = "value") -> Any:
    """Decode JSON ``data`` into ``type_`` (``Any``: plain JSON values)."""
    decoder = _decoder(type_, what)
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"cannot decode {what} as {_type_name(type_)}: {exc}") from None


def roundtrip(value: object, type_: object = Any, *, what: str = "value") -> Any:
    """``decode(encode(value), type_)``: the value exactly as a replay will see it."""
    return decode(encode(value, what=what), type_, what=what)


def args_hash(data: bytes) -> str:
    """Short stable fingerprint of an encoded payload, for diagnosing argument changes."""
    return _sha256(data).hexdigest()[:16]


_sha256 = hashlib.sha256  # bound once: hashed per command issued


# -- per-function codecs ---------------------------------------------------------------


def _hint_target(fn: Callable[..., Any]) -> Any:
    """The object whose annotations describe calls to ``fn``."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isclass(target):
        return target.__init__
    if not inspect.isroutine(target) and callable(target):
        return type(target).__call__
    return target


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of ``fn``; an unresolvable one becomes ``Any``."""
    target = _hint_target(fn)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # any failure of user annotations: fall back below
        pass
    # One bad annotation (say, a name imported under TYPE_CHECKING) should not
    # cost the others their types: resolve them one by one.
    raw = getattr(target, "__annotations__", None)
    if not isinstance(raw, Mapping):
        return {}
    unwrapped = inspect.unwrap(target) if callable(target) else target
    globalns = getattr(unwrapped, "__globals__", {})
    hints: dict[str, Any] = {}
    for name, annotation in raw.items():
        holder = types.SimpleNamespace(__annotations__={name: annotation})
        try:
            hints[name] = typing.get_type_hints(holder, globalns, include_extras=True)[name]
        except Exception:
            hints[name] = Any
    return hints


def _describe(fn: Callable[..., Any]) -> str:
    return f"function {getattr(fn, '__qualname__', None) or repr(fn)!r}"


def _return_type(hints: Mapping[str, Any]) -> Any:
    tp = hints.get("return", Any)
    # ``-> None`` resolves to NoneType; keep it (decodes ``null``), but treat the
    # NoReturn family as "anything" since no value is ever produced.
    if tp in (typing.NoReturn, getattr(typing, "Never", typing.NoReturn)):
        return Any
    return tp


_PATH_PARAM = re.compile(r"at `\$\.([A-Za-z_][A-Za-z0-9_]*)")

# Sentinel for "no default" in the decode plan (cheaper than inspect.Parameter.empty checks).
_REQUIRED: Final = object()


class FunctionCodec:
    """Encodes and decodes the arguments and result of one function.

    Build once per function (see :func:`function_codec`); construction resolves
    the signature and type hints and builds the msgspec decoders, and raises
    :class:`SerializationError` if an annotation is a type Keel cannot decode.

    Arguments are stored as a JSON object ``{parameter: value}`` with defaults
    applied; ``*args`` is stored as a list and ``**kwargs`` as an object under
    their own names. The engine should send live calls through
    ``decode_args(encode_args(...))`` too, so a step sees identical values live
    and on replay, and a value that does not match its annotation fails at the
    call site rather than at recovery.
    """

    __slots__ = (
        "_all_positional",
        "_args_decoder",
        "_defaults",
        "_fast_keywords",
        "_fast_positional",
        "_plan",
        "_result_decoder",
        "fn",
        "hints",
        "label",
        "result_type",
        "signature",
    )

    def __init__(self, fn: Callable[..., Any], *, label: str | None = None) -> None:
        self.fn = fn
        self.label = label or _describe(fn)
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"cannot inspect the signature of {self.label}: {exc}"
            ) from None
        self.hints = _type_hints(fn)
        self.result_type: Any = _return_type(self.hints)
        self._result_decoder = _build_decoder(self.result_type, f"the result of {self.label}")

        fields: dict[str, Any] = {}
        plan: list[tuple[str, Any, object]] = []
        defaults: dict[str, Any] = {}
        for name, param in self.signature.parameters.items():
            hint = self.hints.get(name, Any)
            field: Any
            default: Any
            if param.kind is _P.VAR_POSITIONAL:
                field, default = tuple[hint, ...], ()  # type: ignore[valid-type]
            elif param.kind is _P.VAR_KEYWORD:
                field, default = dict[str, hint], {}  # type: ignore[valid-type]
            else:
                field = hint
                default = _REQUIRED if param.default is _P.empty else param.default
                if default is not _REQUIRED:
                    defaults[name] = default
            # Build each field's decoder once now so a bad annotation is reported
            # against its parameter at decoration time, not at some later replay.
            _build_decoder(field, f"argument {name!r} of {self.label}")
            fields[name] = field
            plan.append((name, param.kind, default))
        self._plan = tuple(plan)
        self._defaults = defaults
        # One TypedDict for all parameters: the whole payload decodes in one pass.
        args_type = TypedDict(  # type: ignore[misc]
            f"{getattr(fn, '__name__', 'fn')}_args", fields, total=False
        )
        self._args_decoder: msgspec.json.Decoder[dict[str, Any]] = msgspec.json.Decoder(
            args_type, dec_hook=_dec_hook
        )
        # Fast binding when every parameter is positional-or-keyword / keyword-only
        # (the common case); anything else goes through inspect's Signature.bind.
        kinds = {p.kind for p in self.signature.parameters.values()}
        if kinds <= {_P.POSITIONAL_OR_KEYWORD, _P.KEYWORD_ONLY}:
            params = self.signature.parameters.values()
            self._fast_positional: tuple[str, ...] | None = tuple(
                p.name for p in params if p.kind is _P.POSITIONAL_OR_KEYWORD
            )
            self._fast_keywords = frozenset(self.signature.parameters)
        else:
            self._fast_positional = None
            self._fast_keywords = frozenset()
        # A call passing every parameter by position binds by zip (replay's hot path).
        self._all_positional = (
            len(self._fast_positional)
            if self._fast_positional is not None
            and len(self._fast_positional) == len(self._fast_keywords)
            else -1
        )

    def __repr__(self) -> str:
        return f"FunctionCodec({self.label})"

    def _bind(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        positional = self._fast_positional
        if positional is not None and len(args) <= len(positional):
            bound = dict(zip(positional, args, strict=False))
            keywords = self._fast_keywords
            for key, value in kwargs.items():
                if key in bound or key not in keywords:
                    break  # duplicate or unknown: let Signature.bind word the error
                bound[key] = value
            else:
                if len(bound) < len(keywords):
                    for key, value in self._defaults.items():
                        bound.setdefault(key, value)
                if len(bound) == len(keywords):
                    return bound
        try:
            ba = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"bad call to {self.label}: {exc}") from None
        ba.apply_defaults()
        return ba.arguments

    def encode_args(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any], *, what: str | None = None
    ) -> bytes:
        """Bind a call and encode it canonically as ``{parameter: value}``.

        Canonical (sets and str-keyed dicts sorted) so the same call gives the
        same bytes and :func:`args_hash` in every process, which replay relies
        on when it compares arguments.

        A call that does not fit the signature raises plain ``TypeError``; an
        argument that cannot be encoded raises :class:`SerializationError` naming
        the parameter, e.g. "argument 'card' of step 'charge'".
        """
        if not kwargs and len(args) == self._all_positional:
            names = self._fast_positional or ()
            # One parameter is the most common step signature: a dict display
            # is 4x faster than dict(zip()). (Lengths are checked above.)
            bound = {names[0]: args[0]} if len(names) == 1 else dict(zip(names, args, strict=False))
        else:
            bound = self._bind(args, kwargs)
        try:
            return _lossless(bound, _CANONICAL_ENCODER.encode(bound), str_keys=True)
        except _ENCODE_FAILURES as exc:
            failure: Exception = exc
        if isinstance(failure, TypeError) and not isinstance(failure, _UnsupportedValue):
            # Some argument cannot be sorted (int keys, mixed types): encode
            # argument by argument so that the others stay canonical.
            try:
                return (
                    b"{"
                    + b",".join(
                        _ENCODER.encode(name) + b":" + _encode_checked(bound[name], canonical=True)
                        for name in sorted(bound)
                    )
                    + b"}"
                )
            except _ENCODE_FAILURES as exc:
                failure = exc
        label = what or self.label
        # Re-encode one argument at a time to name the culprit (error path only).
        for name, value in bound.items():
            try:
                _encode_checked(value, canonical=True)
            except _ENCODE_FAILURES as inner:
                raise _encode_error(f"argument {name!r} of {label}", inner) from None
        raise _encode_error(f"the arguments of {label}", failure) from None

    def decode_args(
        self, data: bytes, *, what: str | None = None
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Decode a payload from :meth:`encode_args` into ``(args, kwargs)`` for ``fn``."""
        label = what or self.label
        try:
            values = self._args_decoder.decode(data)
        except msgspec.DecodeError as exc:
            message = str(exc)
            match = _PATH_PARAM.search(message)
            if match and match.group(1) in self.signature.parameters:
                where = f"argument {match.group(1)!r} of {label}"
                raise SerializationError(f"cannot decode {where}: {message}") from None
            raise SerializationError(f"cannot decode the arguments of {label}: {message}") from None
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, kind, default in self._plan:
            if name in values:
                value = values[name]
            elif default is not _REQUIRED:
                value = default
            else:
                raise SerializationError(
                    f"cannot decode the arguments of {label}: argument {name!r} is missing"
                )
            if kind in _POSITIONAL:
                args.append(value)
            elif kind is _P.VAR_POSITIONAL:
                args.extend(value)
            elif kind is _P.KEYWORD_ONLY:
                kwargs[name] = value
            else:
                kwargs.update(value)
        return tuple(args), kwargs

    def encode_result(self, value: object, *, what: str | None = None) -> bytes:
        """Encode a return value of ``fn``."""
        return encode(value, what=what or f"the result of {self.label}")

    def decode_result(self, data: bytes, *, what: str | None = None) -> Any:
        """Decode a return value of ``fn`` into its return annotation."""
        try:
            return self._result_decoder.decode(data)
        except msgspec.DecodeError as exc:
            label = what or f"the result of {self.label}"
            raise SerializationError(
                f"cannot decode {label} as {_type_name(self.result_type)}: {exc}"
            ) from None


def function_codec(fn: Callable[..., Any]) -> FunctionCodec:
    """The cached :class:`FunctionCodec` of ``fn``."""
    try:
        hash(fn)
    except TypeError:
        return FunctionCodec(fn)  # unhashable callable: build it each time
    return _cached_function_codec(fn)


@functools.lru_cache(maxsize=4096)
def _cached_function_codec(fn: Callable[..., Any]) -> FunctionCodec:
    return FunctionCodec(fn)


def encode_args(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], *, what: str
) -> bytes:
    """Bind ``fn(*args, **kwargs)`` and encode it; see :meth:`FunctionCodec.encode_args`."""
    return function_codec(fn).encode_args(args, kwargs, what=what)


def decode_args(
    fn: Callable[..., Any], data: bytes, *, what: str
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Decode arguments for ``fn``; see :meth:`FunctionCodec.decode_args`."""
    return function_codec(fn).decode_args(data, what=what)


def return_type(fn: Callable[..., Any]) -> Any:
    """The return annotation of ``fn`` (``Any`` if missing or unresolvable)."""
    try:
        hash(fn)
    except TypeError:
        return _return_type(_type_hints(fn))
    return _cached_return_type(fn)


# Cached apart from FunctionCodec: asking for a return type must not fail on a
# parameter annotation that Keel cannot decode.
@functools.lru_cache(maxsize=4096)
def _cached_return_type(fn: Callable[..., Any]) -> Any:
    return _return_type(_type_hints(fn))

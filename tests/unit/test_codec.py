"""Typed JSON codec: round trips, argument binding, and the errors users see."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import math
import socket
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, Optional, Union
from zoneinfo import ZoneInfo

import msgspec
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.core import codec
from keel.core.codec import FunctionCodec, function_codec
from keel.errors import ConfigurationError, SerializationError

if TYPE_CHECKING:
    from collections import OrderedDict  # only for the unresolvable-annotation test


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Card:
    number: str
    expires: dt.date


@dataclasses.dataclass
class Receipt:
    id: uuid.UUID
    at: dt.datetime
    amount: Decimal
    color: Color
    level: Level
    blob: bytes
    card: Card
    tags: list[str] = dataclasses.field(default_factory=list)
    note: str | None = None


class Point(msgspec.Struct):
    x: int
    y: int


class Order(pydantic.BaseModel):
    id: uuid.UUID
    placed: dt.datetime
    total: Decimal
    lines: list[str]


class StrictOrder(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(strict=True)
    placed: dt.datetime
    id: uuid.UUID


UTC = dt.UTC
NOW = dt.datetime(2024, 5, 17, 12, 30, 45, 123456, tzinfo=UTC)


def receipt() -> Receipt:
    return Receipt(
        id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
        at=NOW,
        amount=Decimal("19.99"),
        color=Color.GREEN,
        level=Level.HIGH,
        blob=b"\x00\xffbinary",
        card=Card("4242", dt.date(2030, 1, 31)),
        tags=["a", "b"],
    )


# -- encode / decode -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (None, None),
        (True, bool),
        (0, int),
        (-(2**62), int),
        (2**80, int),
        (1.5, float),
        ("héllo \u2603", str),
        (b"\x00\x01\xfe", bytes),
        ([1, 2, 3], list[int]),
        ((1, "a"), tuple[int, str]),
        ((1, 2, 3), tuple[int, ...]),
        ({1, 2, 3}, set[int]),
        (frozenset({"a"}), frozenset[str]),
        ({"a": 1, "b": 2}, dict[str, int]),
        ({1: "x", 2: "y"}, dict[int, str]),
        (uuid.UUID(int=7), uuid.UUID),
        (Decimal("1.10"), Decimal),
        (Decimal("-1E+3"), Decimal),
        (dt.date(2024, 2, 29), dt.date),
        (dt.time(23, 59, 59, 999999), dt.time),
        (dt.datetime(2024, 1, 1, 8, 0), dt.datetime),  # naive stays naive
        (NOW, dt.datetime),
        (dt.timedelta(days=2, seconds=3, microseconds=4), dt.timedelta),
        (Color.RED, Color),
        (Level.LOW, Level),
        (receipt(), Receipt),
        (Point(1, 2), Point),
        ([Point(1, 2), Point(3, 4)], list[Point]),
        ({"r": receipt()}, dict[str, Receipt]),
        (None, Optional[Receipt]),  # noqa: UP045 - the spelling under test
        (receipt(), Optional[Receipt]),  # noqa: UP045
        (3, Union[int, str]),  # noqa: UP007
        ("x", int | str),
        ("b", Literal["a", "b"]),
        (5, Annotated[int, msgspec.Meta(ge=0)]),
    ],
)
def test_round_trip_to_annotated_type(value: object, type_: object) -> None:
    out = codec.roundtrip(value, type_)
    assert out == value
    assert type(out) is type(value)


def test_round_trip_pydantic_models() -> None:
    order = Order(id=uuid.uuid4(), placed=NOW, total=Decimal("3.50"), lines=["tea", "scone"])
    assert codec.roundtrip(order, Order) == order
    assert codec.roundtrip([order], list[Order]) == [order]
    assert codec.roundtrip({"o": order}, dict[str, Optional[Order]]) == {"o": order}  # noqa: UP045
    # Strict models only accept ISO strings for datetimes/UUIDs when validating JSON.
    strict = StrictOrder(placed=NOW, id=uuid.uuid4())
    assert codec.roundtrip(strict, StrictOrder) == strict


def test_pydantic_model_is_plain_json() -> None:
    order = Order(id=uuid.UUID(int=1), placed=NOW, total=Decimal("3.5"), lines=[])
    assert msgspec.json.decode(codec.encode(order)) == {
        "id": "00000000-0000-0000-0000-000000000001",
        "placed": "2024-05-17T12:30:45.123456Z",
        "total": "3.5",
        "lines": [],
    }


def test_tz_aware_datetime_keeps_the_instant_and_offset() -> None:
    paris = dt.datetime(2024, 7, 1, 9, 0, tzinfo=ZoneInfo("Europe/Paris"))
    out = codec.roundtrip(paris, dt.datetime)
    assert out == paris
    assert out.utcoffset() == dt.timedelta(hours=2)
    offset = dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5, minutes=-30)))
    assert codec.roundtrip(offset, dt.datetime).utcoffset() == offset.utcoffset()


def test_wire_format_is_readable_json() -> None:
    assert codec.encode(Decimal("1.10")) == b'"1.10"'  # string: no float rounding
    assert codec.encode(b"hi") == b'"aGk="'
    assert codec.encode(Color.RED) == b'"red"'
    assert codec.encode({"b": 1, "a": 2}) == b'{"b":1,"a":2}'  # insertion order kept


def test_decode_as_any_gives_plain_json_values() -> None:
    assert codec.roundtrip(receipt()) == {
        "id": "12345678-1234-5678-1234-567812345678",
        "at": "2024-05-17T12:30:45.123456Z",
        "amount": "19.99",
        "color": "green",
        "level": 2,
        "blob": "AP9iaW5hcnk=",
        "card": {"number": "4242", "expires": "2030-01-31"},
        "tags": ["a", "b"],
        "note": None,
    }
    assert codec.roundtrip((1, 2)) == [1, 2]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(json_values)
def test_any_json_value_round_trips(value: object) -> None:
    assert codec.roundtrip(value) == value


@pytest.mark.parametrize(
    ("bad", "type_name"),
    [
        (lambda: 1, "'function'"),
        (object(), "'object'"),
        ({"nested": [object()]}, "'object'"),
        (Exception("x"), "'Exception'"),
    ],
)
def test_encode_unsupported_value_names_type_and_label(bad: object, type_name: str) -> None:
    with pytest.raises(SerializationError) as info:
        codec.encode(bad, what="the result of step 'x'")
    message = str(info.value)
    assert message.startswith("cannot encode the result of step 'x': ")
    assert f"values of type {type_name} are not JSON-serializable" in message


def test_encode_socket_names_its_module_qualified_type() -> None:
    with socket.socket() as sock, pytest.raises(SerializationError, match=r"'socket\.socket'"):
        codec.encode(sock)


def test_encode_other_failures_are_serialization_errors() -> None:
    with pytest.raises(SerializationError, match="cannot encode value: dict keys of type 'tuple'"):
        codec.encode({(1, 2): "tuple key"})
    with pytest.raises(SerializationError, match="values of type 'object'"):
        codec.encode({object(): 1})
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(SerializationError, match="nested too deeply or contains itself"):
        codec.encode(loop)


def test_serialization_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        codec.encode(object())


def test_decode_type_mismatch_names_what_type_and_path() -> None:
    data = codec.encode({"id": "not-a-uuid"})
    with pytest.raises(SerializationError) as info:
        codec.decode(data, dict[str, uuid.UUID], what="the result of step 'lookup'")
    message = str(info.value)
    assert "cannot decode the result of step 'lookup' as dict[str, uuid.UUID]" in message
    assert "Invalid UUID - at `$[...]`" in message  # msgspec's path for a dict value
    with pytest.raises(
        SerializationError, match=r"Expected `str`, got `int` - at `\$\.card\.number`"
    ):
        codec.decode(b'{"card": {"number": 1}}', Receipt)


def test_decode_malformed_json() -> None:
    with pytest.raises(SerializationError, match=r"cannot decode value as int: .*malformed"):
        codec.decode(b'1 {"', int)


def test_decode_pydantic_validation_error_is_serialization_error() -> None:
    with pytest.raises(SerializationError) as info:
        codec.decode(b'[{"id": 1, "total": "1"}]', list[Order], what="the orders")
    message = str(info.value)
    # pydantic's many-line report is folded into one line, followed by msgspec's path.
    assert message.startswith(
        f"cannot decode the orders as list[{Order.__module__}.Order]: invalid Order ("
    )
    assert "placed: Field required; lines: Field required" in message
    assert message.endswith(") - at `$[0]`")
    assert "\n" not in message


def test_decode_into_unsupported_class_explains() -> None:
    class Opaque:
        pass

    with pytest.raises(SerializationError, match="cannot decode values of type"):
        codec.decode(b"{}", Opaque)


def test_decode_into_unsupported_annotation() -> None:
    # msgspec cannot tell two dataclasses apart inside one union.
    with pytest.raises(SerializationError, match="is not supported"):
        codec.decode(b"{}", Union[Card, Receipt], what="x")  # noqa: UP007


def test_args_hash_is_short_and_stable() -> None:
    data = codec.encode({"a": 1})
    assert codec.args_hash(data) == codec.args_hash(b'{"a":1}')
    assert len(codec.args_hash(data)) == 16
    assert codec.args_hash(data) != codec.args_hash(b'{"a":2}')
    assert codec.args_hash(b"") == "e3b0c44298fc1c14"  # sha256 of nothing


# -- arguments -------------------------------------------------------------------------


def charge(
    card: Card, amount: Decimal, currency: str = "EUR", *, idempotent: bool = True
) -> Receipt:
    raise NotImplementedError


def everything(
    a: int,
    b: dt.date,
    /,
    c: uuid.UUID,
    *rest: Decimal,
    d: Color = Color.RED,
    e: Optional[Card] = None,  # noqa: UP045
    **extra: list[int],
) -> None:
    raise NotImplementedError


def untyped(a, b=2, *args, **kwargs):  # type: ignore[no-untyped-def]
    raise NotImplementedError


def call_round_trip(fn: Any, *args: Any, **kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    data = codec.encode_args(fn, args, kwargs, what="step 'x'")
    return codec.decode_args(fn, data, what="step 'x'")


def test_args_are_a_json_object_with_defaults_applied() -> None:
    data = codec.encode_args(charge, (Card("1", dt.date(2030, 1, 1)), Decimal("2")), {}, what="s")
    assert msgspec.json.decode(data) == {
        "card": {"number": "1", "expires": "2030-01-01"},
        "amount": "2",
        "currency": "EUR",
        "idempotent": True,
    }


def test_canonical_encoding() -> None:
    assert codec.encode({"b": {"z", "y"}, "a": 1}, canonical=True) == b'{"a":1,"b":["y","z"]}'
    # Keys msgspec cannot sort fall back to insertion order instead of failing.
    assert codec.encode({2: "b", 1: "a"}, canonical=True) == b'{"2":"b","1":"a"}'
    with pytest.raises(SerializationError, match="'object'"):
        codec.encode({"a": object()}, canonical=True)


def test_args_round_trip_to_annotated_types() -> None:
    card = Card("4242", dt.date(2030, 1, 1))
    args, kwargs = call_round_trip(charge, card, Decimal("9.50"), idempotent=False)
    assert args == (card, Decimal("9.50"), "EUR")
    assert kwargs == {"idempotent": False}
    # Keyword spelling of positional parameters binds the same way.
    assert call_round_trip(charge, amount=Decimal("1"), card=card) == (
        (card, Decimal("1"), "EUR"),
        {"idempotent": True},
    )


def test_every_parameter_kind_round_trips() -> None:
    u = uuid.uuid4()
    card = Card("1", dt.date(2031, 2, 3))
    args, kwargs = call_round_trip(
        everything,
        1,
        dt.date(2024, 1, 2),
        u,
        Decimal("1.5"),
        Decimal("2.5"),
        e=card,
        x=[1, 2],
        a=[3],  # a **extra key that shadows a positional-only name
    )
    assert args == (1, dt.date(2024, 1, 2), u, Decimal("1.5"), Decimal("2.5"))
    assert kwargs == {"d": Color.RED, "e": card, "x": [1, 2], "a": [3]}
    # The decoded call is one the function accepts and binds identically.
    import inspect

    bound = inspect.signature(everything).bind(*args, **kwargs)
    assert bound.arguments["rest"] == (Decimal("1.5"), Decimal("2.5"))
    assert bound.arguments["extra"] == {"x": [1, 2], "a": [3]}


def test_untyped_parameters_decode_as_plain_json() -> None:
    args, kwargs = call_round_trip(untyped, (1, 2), 3, 4, k={"z": 1})
    assert args == ([1, 2], 3, 4)
    assert kwargs == {"k": {"z": 1}}
    assert call_round_trip(untyped, "a") == (("a", 2), {})


def test_methods_partials_and_callable_objects() -> None:
    class Service:
        def fetch(self, when: dt.datetime) -> dt.date:
            return when.date()

        def __call__(self, n: int, when: dt.date) -> int:
            return n

    svc = Service()
    assert call_round_trip(svc.fetch, NOW) == ((NOW,), {})
    assert call_round_trip(svc, 1, dt.date(2024, 1, 1)) == ((1, dt.date(2024, 1, 1)), {})
    part = functools.partial(charge, currency="USD")
    card = Card("1", dt.date(2030, 1, 1))
    args, kwargs = call_round_trip(part, card, Decimal(1))
    assert args == (card, Decimal(1))
    assert kwargs == {"currency": "USD", "idempotent": True}
    assert codec.return_type(svc.fetch) is dt.date


@pytest.mark.parametrize("bad", [lambda: None, object(), "socket"])
def test_unserializable_argument_names_the_parameter(bad: object) -> None:
    with socket.socket() as sock:
        value = sock if bad == "socket" else bad
        with pytest.raises(SerializationError) as info:
            codec.encode_args(
                charge, (Card("1", dt.date(2030, 1, 1)), value), {}, what="step 'charge'"
            )
    assert str(info.value).startswith("cannot encode argument 'amount' of step 'charge': ")
    assert "not JSON-serializable" in str(info.value)


def test_unserializable_var_keyword_argument_names_the_parameter() -> None:
    with pytest.raises(SerializationError, match="argument 'kwargs' of step 'x'"):
        codec.encode_args(untyped, (1,), {"k": object()}, what="step 'x'")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {}, "missing a required argument: 'card'"),
        ((1, 2, 3, 4), {}, "too many positional arguments"),
        ((1,), {"card": 1}, "multiple values for argument 'card'"),
        ((1, 2), {"nope": 1}, "unexpected keyword argument 'nope'"),
    ],
)
def test_bad_call_is_a_plain_type_error(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(TypeError, match=message) as info:
        codec.encode_args(charge, args, kwargs, what="step 'charge'")
    assert not isinstance(info.value, SerializationError)


def test_positional_only_passed_by_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="positional"):
        codec.encode_args(
            everything, (), {"a": 1, "b": dt.date.today(), "c": uuid.uuid4()}, what="s"
        )


def test_decode_args_type_mismatch_names_the_parameter() -> None:
    data = b'{"card": {"number": "1", "expires": "2030-01-01"}, "amount": [1]}'
    with pytest.raises(SerializationError) as info:
        codec.decode_args(charge, data, what="step 'charge'")
    assert str(info.value).startswith("cannot decode argument 'amount' of step 'charge': ")
    assert "$.amount" in str(info.value)


def test_decode_args_missing_required_argument() -> None:
    with pytest.raises(SerializationError, match="argument 'amount' is missing"):
        codec.decode_args(charge, b'{"card": {"number": "1", "expires": "2030-01-01"}}', what="s")
    # A missing argument that has a default takes the default.
    card = Card("1", dt.date(2030, 1, 1))
    data = codec.encode({"card": card, "amount": Decimal(1)})
    assert codec.decode_args(charge, data, what="s") == (
        (card, Decimal(1), "EUR"),
        {"idempotent": True},
    )


def test_decode_args_rejects_non_object() -> None:
    with pytest.raises(SerializationError, match="cannot decode the arguments of s"):
        codec.decode_args(charge, b"[1, 2]", what="s")


# -- type hints ------------------------------------------------------------------------


async def async_step(n: int) -> list[Receipt]:
    raise NotImplementedError


def no_hints(x):  # type: ignore[no-untyped-def]
    return x


def returns_none() -> None:
    return None


def half_resolvable(a: OrderedDict[str, int], b: dt.date) -> OrderedDict[str, int]:
    raise NotImplementedError


def test_return_type() -> None:
    assert codec.return_type(async_step) == list[Receipt]
    assert codec.return_type(no_hints) is Any
    assert codec.return_type(returns_none) is type(None)
    assert codec.return_type(lambda: 1) is Any
    assert codec.return_type(half_resolvable) is Any  # name only exists for type checkers
    assert codec.return_type(functools.partial(async_step, 1)) == list[Receipt]


def test_unresolvable_annotation_is_any_and_the_others_still_typed() -> None:
    fc = function_codec(half_resolvable)
    assert fc.hints == {"a": Any, "b": dt.date, "return": Any}
    args, _ = fc.decode_args(fc.encode_args(({"k": 1}, dt.date(2024, 1, 1)), {}))
    assert args == ({"k": 1}, dt.date(2024, 1, 1))


def test_function_codec_result_round_trip() -> None:
    fc = function_codec(async_step)
    value = [receipt()]
    assert fc.decode_result(fc.encode_result(value)) == value
    with pytest.raises(SerializationError, match=r"the result of function 'async_step' as list"):
        fc.decode_result(b'{"x": 1}')
    with pytest.raises(SerializationError, match="cannot encode the result of function"):
        fc.encode_result([object()])


def test_function_codec_is_cached_per_function() -> None:
    assert function_codec(charge) is function_codec(charge)
    assert function_codec(charge) is not function_codec(everything)


def test_unsupported_parameter_annotation_fails_when_codec_is_built() -> None:
    def ambiguous(x: Union[Card, Receipt]) -> None:  # noqa: UP007
        raise NotImplementedError

    with pytest.raises(SerializationError, match=r"argument 'x' of .*ambiguous.* is not supported"):
        FunctionCodec(ambiguous)


def test_uninspectable_callable_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="cannot inspect the signature"):
        FunctionCodec(getattr)  # a builtin without a signature


# -- values JSON would change: refused, never silently altered ---------------------------


NON_FINITE = [float("nan"), float("inf"), float("-inf")]


@dataclasses.dataclass
class Measure:
    name: str
    value: float


@pytest.mark.parametrize("bad", NON_FINITE, ids=repr)
@pytest.mark.parametrize("canonical", [False, True])
def test_non_finite_floats_are_refused_not_written_as_null(bad: float, canonical: bool) -> None:
    for value, path in [
        (bad, "$"),
        ([1.5, bad], "$[1]"),
        ({"a": {"b": [None, bad]}}, "$.a.b[1]"),
        ({2: bad}, "$[2]"),
        (Measure("m", bad), "$.value"),
    ]:
        with pytest.raises(SerializationError) as info:
            codec.encode(value, what="the result of step 'x'", canonical=canonical)
        message = str(info.value)
        assert message.startswith("cannot encode the result of step 'x': ")
        assert f"the float {bad!r} at `{path}` has no JSON form" in message


def test_non_finite_floats_inside_pydantic_models_are_refused() -> None:
    class Reading(pydantic.BaseModel):
        values: list[float]

    with pytest.raises(SerializationError, match=r"nan at `\$.r.values\[1\]`"):
        codec.encode({"r": Reading(values=[1.0, float("nan")])})


def test_nulls_and_finite_floats_still_round_trip() -> None:
    value = {"a": None, "b": [None, 1e308, -0.0, 5e-324], "null": "null"}
    assert codec.roundtrip(value) == value
    assert codec.encode(None) == b"null"
    # Bytes that look like a non-finite float in the msgpack pre-check, and ints
    # msgpack cannot hold, take the exact path and still encode.
    assert codec.roundtrip([None, b"\xcb\x7f\xf8\x00"], list[Optional[bytes]]) == [  # noqa: UP045
        None,
        b"\xcb\x7f\xf8\x00",
    ]
    assert codec.roundtrip([None, 2**100, -(2**100)]) == [None, 2**100, -(2**100)]
    with pytest.raises(SerializationError, match=r"the float nan at `\$\[2\]`"):
        codec.encode([None, 2**100, float("nan")])


@pytest.mark.parametrize(
    "value",
    [
        {1: "int", "1": "str"},
        {"1": "str", 1: "int"},
        {1.5: "float", "1.5": "str"},
        {Color.RED: "enum", "red": "str"},
        {uuid.UUID(int=1): "uuid", str(uuid.UUID(int=1)): "str"},
        {Decimal("1.0"): "decimal", "1.0": "str"},
        {"outer": [{"x": {1: "a", "1": "b"}}]},
    ],
    ids=repr,
)
@pytest.mark.parametrize("canonical", [False, True])
def test_dict_keys_colliding_as_strings_are_refused(value: object, canonical: bool) -> None:
    with pytest.raises(SerializationError, match="two keys of one dict are both written as"):
        codec.encode(value, canonical=canonical)


def test_distinct_non_str_keys_still_encode() -> None:
    assert codec.encode({1: "a", 2: "b", "3": "c"}) == b'{"1":"a","2":"b","3":"c"}'
    assert codec.decode(codec.encode({1: "a", 2: "b"}), dict[int, str]) == {1: "a", 2: "b"}


def test_lossy_arguments_name_the_parameter() -> None:
    def f(a: Any, b: Any = None, *rest: Any, **extra: Any) -> None: ...

    cases = [
        ((1, float("nan")), {}, "argument 'b'", "the float nan at `$`"),
        ((1, None, [float("inf")]), {}, "argument 'rest'", "the float inf at `$[0][0]`"),
        ((1,), {"z": {1: "a", "1": "b"}}, "argument 'extra'", 'both written as "1"'),
        (({"k": {2: float("-inf")}},), {}, "argument 'a'", "the float -inf at `$.k[2]`"),
    ]
    for args, kwargs, where, detail in cases:
        with pytest.raises(SerializationError) as info:
            codec.encode_args(f, args, kwargs, what="workflow 'w'")
        assert str(info.value).startswith(f"cannot encode {where} of workflow 'w': ")
        assert detail in str(info.value)


@settings(database=None)
@given(st.floats() | st.lists(st.floats(), max_size=5))
def test_every_float_round_trips_or_is_refused(value: object) -> None:
    values = value if isinstance(value, list) else [value]
    if all(math.isfinite(v) for v in values):
        assert codec.roundtrip(value) == value
    else:
        with pytest.raises(SerializationError, match="has no JSON form"):
            codec.encode(value)


def test_canonical_argument_bytes_are_unchanged() -> None:
    # The argument hash of existing journals must not move: same bytes as before.
    def f(a: Any, b: Any) -> None: ...

    data = codec.encode_args(f, ({"z": 1, "a": [None, 1.5]}, {2: "b", 1: "a"}), {}, what="f")
    assert data == b'{"a":{"a":[null,1.5],"z":1},"b":{"2":"b","1":"a"}}'

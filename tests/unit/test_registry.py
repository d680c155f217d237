"""The registry of workflow versions, and the default version hash."""

from __future__ import annotations

import pytest

import keel
from keel.workflow.definitions import WorkflowDef


def test_versions_side_by_side_and_the_current_one() -> None:
    reg = keel.Registry()

    @keel.workflow(name="order", version="1", current=False, registry=reg)
    async def order_v1() -> str:
        return "v1"

    @keel.workflow(name="order", version="2", registry=reg)
    async def order_v2() -> str:
        return "v2"

    assert reg.get("order") is order_v2
    assert reg.find("order") is order_v2
    assert reg.find("order", "1") is order_v1
    assert reg.find("order", "3") is None
    assert reg.find("nope") is None and reg.find("nope", "1") is None
    assert reg.versions("order") == [order_v1, order_v2]
    assert reg.names() == ["order"]
    assert "not current" in repr(order_v1) and "not current" not in repr(order_v2)


def test_the_current_version_does_not_depend_on_import_order() -> None:
    reg = keel.Registry()

    @keel.workflow(name="order", version="2", registry=reg)
    async def order_v2() -> str:
        return "v2"

    @keel.workflow(name="order", version="1", current=False, registry=reg)
    async def order_v1() -> str:
        return "v1"

    assert reg.get("order") is order_v2


def test_two_functions_cannot_share_a_name_and_version() -> None:
    reg = keel.Registry()

    @keel.workflow(name="order", version="1", registry=reg)
    async def first() -> None: ...

    with pytest.raises(keel.ConfigurationError, match=r"version '1' is already registered"):

        @keel.workflow(name="order", version="1", current=False, registry=reg)
        async def second() -> None: ...

    assert reg.versions("order") == [first]


def test_two_current_versions_are_an_error() -> None:
    reg = keel.Registry()

    @keel.workflow(name="order", version="1", registry=reg)
    async def first() -> None: ...

    with pytest.raises(keel.ConfigurationError, match=r"two current versions.*current=False"):

        @keel.workflow(name="order", version="2", registry=reg)
        async def second() -> None: ...

    assert reg.get("order") is first and reg.versions("order") == [first]


def _define(reg: keel.Registry, variant: int, version: str | None = None) -> WorkflowDef[[], int]:
    # The same function (same module and qualified name) defined again, as a
    # re-import or a reload after an edit does.
    if variant == 1:

        async def flow() -> int:
            return 1
    else:

        async def flow() -> int:
            return 2

    return keel.workflow(name="flow", version=version, registry=reg)(flow)


def test_redefining_a_function_replaces_it_and_keeps_its_old_version() -> None:
    reg = keel.Registry()
    old = _define(reg, 1)
    again = _define(reg, 1)  # unchanged source: same version, replaced
    assert again.version == old.version and reg.versions("flow") == [again]
    edited = _define(reg, 2)  # edited: a new current version; the old one still resumes runs
    assert edited.version != old.version
    assert reg.get("flow") is edited
    assert reg.find("flow", old.version) is again


def test_a_workflow_without_a_current_version_cannot_start() -> None:
    reg = keel.Registry()

    @keel.workflow(name="order", version="1", current=False, registry=reg)
    async def only_old() -> None: ...

    assert reg.find("order") is None and reg.find("order", "1") is only_old
    with pytest.raises(keel.WorkflowNotFoundError, match="no current version"):
        reg.get("order")
    with pytest.raises(keel.WorkflowNotFoundError, match=r"no workflow named 'nope'.*order"):
        reg.get("nope")


def test_same_version_registered_again_as_not_current_retires_it() -> None:
    reg = keel.Registry()

    async def wf() -> None: ...

    keel.workflow(name="w", version="1", registry=reg)(wf)
    old = keel.workflow(name="w", version="1", current=False, registry=reg)(wf)
    assert reg.find("w") is None and reg.find("w", "1") is old


@pytest.mark.parametrize("current", [None, 1, "yes"])
def test_current_must_be_a_bool(current: object) -> None:
    with pytest.raises(keel.ConfigurationError, match="current"):

        @keel.workflow(name="w", current=current, registry=keel.Registry())  # type: ignore[arg-type]
        async def w() -> None: ...


# --- the default version: a hash of the code ------------------------------------------------


async def original(x: int) -> int:
    # a comment
    return x + 1


async def renamed_copy(x: int) -> int:
    # a comment
    return x + 1


async def edited(x: int) -> int:
    # a comment
    return x + 2


def test_version_hash_ignores_decorators_and_the_function_name() -> None:
    reg = keel.Registry()
    a = keel.workflow(name="a", registry=reg)(original)
    b = keel.workflow(name="b", current=True, registry=reg)(renamed_copy)
    c = keel.workflow(name="c", registry=reg)(edited)
    assert a.version == b.version  # an old version copied unchanged keeps its version
    assert a.version != c.version  # any edit of the body is a new version
    assert len(a.version) == 16 and int(a.version, 16) >= 0
    pinned = keel.workflow(name="d", version="2024-06", registry=reg)(edited)
    assert pinned.version == "2024-06"


def test_version_hash_of_a_decorated_definition_matches_a_plain_one() -> None:
    reg = keel.Registry()

    @keel.workflow(name="decorated", registry=reg)
    async def original(x: int) -> int:
        # a comment
        return x + 1

    plain = keel.workflow(name="plain", registry=reg)(renamed_copy)
    assert original.version == plain.version  # indentation and decorator lines do not count

"""The public API: one curated, sorted ``__all__``; everything in it is documented."""

from __future__ import annotations

import inspect

import keel
from keel import errors


def test_all_is_sorted_unique_and_importable() -> None:
    assert keel.__all__ == sorted(keel.__all__)
    assert len(set(keel.__all__)) == len(keel.__all__)
    for name in keel.__all__:
        assert hasattr(keel, name), name


def test_public_names_have_docstrings() -> None:
    for name in keel.__all__:
        obj = getattr(keel, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), f"keel.{name} has no docstring"


def test_every_keel_exception_is_in_the_one_tree_and_exported() -> None:
    raised = [
        obj
        for obj in vars(errors).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == errors.__name__
    ]
    for exc in raised:
        assert issubclass(exc, keel.KeelError | keel.KeelControl), exc
        assert exc.__name__ in keel.__all__, f"{exc.__name__} is not exported"
    # Control flow must not be catchable by `except Exception`.
    assert not issubclass(keel.KeelControl, Exception)

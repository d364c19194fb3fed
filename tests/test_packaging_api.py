"""Every public name of the lazy package API resolves to the object its module defines."""

from __future__ import annotations

import importlib

import pytest

import kvplan


def test_every_export_resolves() -> None:
    for name in kvplan.__all__:
        if name == "__version__":
            continue
        value = getattr(kvplan, name)
        module = importlib.import_module(kvplan._EXPORTS[name])
        assert value is getattr(module, kvplan._RENAMED.get(name, name)), name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        kvplan.no_such_name  # type: ignore[attr-defined]  # noqa: B018


def test_all_lists_exactly_the_exports() -> None:
    assert set(kvplan.__all__) == {"__version__", *kvplan._EXPORTS}

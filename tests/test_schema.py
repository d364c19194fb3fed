"""kvplan/schema.py writes the report types themselves: each writer names one report dataclass, and a report
type without a writer is written as its fields in order (the golden tests compare the output byte for byte)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, is_dataclass
from enum import StrEnum

import kvplan
from kvplan import schema


def _dataclasses() -> dict[str, list[type]]:
    """Every dataclass defined in kvplan, by name."""
    out: dict[str, list[type]] = {}
    for info in pkgutil.walk_packages(kvplan.__path__, "kvplan."):
        if info.name == "kvplan.__main__":  # runs the CLI
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and is_dataclass(value) and value.__module__ == info.name:
                out.setdefault(value.__name__, []).append(value)
    return out


def test_every_writer_names_exactly_one_report_dataclass() -> None:
    classes = _dataclasses()
    assert schema._WRITERS
    for name in schema._WRITERS:
        assert len(classes.get(name, [])) == 1, name


class _Kind(StrEnum):
    A = "a"


@dataclass(frozen=True)
class _Row:
    kind: _Kind
    count: int
    share: float
    rate: float | None
    parts: tuple[int, ...] = ()
    facts: dict[str, int] = field(default_factory=dict)


def test_a_dataclass_without_writer_is_its_fields_in_order() -> None:
    """Enums as their value, tuples as lists, float fields as floats even when they hold an int."""
    row = _Row(_Kind.A, 3, 1, 2, (1, 2), {"x": 1})
    assert schema._plain(row) == {
        "kind": "a",
        "count": 3,
        "share": 1.0,
        "rate": 2.0,
        "parts": [1, 2],
        "facts": {"x": 1},
    }
    assert isinstance(schema._plain(row)["share"], float)
    assert schema._plain(_Row(_Kind.A, 3, 0.5, None))["rate"] is None

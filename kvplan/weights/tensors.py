"""Collecting tensors while a family rule walks a config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

from kvplan.errors import ConfigError
from kvplan.layout import CacheLayout
from kvplan.readers.config import Fields
from kvplan.weights.result import Part, Role, WeightTensor


def _cdiv(a: int, b: int) -> int:
    """Ceiling division on ints."""
    return -(-a // b)


class _Tensors:
    """Accumulates tensors, merging identical ones (same part, role, name, shape, KV heads) into a count."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Part, Role, str, tuple[int, ...], int], int] = {}

    def add(self, part: Part, role: Role, name: str, shape: tuple[int, ...], count: int = 1, kv: int = 0) -> None:
        if count <= 0 or any(d <= 0 for d in shape):
            return
        key = (part, role, name, shape, kv)
        self._counts[key] = self._counts.get(key, 0) + count

    def linear(
        self,
        part: Part,
        name: str,
        out: int,
        inp: int,
        *,
        bias: bool = False,
        count: int = 1,
        role: Role = Role.MATRIX,
        kv: int = 0,
    ) -> None:
        self.add(part, role, f"{name}.weight", (out, inp), count, kv)
        if bias:
            self.add(part, Role.VECTOR, f"{name}.bias", (out,), count, kv)

    def norm(self, name: str, dim: int, *, bias: bool = False, count: int = 1, kv: int = 0) -> None:
        self.add(Part.NORMS, Role.VECTOR, f"{name}.weight", (dim,), count, kv)
        if bias:
            self.add(Part.NORMS, Role.VECTOR, f"{name}.bias", (dim,), count, kv)

    def vector(self, part: Part, name: str, shape: tuple[int, ...], count: int = 1) -> None:
        self.add(part, Role.VECTOR, name, shape, count)

    def freeze(self) -> tuple[WeightTensor, ...]:
        return tuple(
            WeightTensor(part, role, name, shape, count, kv)
            for (part, role, name, shape, kv), count in self._counts.items()
        )

    @property
    def params(self) -> int:
        return sum(count * prod(key[3]) for key, count in self._counts.items())


@dataclass(frozen=True)
class _Counted:
    """What a family rule returns."""

    rule: str
    tensors: tuple[WeightTensor, ...]
    tied: bool
    exact: bool = True
    notes: tuple[str, ...] = ()
    mtp: int = 0


@dataclass(frozen=True)
class _Config:
    """The config a rule reads: the layout (per-layer heads, what-if applied) and typed lookups."""

    layout: CacheLayout
    f: Fields

    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def hidden(self) -> int:
        return self.layout.hidden_size

    def integer(self, quantity: str, keys: Sequence[str], *, minimum: int = 1) -> int:
        return self.f.integer(quantity, keys, minimum=minimum)

    def optional(self, keys: Sequence[str], *, minimum: int = 1) -> int | None:
        return self.f.optional_integer(keys[0], keys, minimum=minimum)

    def flag(self, key: str, default: bool = False) -> bool:
        return self.f.flag(key, default)

    def number(self, quantity: str, key: str) -> float:
        """A positive, finite size factor (MPT expansion_ratio): a negative or NaN one would shrink weights."""
        value = self.f.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.f.model, quantity, (key,), f"{value!r} is not a number")
        if not math.isfinite(value) or value <= 0:
            raise ConfigError(self.f.model, quantity, (key,), f"{key} = {value!r}, must be a positive number")
        return float(value)

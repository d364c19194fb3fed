"""Byte counts for people: ``1.25 GiB`` (IEC, 2^30) or ``1.34 GB`` (SI, 10^9), always labelled.

Conversion happens only for display; every computation stays in integer bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

IEC = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
SI = (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3))


def human_bytes(n: int, units: str = "iec") -> str:
    """``1.25 GiB`` (iec) or ``1.34 GB`` (si), two decimals at most; exact ``B`` below 1 KiB / 1 kB."""
    for name, size in IEC if units == "iec" else SI:
        if abs(n) >= size:
            text = f"{n / size:,.2f}".rstrip("0").rstrip(".")
            return f"{text} {name}"
    return f"{n:,} B"


def exact_and_human(n: int, units: str = "iec") -> str:
    """``1,342,177,280 B (1.25 GiB)``; just ``512 B`` when no larger unit applies."""
    human = human_bytes(n, units)
    return f"{n:,} B" if human.endswith(" B") else f"{n:,} B ({human})"


class FactorLike(Protocol):
    @property
    def value(self) -> int: ...

    @property
    def label(self) -> str: ...


def product_text(factors: Iterable[FactorLike], result: int, units: str = "iec") -> str:
    """``2 x 80 layers x 8 KV heads x 128 head_dim x 4,096 tokens x 1 seq x 2 B = 1,342,177,280 B (1.25 GiB)``."""
    parts = [f"{f.value:,} {f.label}".rstrip() for f in factors]
    return f"{' x '.join(parts)} = {exact_and_human(result, units)}"

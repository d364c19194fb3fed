"""The KV budget: how much of one GPU an engine sets aside for the KV cache, with the arithmetic that produced it.

Every command that plans from a GPU (``fit``, ``pick-g``, ``capacity``) asks the engine for its budget through
:meth:`Engine.kv_budget <kvplan.engines.base.Engine.kv_budget>`, so there is one rule per engine and one place
that states it. Engines differ in what the memory fraction applies to (:class:`BudgetBasis`): vLLM's
``gpu_memory_utilization`` is a share of the whole GPU, TensorRT-LLM's ``free_gpu_memory_fraction`` a share of
what is free once the weights and the activation peak are in memory. What is subtracted (weights, the reserve
for activations and workspaces, and any engine-specific overhead) is a list of :class:`BudgetTerm`, so an engine
can add its own terms without changing the arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from fractions import Fraction


class BudgetBasis(StrEnum):
    """What the engine's memory fraction multiplies."""

    #: ceil(usable x fraction) - terms: the fraction caps everything the engine holds (vLLM's request_memory).
    TOTAL = "total"
    #: floor((usable - terms) x fraction): the fraction applies to the memory left after the terms (TensorRT-LLM).
    FREE = "free"


@dataclass(frozen=True)
class BudgetTerm:
    """Bytes per GPU the engine holds besides the KV cache (weights, reserve, overheads), and why."""

    name: str
    bytes: int
    note: str = ""


@dataclass(frozen=True)
class KvBudget:
    """One engine's KV memory per GPU from one GPU's usable memory, with every term (all figures per GPU)."""

    engine: str
    basis: BudgetBasis
    usable_bytes: int
    fraction: Fraction
    terms: tuple[BudgetTerm, ...]
    #: Everything the engine may hold: ceil(usable x fraction) (TOTAL), or the terms plus the KV cache (FREE).
    requested_bytes: int
    #: The KV cache. Negative when nothing fits: then -kv_bytes is the shortfall.
    kv_bytes: int
    #: Where the rule comes from (engine source), in words.
    source: str
    #: Where the fraction came from (the option, or the engine's default rule with its arithmetic).
    fraction_note: str = ""
    #: The engine version whose rules produced the terms ("" when the engine names none).
    version: str = ""
    #: The engine settings the terms were computed with, and where each came from (vLLM's batch defaults).
    settings: tuple[str, ...] = ()

    @property
    def terms_bytes(self) -> int:
        return sum(t.bytes for t in self.terms)

    @property
    def free_bytes(self) -> int:
        """usable - terms: what the FREE basis multiplies."""
        return self.usable_bytes - self.terms_bytes

    def term(self, name: str) -> int:
        """The bytes of the term called ``name`` (0 when the engine has none)."""
        return sum(t.bytes for t in self.terms if t.name == name)

    def exact_text(self) -> str:
        """The rule in exact bytes on one line: ``ceil(U x 9/10) - W weights - R reserve = K B``."""
        minus = " - ".join(f"{t.bytes:,} {t.name}" for t in self.terms)
        if self.basis is BudgetBasis.FREE:
            return f"({self.usable_bytes:,} - {minus}) x {self.fraction} = {self.kv_bytes:,} B ({self.source})"
        return f"ceil({self.usable_bytes:,} x {self.fraction}) - {minus} = {self.kv_bytes:,} B"


def _ceil(value: Fraction) -> int:
    return -(-value.numerator // value.denominator)


def _floor(value: Fraction) -> int:
    return value.numerator // value.denominator


def total_fraction_budget(
    engine: str,
    usable: int,
    fraction: Fraction,
    terms: Sequence[BudgetTerm],
    source: str,
    fraction_note: str = "",
    version: str = "",
) -> KvBudget:
    """``ceil(usable x fraction) - terms``: the fraction is a share of the whole GPU."""
    requested = _ceil(usable * fraction)
    kv = requested - sum(t.bytes for t in terms)
    return KvBudget(
        engine, BudgetBasis.TOTAL, usable, fraction, tuple(terms), requested, kv, source, fraction_note, version
    )


def free_fraction_budget(
    engine: str,
    usable: int,
    fraction: Fraction,
    terms: Sequence[BudgetTerm],
    source: str,
    fraction_note: str = "",
    version: str = "",
) -> KvBudget:
    """``floor((usable - terms) x fraction)``: the fraction is a share of what the terms leave free."""
    held = sum(t.bytes for t in terms)
    kv = _floor((usable - held) * fraction)
    return KvBudget(
        engine, BudgetBasis.FREE, usable, fraction, tuple(terms), held + kv, kv, source, fraction_note, version
    )


#: The source line of the whole-GPU rule.
WHOLE_GPU = "a share of the whole GPU"

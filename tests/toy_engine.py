"""A made-up engine for tests/test_registry.py: one module and one registry line make it work in every command.

Its rules: every layer holds its tokens rounded up to 100-token slabs; the fraction applies to the whole GPU;
capacity is whole slabs of memory; verify allocates [batch, heads, slabs x 100, head_dim] per K and V.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import ClassVar

from kvplan.engines.base import Capacity, Engine, EngineOptions, LaunchPlan, Workload, cdiv
from kvplan.engines.budget import KvBudget
from kvplan.engines.ideal import bhsd_layer
from kvplan.engines.tensors import LayerTensors
from kvplan.errors import Param
from kvplan.formula import CacheTypes
from kvplan.layout import CacheLayout, LayerSpec

SLAB = 100


class ToyEngine(Engine):
    """Tokens in 100-token slabs."""

    name = "toy"
    summary = "a test engine: tokens in slabs of 100"
    label = "toy (a test engine)"
    rules_text = "every layer holds its tokens in 100-token slabs"
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {Param.BLOCK_SIZE: "100 (one slab)"}

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        held = layer.tokens_held(ctx)
        return cdiv(held, SLAB) * SLAB * batch, f"cdiv({held:,}, {SLAB}) slabs"

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        return self.whole_gpu_budget(usable, weights, reserve, fraction, work)

    def capacity(
        self,
        layout: CacheLayout,
        kv_memory: int,
        max_model_len: int,
        kv_cache_dtype: str,
        opts: EngineOptions,
        k_dtype: str | None = None,
        v_dtype: str | None = None,
    ) -> Capacity:
        one = self.estimate(layout, SLAB, 1, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=opts)
        slabs = kv_memory // one.per_gpu_bytes
        per_request = cdiv(max_model_len, SLAB)
        lines = (f"slabs = {kv_memory:,} // {one.per_gpu_bytes:,} = {slabs:,}",)
        conc = Fraction(slabs, per_request)
        return Capacity(self.name, kv_memory, max_model_len, SLAB, slabs, slabs * SLAB, conc, lines)

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        return [bhsd_layer(self, layer, ctx, batch, types, opts) for layer in stage]

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...] | None:
        return ("toy-serve", plan.model, "--slabs", str(plan.max_num_seqs))

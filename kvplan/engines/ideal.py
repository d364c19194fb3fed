"""``ideal``: what the architecture must keep: windows capped at the window, no paging, no padding, no pool."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import ClassVar

from kvplan.engines.base import Capacity, Engine, EngineOptions, LaunchPlan, Workload, _sum_slot_bytes
from kvplan.engines.budget import KvBudget
from kvplan.engines.tensors import LayerTensors, kv_pair, mla_latent, row, state_tensors
from kvplan.errors import OptionError, Param
from kvplan.formula import CacheTypes
from kvplan.layout import CacheLayout, LayerKind, LayerSpec


def ideal_capacity(
    engine: Engine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
) -> Capacity:
    """No pool and no blocks: concurrency = memory / one sequence's cost; tokens = concurrency x max_model_len
    (= memory // bytes per token when every layer grows with context)."""
    one = engine.estimate(
        layout, max_model_len, 1, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=opts
    )
    per_seq = one.per_gpu_bytes
    per_token = _sum_slot_bytes(one.largest_stage)
    lines = [f"one sequence of {max_model_len:,} tokens costs {per_seq:,} B per GPU"]
    if per_seq == 0:
        raise OptionError(Param.MAX_MODEL_LEN, f"{layout.model} caches nothing per sequence under {engine.name}")
    conc = Fraction(kv_memory, per_seq)
    lines.append(f"max concurrency = {kv_memory:,} / {per_seq:,} = {float(conc):.2f}")
    if per_seq == per_token * max_model_len:
        tokens = kv_memory // per_token
        lines.append(f"tokens = {kv_memory:,} // {per_token:,} B per token = {tokens:,}")
    else:
        tokens = conc.numerator * max_model_len // conc.denominator
        lines.append(
            f"tokens = concurrency x {max_model_len:,} = {tokens:,}: not memory / bytes-per-token, because windowed "
            "layers stop growing at their window and state layers cost a fixed amount per sequence"
        )
    return Capacity(
        engine.name, kv_memory, max_model_len, None, None, tokens, conc, tuple(lines), kv_dtype=one.types.label
    )


def bhsd_layer(
    engine: Engine, layer: LayerSpec, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
) -> LayerTensors:
    """transformers DynamicCache (and ideal): [batch, heads, seq, head_dim] per K and V."""
    b = batch
    seq, _ = engine.slots(layer, ctx, 1, opts)
    if layer.kind is LayerKind.STATE:
        return LayerTensors(layer.index, layer.kind, tuple(state_tensors(layer, types, b)))
    if layer.kind is LayerKind.MLA:
        tensors = mla_latent(layer, types, (b, 1, seq), split=True)
        if layer.indexer_head_dim:
            tensors.append(row("indexer_keys", (b, seq), layer.indexer_head_dim, types.k))
        return LayerTensors(layer.index, layer.kind, tuple(tensors))
    if not layer.kind.grows_with_context:
        return LayerTensors(layer.index, layer.kind, ())
    # [batch, heads, seq, head_dim]: heads go before seq.
    return LayerTensors(layer.index, layer.kind, tuple(kv_pair(layer, types, (b, seq), 1)), layer.q_heads, seq)


class IdealEngine(Engine):
    """The ideal accounting (the base rules unchanged): each layer keeps what attention reads, nothing more."""

    name = "ideal"
    summary = "what the architecture must keep: windows capped at the window, no paging, no padding"
    #: The README engine table's rules column (scripts/sync_readme.py writes the table from the registry).
    rules_text = (
        "every layer keeps its tokens; sliding / chunked layers at most their window; MLA one latent of "
        "`kv_lora_rank + rope` per token (no factor 2); linear-attention / SSM layers a fixed state per "
        "sequence"
    )
    #: What a plan assumes when an option is not given (the CLI's help lists these per engine).
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {
        Param.UTILIZATION: "0.90",
        Param.RESERVE_BYTES: "a stated 2 GiB",
    }
    label = "ideal (what the architecture must keep)"

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """No engine to hold anything back: the whole-GPU rule, ceil(usable x fraction) - weights - the stated
        reserve."""
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
        return ideal_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts, k_dtype, v_dtype)

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...] | None:
        """No server: the ideal engine is arithmetic, not a program to launch."""
        return None

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        """One [batch, heads, seq, head_dim] tensor per K and V, as transformers allocates."""
        return [bhsd_layer(self, layer, ctx, batch, types, opts) for layer in stage]

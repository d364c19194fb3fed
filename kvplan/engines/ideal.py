"""The ideal engine's capacity: no pool and no blocks, what the architecture must keep."""

from __future__ import annotations

from fractions import Fraction

from kvplan.engines.base import Capacity, Engine, EngineOptions, _sum_slot_bytes
from kvplan.errors import OptionError
from kvplan.layout import CacheLayout


def ideal_capacity(
    engine: Engine, layout: CacheLayout, kv_memory: int, max_model_len: int, kv_cache_dtype: str, opts: EngineOptions
) -> Capacity:
    """No pool and no blocks: concurrency = memory / one sequence's cost; tokens = concurrency x max_model_len
    (= memory // bytes per token when every layer grows with context)."""
    one = engine.estimate(layout, max_model_len, 1, kv_cache_dtype=kv_cache_dtype, opts=opts)
    per_seq = one.per_gpu_bytes
    per_token = _sum_slot_bytes(one.largest_stage)
    lines = [f"one sequence of {max_model_len:,} tokens costs {per_seq:,} B per GPU"]
    if per_seq == 0:
        raise OptionError("--max-model-len", f"{layout.model} caches nothing per sequence under {engine.name}")
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

"""TensorRT-LLM: blocks of tokens_per_block, and its capacity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

from kvplan.engines.base import Capacity, Engine, EngineOptions, cdiv, shard, split_layers
from kvplan.engines.budget import KvBudget, free_fraction_budget, weights_and_reserve
from kvplan.engines.tensors import LayerTensors, mla_latent, row, state_tensors
from kvplan.errors import OptionError, Param
from kvplan.formula import CacheTypes
from kvplan.layout import CLASSIC_KINDS, CacheLayout, LayerKind, LayerSpec


class TRTLLMEngine(Engine):
    """TensorRT-LLM PyTorch backend (tensorrt_llm/_torch/pyexecutor/resource_manager.py, _util.py,
    llmapi/llm_args.py, read at 0004396).

    - Blocks of tokens_per_block = 32 (KvCacheConfig default); a sequence holds cdiv(len, 32) blocks per layer.
    - The allocator holds ceil(H_kv / tp) heads per rank (so heads are copied when tp > H_kv); MLA keeps the whole
      latent (kv_factor 1) on every rank.
    - Capacity: get_cache_size_per_token = bytes x local layers x kv_factor x (head_dim x H_kv // tp) (MLA:
      kv_lora_rank + rope, no tp), max_tokens = kv_memory // that, blocks = max_tokens // 32. The estimator
      floors H_kv x head_dim / tp, so it under-counts (over-promises tokens) when tp > H_kv.
    - Budget: free_gpu_memory_fraction (0.9) applies to the memory left after weights and activations, not to the
      total as vLLM's gpu_memory_utilization does.
    - Sliding-window (VSWA) pools: not traced in the source read; windowed layers are held at min(len, window)
      rounded up to whole blocks (stated as an assumption in the output).
    """

    KINDS = CLASSIC_KINDS

    name = "trtllm"
    aliases = ("tensorrt-llm", "trt-llm")
    label = "trtllm"
    summary = "TensorRT-LLM paged cache: 32-token blocks, ceil(H_kv / tp) heads per rank, fraction of free memory"
    DEFAULT_BLOCK = 32
    split_kv_types = False
    TYPES = ("float16", "bfloat16", "float32", "fp8_e4m3", "nvfp4")

    def block_size(self, opts: EngineOptions) -> int:
        return opts.block_size or self.DEFAULT_BLOCK

    def shard(self, layer: LayerSpec, tp: int) -> LayerSpec:
        if tp > 1 and layer.kind.has_kv_heads:
            return replace(
                layer, q_heads=layer.q_heads // tp, k_heads=cdiv(layer.k_heads, tp), v_heads=cdiv(layer.v_heads, tp)
            )
        return shard(layer, tp)

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        held = layer.tokens_held(ctx)
        if not held:
            return 0, ""
        b = self.block_size(opts)
        blocks = cdiv(held, b)
        how = f"cdiv({held:,}, {b}) = {blocks:,} blocks of {b} tokens"
        if layer.window is not None and layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED):
            how += f" (window {layer.window:,}; VSWA pool sizing not traced: assumed min(len, window))"
        return blocks * b * batch, how

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        return [f"blocks of {self.block_size(opts)} tokens (tokens_per_block)"]

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {"tokens_per_block": self.block_size(opts)}

    def kv_budget(self, usable: int, weights: int, reserve: int, fraction: Fraction) -> KvBudget:
        """KV memory per GPU: ``floor((usable - weights - reserve) x fraction)``. KvCacheCreator._cal_max_memory
        (tensorrt_llm/_torch/pyexecutor/_util.py) computes ``int((total_gpu_memory - peak_memory + temporary KV)
        x free_gpu_memory_fraction)`` after a profiling run whose peak holds the weights and the activations:
        the fraction applies to the memory left free, not to the whole GPU."""
        terms = weights_and_reserve(weights, reserve)
        return free_fraction_budget(
            self.name, usable, fraction, terms, "TensorRT-LLM: the fraction applies to free memory"
        )

    def capacity(
        self, layout: CacheLayout, kv_memory: int, max_model_len: int, kv_cache_dtype: str, opts: EngineOptions
    ) -> Capacity:
        return trtllm_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts)

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        return [self.block_layer(layer, ctx, batch, types, opts) for layer in stage]

    def block_layer(
        self, layer: LayerSpec, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> LayerTensors:
        """TensorRT-LLM blocks: [blocks, 2, heads, tokens_per_block, head_dim] (MLA: one latent head, kv_factor 1)."""
        b = batch
        block = self.block_size(opts)
        slots, _ = self.slots(layer, ctx, b, opts)
        blocks = slots // block
        if layer.kind is LayerKind.STATE:
            return LayerTensors(layer.index, layer.kind, tuple(state_tensors(layer, types, b)))
        if layer.kind is LayerKind.MLA:
            tensors = mla_latent(layer, types, (blocks, 1, 1, block), split=False)
            if layer.indexer_head_dim:
                tensors.append(row("indexer_keys", (blocks, block), layer.indexer_head_dim, types.k))
            return LayerTensors(layer.index, layer.kind, tuple(tensors))
        if not layer.kind.grows_with_context:
            return LayerTensors(layer.index, layer.kind, ())
        same = types.k == types.v and layer.k_heads == layer.v_heads and layer.k_head_dim == layer.v_head_dim
        if same:
            tensors = [row("kv", (blocks, 2, layer.k_heads, block), layer.k_head_dim, types.k)]
        else:
            tensors = [
                row("k", (blocks, layer.k_heads, block), layer.k_head_dim, types.k),
                row("v", (blocks, layer.v_heads, block), layer.v_head_dim, types.v),
            ]
        return LayerTensors(layer.index, layer.kind, tuple(tensors))


def trtllm_capacity(
    engine: TRTLLMEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
) -> Capacity:
    """KVCacheManager.get_cache_size_per_token and calculate_max_num_blocks."""
    engine.validate(layout, opts)
    types = engine.cache_types(layout, kv_cache_dtype, None, None)
    tp = opts.tensor_parallel_size
    stage = max(split_layers(layout.layers, opts.pipeline_parallel_size), key=len)
    values = 0
    for layer in stage:
        if layer.kind is LayerKind.MLA:
            values += layer.latent_dim  # kv_factor 1, never split by tp
        elif layer.kind.grows_with_context:
            values += 2 * (layer.k_head_dim * layer.k_heads // tp)  # floors H_kv x head_dim / tp
    nvfp4 = types.k.name == "nvfp4"
    per_token = cdiv(values, 2) + cdiv(values, 16) if nvfp4 else values * types.k.element_bytes
    if per_token == 0:
        raise OptionError(Param.MAX_MODEL_LEN, f"{layout.model} has no token cache under trtllm")
    block = engine.block_size(opts)
    max_tokens = kv_memory // per_token
    num_blocks = max_tokens // block
    per_request = cdiv(max_model_len, block)
    conc = Fraction(num_blocks, per_request)
    lines = [
        f"bytes per token (get_cache_size_per_token) = {per_token:,} B",
        f"max_tokens = {kv_memory:,} // {per_token:,} = {max_tokens:,}",
        f"blocks = max_tokens // {block} = {num_blocks:,}",
        f"max concurrency = {num_blocks:,} / cdiv({max_model_len:,}, {block}) = {float(conc):.2f}",
    ]
    if any(layer.kind.has_kv_heads and tp > layer.k_heads for layer in stage):
        lines.append(
            "note: tp exceeds the KV heads: the estimator counts a fraction of a head while the allocator "
            "holds a whole one, so TensorRT-LLM promises more tokens than fit"
        )
    if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.STATE) for layer in stage):
        lines.append("note: the estimator charges every layer per token (windows and states ignored)")
    return Capacity(
        engine.name,
        kv_memory,
        max_model_len,
        block,
        num_blocks,
        num_blocks * block,
        conc,
        tuple(lines),
        kv_dtype=types.label,
    )

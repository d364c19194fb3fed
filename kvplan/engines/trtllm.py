"""TensorRT-LLM: blocks of tokens_per_block, and its capacity."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import ClassVar

from kvplan.engines.base import (
    Capacity,
    Engine,
    EngineOptions,
    LaunchPlan,
    Workload,
    cdiv,
    engine_dtype,
    fraction_text,
    shard,
)
from kvplan.engines.budget import BudgetTerm, KvBudget, free_fraction_budget
from kvplan.engines.overhead import MiB, check_experts_per_token
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
      kv_lora_rank + rope, no tp), max_tokens = kv_memory // that, blocks = ceil(max_tokens / 32). The estimator
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
    #: The flags of the engine's own server that kvplan writes or cites (each cited in :meth:`launch_command`).
    SERVER_FLAGS: ClassVar[frozenset[str]] = frozenset(
        (
            "--backend",
            "--extra_llm_api_options",
            "--kv_cache_free_gpu_memory_fraction",
            "--max_batch_size",
            "--max_num_tokens",
            "--max_seq_len",
            "--pp_size",
            "--tp_size",
        )
    )
    VERSION = "0004396"
    summary = "TensorRT-LLM paged cache: 32-token blocks, ceil(H_kv / tp) heads per rank, fraction of free memory"
    #: The README engine table's rules column (scripts/sync_readme.py writes the table from the registry).
    rules_text = (
        "blocks of 32 tokens; `ceil(H_kv / tp)` heads allocated per rank while the capacity estimator floors "
        "`H_kv x d / tp`; the KV fraction (0.9) applies to free memory after weights and activations"
    )
    #: What the engine does when an option is not given (the CLI's help lists these per engine): KvCacheConfig's
    #: tokens_per_block 32 and free_gpu_memory_fraction 0.9 (llmapi/llm_args.py).
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {
        Param.BLOCK_SIZE: "32",
        Param.UTILIZATION: "0.90 of the memory left free",
        Param.RESERVE_BYTES: "activation peak and CUDA context estimates",
    }
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

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...]:
        """`trtllm-serve MODEL` with the plan's numbers (tensorrt_llm/commands/serve.py click options): --backend
        pytorch, --max_seq_len, --max_batch_size, --tp_size, --pp_size, --kv_cache_free_gpu_memory_fraction,
        --max_num_tokens. The KV dtype and tokens_per_block have no flag: they go in the KvCacheConfig of the YAML
        file --extra_llm_api_options reads (see extra_options)."""
        opts = plan.opts
        args = [
            "trtllm-serve",
            plan.model,
            "--backend",
            "pytorch",
            "--max_seq_len",
            str(plan.max_model_len),
            "--max_batch_size",
            str(plan.max_num_seqs),
            "--tp_size",
            str(opts.tensor_parallel_size),
        ]
        if opts.pipeline_parallel_size > 1:
            args += ["--pp_size", str(opts.pipeline_parallel_size)]
        if plan.fraction is not None:
            args += ["--kv_cache_free_gpu_memory_fraction", fraction_text(plan.fraction)]
        if opts.max_num_batched_tokens is not None:
            args += ["--max_num_tokens", str(opts.max_num_batched_tokens)]
        if self.extra_options(plan):
            args += ["--extra_llm_api_options", self.EXTRA_OPTIONS_FILE]
        return tuple(args)

    EXTRA_OPTIONS_FILE = "kvplan-trtllm.yaml"
    #: KvCacheConfig.dtype values (tensorrt_llm/llmapi/llm_args.py) for kvplan's canonical dtypes.
    CACHE_DTYPES: ClassVar[dict[str, str]] = {"fp8_e4m3": "fp8", "nvfp4": "nvfp4", "bfloat16": "bfloat16"}

    def launch_notes(self, plan: LaunchPlan) -> tuple[str, ...]:
        extra = self.extra_options(plan)
        if not extra:
            return ()
        config = json.dumps(extra, sort_keys=True)
        return (f"{self.EXTRA_OPTIONS_FILE} holds (YAML; this JSON is valid YAML): {config}",)

    def extra_options(self, plan: LaunchPlan) -> dict[str, object]:
        """The kv_cache_config the YAML file for --extra_llm_api_options must hold ({} when none is needed)."""
        config: dict[str, object] = {}
        dtype = engine_dtype(plan.kv_cache_dtype, plan.auto_dtype, self.CACHE_DTYPES, "trtllm", "kv_cache_config.dtype")
        if dtype != "auto":
            config["dtype"] = dtype
        if plan.opts.block_size is not None:
            config["tokens_per_block"] = plan.opts.block_size
        return {"kv_cache_config": config} if config else {}

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        return [f"blocks of {self.block_size(opts)} tokens (tokens_per_block)"]

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {"tokens_per_block": self.block_size(opts)}

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """KV memory per GPU: ``floor((usable - weights - the held terms) x fraction)``. KvCacheCreator._cal_max_memory
        (tensorrt_llm/_torch/pyexecutor/_util.py) computes ``int((total_gpu_memory - peak_memory + temporary KV)
        x free_gpu_memory_fraction)`` after a profiling run whose peak holds the weights and the activations:
        the fraction applies to the memory left free, not to the whole GPU."""
        used, note = self.fraction_and_note(fraction, work)
        terms = self.held_terms(weights, reserve, work, used)
        version = self.version_label(work.opts) if work is not None else self.VERSION
        return free_fraction_budget(
            self.name, usable, used, terms, "TensorRT-LLM: the fraction applies to free memory", note, version
        )

    #: LlmArgs defaults (tensorrt_llm/llmapi/llm_args.py): max_num_tokens 8192 per iteration.
    MAX_NUM_TOKENS = 8192
    #: Memory in use before the profiling run that its peak (cudaMemGetInfo's total - free) also counts: the CUDA
    #: context, and NCCL communicators at tp > 1 (vLLM's startup snapshot on H100: 0.51 GiB at tp 1, 1.51 GiB
    #: at tp 2 and 4, llm-d v0.19.0 logs). Not calibrated against a TensorRT-LLM log.
    CONTEXT_MIB_TP1 = 512
    CONTEXT_MIB_TP = 1536

    def overhead_terms(self, work: Workload, fraction: Fraction) -> tuple[BudgetTerm, ...]:
        """The profiling peak besides the weights: the forward pass of max_num_tokens dummy tokens (one or a few
        context requests, so the logits are a few rows), with vLLM's widths for the MLP and fused-MoE buffers,
        and the memory outside torch. An estimate: no public log with the PyTorch backend's profiling lines
        for a known model was found (docs/engine-overhead.md)."""
        opts = work.opts
        shape = work.shape
        tp = opts.tensor_parallel_size
        tokens = opts.max_num_batched_tokens or self.MAX_NUM_TOKENS
        e = shape.activation_bytes
        forward = tokens * (3 * cdiv(shape.intermediate, tp) + 4 * shape.hidden) * e
        how = f"forward {tokens:,} x (3 x {cdiv(shape.intermediate, tp):,} + 4 x {shape.hidden:,}) x {e}"
        if shape.expert_intermediate:
            check_experts_per_token(shape)
            width = cdiv(shape.expert_intermediate, tp)
            forward += tokens * shape.experts_per_token * (3 * width + shape.hidden) * e
            how += f" + MoE {tokens:,} x {shape.experts_per_token} x (3 x {width:,} + {shape.hidden:,}) x {e}"
        context = (self.CONTEXT_MIB_TP1 if tp == 1 else self.CONTEXT_MIB_TP) * MiB
        return (
            BudgetTerm("activation peak", forward, f"{how}; estimate (max_num_tokens dummy requests, _util.py)"),
            BudgetTerm("non-torch memory", context, f"CUDA context{' + NCCL' if tp > 1 else ''}; estimate"),
        )

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
        return trtllm_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts, k_dtype, v_dtype)

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
    k_dtype: str | None = None,
    v_dtype: str | None = None,
) -> Capacity:
    """KVCacheManager.get_cache_size_per_token and calculate_max_num_blocks."""
    engine.validate(layout, opts)
    types = engine.cache_types(layout, kv_cache_dtype, k_dtype, v_dtype)
    tp = opts.tensor_parallel_size
    stage = max(engine.unsplit_stages(layout, opts), key=len)
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
    # KVCacheManager::calculateMaxNumBlocks (cpp/tensorrt_llm/batch_manager/kvCacheManager.cpp): blocksInPrimaryPool
    # = tc::ceilDiv(maxTokens, tokensPerBlock), so the last partial block is allocated too (TRT-LLM#224: "rounded up
    # to the next multiple of block size during allocation"; TRT-LLM#2268: 21.89 GiB x 0.9 / 512 KiB = 40,347
    # tokens -> 631 blocks of 64, where floor would give 630).
    num_blocks = cdiv(max_tokens, block)
    per_request = cdiv(max_model_len, block)
    conc = Fraction(num_blocks, per_request)
    lines = [
        f"bytes per token (get_cache_size_per_token) = {per_token:,} B",
        f"max_tokens = {kv_memory:,} // {per_token:,} = {max_tokens:,}",
        f"blocks = ceil(max_tokens / {block}) = {num_blocks:,} (the last partial block is allocated too)",
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

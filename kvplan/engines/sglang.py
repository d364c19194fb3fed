"""SGLang: token pools, and its capacity."""

from __future__ import annotations

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
    fp8_indexer_token_bytes,
    fraction_text,
)
from kvplan.engines.budget import BudgetTerm, KvBudget
from kvplan.engines.overhead import MiB
from kvplan.engines.tensors import LayerTensors, TensorSpec, kv_pair, mla_latent, state_tensors
from kvplan.errors import OptionError, Param, spell
from kvplan.formula import CacheTypes
from kvplan.layout import CLASSIC_KINDS, CacheLayout, LayerKind, LayerSpec


class SGLangEngine(Engine):
    """SGLang, as read in 0.5.23 (0.5.2 noted). Sources: srt/model_executor/pool_configurator.py,
    srt/mem_cache/kv_cache_configurator.py, srt/configs/model_config.py, srt/configs/mamba_utils.py.

    - Token-granular pools (--page-size 1 by default; FlashMLA 64, TRT-LLM MLA 32/64): a full layer holds ctx
      slots per request; KV heads per rank max(1, H_kv // tp) (get_num_kv_heads); sliding layers keep their window.
    - cell_size = bytes per token over all local KV layers: heads x (K dim + V dim) x bytes per layer; MLA
      (kv_lora_rank + rope) x bytes, no factor 2, no tp split; DeepSeek-V3.2's indexer adds index_head_dim +
      index_head_dim / 128 x 4 B (fp8 + scale) per layer.
    - Mamba / linear-attention state per request: conv (conv_dim / tp) x (kernel - 1) in bfloat16
      (SGLANG_MAMBA_CONV_DTYPE), SSM state in float32 unless the config's mamba_ssm_dtype says otherwise.
    - Capacity: max_total_num_tokens = rest // cell_size, aligned down to the page; hybrid SWA models split the
      budget so swa_tokens = swa_full_tokens_ratio (0.8) x full_tokens; hybrid Mamba models first carve out
      mamba_full_memory_ratio (0.9) / 1.9 of the budget for states.
    """

    KINDS = CLASSIC_KINDS

    name = "sglang"
    label = "sglang"
    #: The flags of the engine's own server that kvplan writes or cites (each cited in :meth:`launch_command`).
    SERVER_FLAGS: ClassVar[frozenset[str]] = frozenset(
        (
            "--context-length",
            "--kv-cache-dtype",
            "--max-running-requests",
            "--mem-fraction-static",
            "--model-path",
            "--page-size",
            "--pp-size",
            "--tp",
        )
    )
    summary = "SGLang token pools: cell_size per token, page 1, fp32 SSM state, SWA pool ratio 0.8"
    #: The README engine table's rules column (scripts/sync_readme.py writes the table from the registry).
    rules_text = (
        "token pool (page 1); cell = heads x (K + V dims) x layers x bytes; MLA 576 per layer; DSA indexer in"
        " fp8 + scale; SSM state fp32, conv bf16; SWA pool = 0.8 x full pool; max_running_requests 2,048 at "
        "128K on 10 GiB"
    )
    #: What the engine does when an option is not given (the CLI's help lists these per engine): ServerArgs'
    #: page_size 1 and its mem_fraction_static rule (_handle_gpu_memory_settings).
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {
        Param.BLOCK_SIZE: "1",
        Param.UTILIZATION: "by GPU memory (0.834 on an H100)",
        Param.RESERVE_BYTES: "the memory in use at start",
    }
    SWA_RATIO = Fraction(8, 10)
    MAMBA_RATIO = Fraction(9, 10)
    split_kv_types = False
    TYPES = ("float16", "bfloat16", "float32", "fp8_e4m3", "fp8_e5m2", "nvfp4", "fp8_ds_mla")

    def page(self, opts: EngineOptions) -> int:
        return opts.block_size or 1

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        return tuple(
            replace(
                layer,
                state=tuple(
                    replace(t, dtype="bfloat16") if t.name == "conv" else replace(t, dtype=t.dtype or "float32")
                    for t in layer.state
                ),
            )
            if layer.kind is LayerKind.STATE
            else layer
            for layer in layout.layers
        )

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        page = self.page(opts)
        held = layer.tokens_held(ctx)
        if not held:
            return 0, ""
        aligned = cdiv(held, page) * page
        how = f"{held:,} tokens" if page == 1 else f"cdiv({held:,}, page {page}) x {page} = {aligned:,} tokens"
        if layer.window is not None and layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED):
            how += f" (window {layer.window:,})"
        return aligned * batch, how

    def slot_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        return fp8_indexer_token_bytes(layer, types)

    VERSION = "0.5.23"

    # ServerArgs._handle_gpu_memory_settings (python/sglang/srt/server_args.py): chunked_prefill_size and
    # cuda_graph_max_bs by the GPU's memory (MiB), then mem_fraction_static = round((gpu_mem - reserved) /
    # gpu_mem, 3) with reserved = 512 + 1.5 x max(chunked_prefill_size, 2048) + 2 x cuda_graph_max_bs
    # + tp x pp / 8 x 1024 MiB, at least 10,240 MiB on GPUs over 60 GiB, + 2,048 MiB for EAGLE / MTP drafts.
    # (Multimodal models get adjust_mem_fraction_for_vlm on top: not modelled.)
    GPU_BUCKETS: ClassVar[tuple[tuple[int, int, int, int], ...]] = (
        # (below this many MiB, chunked_prefill_size, cuda_graph_max_bs at tp < 4, at tp >= 4)
        (20 * 1024, 2048, 8, 8),  # T4, 4080
        (35 * 1024, 2048, 24, 80),  # A10, 4090, 5090
        (60 * 1024, 4096, 32, 160),  # A100 40GB, L40
        (90 * 1024, 8192, 256, 512),  # H100, A100 80GB
        (160 * 1024, 8192, 256, 512),  # H20, H200
    )

    def default_fraction(self, work: Workload | None) -> tuple[Fraction, str]:
        memory = work.opts.device_memory_bytes if work is not None else None
        if work is None or memory is None:
            return Fraction(88, 100), "SGLang's mem_fraction_static without a known GPU: 0.88"
        opts = work.opts
        gpu_mem = memory / MiB
        tp, pp = opts.tensor_parallel_size, opts.pipeline_parallel_size
        chunked, small_bs, big_bs = 16384, 512, 512  # B200, MI300 and larger
        for below, c, s_bs, b_bs in self.GPU_BUCKETS:
            if gpu_mem < below:
                chunked, small_bs, big_bs = c, s_bs, b_bs
                break
        graph_bs = small_bs if tp < 4 else big_bs
        reserved = 512 + max(chunked, 2048) * 1.5 + graph_bs * 2 + tp * pp / 8 * 1024
        if gpu_mem > 60 * 1024:
            reserved = max(reserved, 10 * 1024)
        if opts.speculative_layers:
            reserved += 2 * 1024
        value = round((gpu_mem - reserved) / gpu_mem, 3)
        if value <= 0:
            raise OptionError(
                Param.UTILIZATION,
                f"SGLang's default mem_fraction_static on a {gpu_mem:,.0f} MiB GPU is {value} (it keeps "
                f"{reserved:,.0f} MiB back): pass {spell(Param.UTILIZATION)}",
            )
        how = (
            f"SGLang's mem_fraction_static: round(({gpu_mem:,.0f} - {reserved:,.0f}) / {gpu_mem:,.0f} MiB, 3) = "
            f"{value} (chunked_prefill_size {chunked}, cuda_graph_max_bs {graph_bs}, tp {tp} x pp {pp})"
        )
        return Fraction(str(value)), how

    #: Memory in use when SGLang measures the free memory its fraction applies to (init_torch_distributed returns
    #: the free memory after the CUDA context and, at tp > 1, the NCCL communicators exist): 0.51 GiB at tp 1,
    #: 1.51 GiB at tp >= 2 (the same CUDA and NCCL start-up vLLM's snapshot logs on an H100, llm-d v0.19.0).
    CONTEXT_MIB_TP1 = 522
    CONTEXT_MIB_TP = 1546

    def overhead_terms(self, work: Workload, fraction: Fraction) -> tuple[BudgetTerm, ...]:
        """SGLang keeps no activation estimate of its own: the pool is mem_fraction_static x the free memory at
        start - the weights (profile_max_num_token: rest = avail - total x (1 - mem_fraction_static)), so the
        fraction's complement holds activations and CUDA graphs back. The one term besides the weights is the
        memory already in use at start, of which the fraction is not taken."""
        tp = work.opts.tensor_parallel_size
        context = (self.CONTEXT_MIB_TP1 if tp == 1 else self.CONTEXT_MIB_TP) * MiB
        held = -(-context * fraction.numerator // fraction.denominator)
        return (
            BudgetTerm(
                "memory in use at start",
                held,
                f"{fraction} x {context:,} B (CUDA context{' + NCCL' if tp > 1 else ''}): the fraction applies to "
                "the free memory after start-up",
            ),
        )

    #: --kv-cache-dtype choices (python/sglang/srt/server_args.py, ServerArgs.add_cli_args: auto, fp8_e5m2,
    #: fp8_e4m3, bf16, bfloat16, fp4_e2m1) for kvplan's canonical dtypes.
    CACHE_DTYPES: ClassVar[dict[str, str]] = {
        "bfloat16": "bfloat16",
        "fp8_e4m3": "fp8_e4m3",
        "fp8_e5m2": "fp8_e5m2",
        "nvfp4": "fp4_e2m1",
    }

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...]:
        """`python -m sglang.launch_server` with the plan's numbers (ServerArgs.add_cli_args): --model-path,
        --context-length, --max-running-requests, --tp (alias of --tp-size), --pp-size, --mem-fraction-static,
        --kv-cache-dtype, --page-size."""
        opts = plan.opts
        dtype = engine_dtype(plan.kv_cache_dtype, plan.auto_dtype, self.CACHE_DTYPES, "sglang", "--kv-cache-dtype")
        args = [
            "python",
            "-m",
            "sglang.launch_server",
            "--model-path",
            plan.model,
            "--context-length",
            str(plan.max_model_len),
            "--max-running-requests",
            str(plan.max_num_seqs),
            "--tp",
            str(opts.tensor_parallel_size),
        ]
        if opts.pipeline_parallel_size > 1:
            args += ["--pp-size", str(opts.pipeline_parallel_size)]
        if plan.fraction is not None:
            args += ["--mem-fraction-static", fraction_text(plan.fraction)]
        args += ["--kv-cache-dtype", dtype]
        if opts.block_size is not None:
            args += ["--page-size", str(opts.block_size)]
        return tuple(args)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [f"token pool, page size {self.page(opts)} (--page-size)"]
        if any(layer.indexer_head_dim for layer in layout.layers):
            out.append("DSA indexer keys stored as fp8 + one fp32 scale per 128 values")
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("state layers: conv state in bfloat16, SSM state in float32 (SGLang's defaults)")
        return out

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """--mem-fraction-static is a share of the whole GPU (srt/model_executor/pool_configurator.py: the pools get
        what it leaves after the weights): ceil(usable x fraction) - weights - the held terms."""
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
        return sglang_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts, k_dtype, v_dtype)

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        return [self.pool_layer(layer, ctx, batch, types, opts) for layer in stage]

    def pool_layer(
        self, layer: LayerSpec, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> LayerTensors:
        """SGLang token pools: [slots, heads, head_dim] per K and V; MLA [slots, 1, latent]; the DSA indexer as
        fp8 + one fp32 scale per 128 values (uint8 rows)."""
        b = batch
        slots, _ = self.slots(layer, ctx, b, opts)
        if layer.kind is LayerKind.STATE:
            return LayerTensors(layer.index, layer.kind, tuple(state_tensors(layer, types, b)))
        if layer.kind is LayerKind.MLA:
            tensors = mla_latent(layer, types, (slots, 1), split=False)
            if layer.indexer_head_dim:
                d = layer.indexer_head_dim
                tensors.append(TensorSpec("indexer_keys", (slots, d + d // 128 * 4), "uint8"))
            return LayerTensors(layer.index, layer.kind, tuple(tensors))
        if not layer.kind.grows_with_context:
            return LayerTensors(layer.index, layer.kind, ())
        per_seq = slots // b if slots % b == 0 else 0
        attended = min(layer.tokens_held(ctx), per_seq)
        return LayerTensors(layer.index, layer.kind, tuple(kv_pair(layer, types, (slots,), 1)), layer.q_heads, attended)


def sglang_capacity(
    engine: SGLangEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
) -> Capacity:
    """profile_max_num_token / calculate_pool_sizes, HybridSWAPoolConfigurator, _handle_max_mamba_cache."""
    one = engine.estimate(layout, 1, 1, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=opts)
    stage = one.largest_stage
    page = engine.page(opts)
    full = sum(c.slot_bytes for c in stage if c.spec.kind in (LayerKind.FULL, LayerKind.MLA))
    swa = sum(c.slot_bytes for c in stage if c.spec.kind in (LayerKind.SLIDING, LayerKind.CHUNKED))
    per_req_state = sum(c.fixed_bytes for c in stage)
    lines = []
    rest = kv_memory
    max_states = None
    if per_req_state:
        budget = Fraction(rest) * engine.MAMBA_RATIO / (1 + engine.MAMBA_RATIO)
        max_states = int((budget - per_req_state) // per_req_state)
        rest -= (max_states + 1) * per_req_state
        lines.append(
            f"state per request {per_req_state:,} B; state budget = memory x 0.9 / 1.9 -> {max_states:,} "
            f"request states; {rest:,} B left for KV"
        )
    if swa:
        cell = full + engine.SWA_RATIO * swa
        max_total = int(rest // cell)
        full_tokens = max_total // page * page
        swa_tokens = int(full_tokens * engine.SWA_RATIO) // page * page
        lines.append(f"cell = {full:,} (full layers) + 0.8 x {swa:,} (sliding layers) = {float(cell):,.1f} B")
        lines.append(
            f"full_layer_tokens = {rest:,} // cell = {full_tokens:,}; swa_layer_tokens = 0.8 x that = {swa_tokens:,}"
        )
        window = max(c.spec.window or 0 for c in stage if c.spec.kind in (LayerKind.SLIDING, LayerKind.CHUNKED))
        conc = min(Fraction(full_tokens, max_model_len), Fraction(swa_tokens, min(max_model_len, window)))
        tokens = full_tokens
    else:
        if full == 0:
            raise OptionError(Param.MAX_MODEL_LEN, f"{layout.model} has no token cache under sglang")
        tokens = rest // full // page * page
        lines.append(f"cell_size = {full:,} B per token; max_total_num_tokens = {rest:,} // {full:,} = {tokens:,}")
        conc = Fraction(tokens, max_model_len)
    if max_states is not None:
        conc = min(conc, Fraction(max_states))
    running = min(max(min(int(tokens / max_model_len * 512), 4096), 2048), tokens // 2)
    lines.append(
        f"max concurrency at {max_model_len:,} tokens = {float(conc):.2f}; default max_running_requests = {running:,}"
    )
    return Capacity(
        engine.name,
        kv_memory,
        max_model_len,
        page if page > 1 else None,
        None,
        tokens,
        conc,
        tuple(lines),
        {"max_running_requests": running},
        one.types.label,
    )

"""vLLM V1: paged cache, KV cache groups, and its capacity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import ClassVar

from kvplan.engines.base import (
    Capacity,
    Engine,
    EngineOptions,
    LaunchPlan,
    LayerCost,
    Workload,
    cdiv,
    engine_dtype,
    fp8_indexer_token_bytes,
    fraction_text,
    version_tuple,
)
from kvplan.engines.budget import BudgetTerm, KvBudget
from kvplan.engines.overhead import ForwardShape, GiB, MiB, check_experts_per_token
from kvplan.engines.tensors import LayerTensors, TensorSpec, kv_pair, mla_latent, row, state_tensors, torch_dtype_name
from kvplan.errors import OptionError, Param, spell
from kvplan.formula import CacheTypes, state_bytes, token_bytes
from kvplan.layout import CLASSIC_KINDS, CacheLayout, LayerKind, LayerSpec


@dataclass(frozen=True)
class _VllmSpec:
    """What vLLM's KVCacheSpec for one layer boils down to: a page of `block` tokens (or one state)."""

    layer: LayerSpec
    block: int
    #: Bytes of one page in this layer (after padding to the unified page size).
    page: int


@dataclass(frozen=True)
class _VllmGroup:
    """One KV cache group: `size` layer slots sharing block ids (vllm/v1/core/kv_cache_planning.py)."""

    kind: LayerKind
    layers: tuple[_VllmSpec, ...]
    size: int

    @property
    def padding(self) -> int:
        return self.size - len(self.layers)


class VLLMEngine(Engine):
    """vLLM V1, as read in vLLM 0.33.0 (differences from 0.11.0 noted). Sources: vllm/v1/kv_cache_interface.py,
    vllm/v1/core/kv_cache_planning.py, vllm/v1/core/kv_cache_utils.py, vllm/config/model.py, vllm/config/vllm.py,
    vllm/platforms/interface.py, vllm/model_executor/layers/mamba/mamba_utils.py.

    - Pages: one layer's page is block_size tokens x KV heads per rank x (K dim + V dim) x bytes (MLA: one
      latent head, no V; fp8_ds_mla 656 B per token). KV heads per rank: max(1, H_kv // tp); MLA: 1 on every rank.
    - Per request, a layer reserves (max_memory_usage_bytes): full / MLA cdiv(len, B) pages; sliding
      cdiv(min(W - 1 + in_flight, len), B) + 1 pages (the +1 for a window that does not start on a block boundary);
      chunked local cdiv(min(chunk + in_flight, len), B); in_flight = max_num_batched_tokens x batches in flight
      (2 with async scheduling, the default at pp = 1; 1 in vLLM <= 0.11); Mamba / linear attention 2 (+1 for a
      Mamba2 prefill checkpoint) pages in prefix-caching "align" mode (the default), 1 page without prefix caching.
    - Hybrid models: the attention block is raised so one attention page holds a Mamba state:
      block = 16 x cdiv(mamba_page, 16 x attention_bytes_per_token), and the Mamba page is padded to it
      (Platform._align_hybrid_block_size); attention pages of different sizes are unified by scaling block sizes.
    - Groups: layers of one spec form one group; hybrid specs form groups of G layers, G = the rarest spec's count
      (or the commonest when within 1.5x of it); a spec with n layers fills cdiv(n, G) groups and the empty slots
      are "padding layers" that still take memory. A block id spans all G slots of a group.
    - Mamba state dtypes (MambaStateDtypeCalculator): conv in the model dtype, the SSM state too unless the
      config's hook sets it (Nemotron-H mamba_ssm_cache_dtype, Qwen3.5 mamba_ssm_dtype): the layout's own values.
    - Capacity: num_blocks = kv_memory // bytes_per_block (G pages); max concurrency = num_blocks / pages one
      request of max_model_len needs across groups; "GPU KV cache size" = int(concurrency x max_model_len).
    """

    KINDS = CLASSIC_KINDS

    name = "vllm"
    label = "vllm"
    #: The flags of the engine's own server that kvplan writes or cites (each cited in :meth:`launch_command`).
    SERVER_FLAGS: ClassVar[frozenset[str]] = frozenset(
        (
            "--async-scheduling",
            "--block-size",
            "--enforce-eager",
            "--gpu-memory-utilization",
            "--kv-cache-dtype",
            "--kv-cache-memory-bytes",
            "--max-model-len",
            "--max-num-batched-tokens",
            "--max-num-seqs",
            "--no-async-scheduling",
            "--pipeline-parallel-size",
            "--speculative-config",
            "--tensor-parallel-size",
        )
    )
    summary = "vLLM V1 paged cache (0.33): block_size pages per layer, heads max(1, H_kv // tp), groups"
    #: The README engine table's rules column (scripts/sync_readme.py writes the table from the registry).
    rules_text = (
        "pages of `--block-size` (16) tokens per layer; KV heads per GPU `max(1, H_kv // tp)` (heads copied "
        "when tp > H_kv); MLA latent whole on every rank; sliding layers reserve `cdiv(min(W - 1 + in-flight,"
        " len), B) + 1` pages, in-flight = `--max-num-batched-tokens` (8192) x 2 batches with async "
        "scheduling; Mamba / GDN states 2 pages (+1 Mamba2 checkpoint) with prefix caching; hybrid models "
        "raise the attention block so a page holds a state; layers grouped as vLLM groups them, padding slots"
        " included"
    )
    #: What the engine does when an option is not given (the CLI's help lists these per engine): CacheConfig's
    #: block_size 16 and gpu_memory_utilization 0.9 (vllm/config/cache.py), EngineArgs.get_batch_defaults.
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {
        Param.BLOCK_SIZE: "16",
        Param.MAX_NUM_BATCHED_TOKENS: "8,192 (2,048 under 70 GiB or on an A100)",
        Param.MAX_NUM_SEQS: "1,024 (256 under 70 GiB or on an A100)",
        Param.UTILIZATION: "0.90",
        Param.RESERVE_BYTES: "activation peak, non-torch memory, CUDA graphs",
    }
    #: The version whose rules apply unless --engine-version names an older one (oldest: 0.11).
    VERSION = "0.33.0"
    NEWEST = (0, 33, 0)
    OLDEST = (0, 11, 0)
    DEFAULT_BLOCK = 16
    split_kv_types = False
    TYPES = (
        "float16",
        "bfloat16",
        "float32",
        "fp8_e4m3",
        "fp8_e5m2",
        "int8_per_token_head",
        "fp8_per_token_head",
        "nvfp4",
        "fp8_ds_mla",
    )

    def block_size(self, opts: EngineOptions) -> int:
        return opts.block_size or self.DEFAULT_BLOCK

    def version(self, opts: EngineOptions) -> tuple[int, int, int]:
        """The vLLM version whose rules apply, as (major, minor, patch)."""
        return version_tuple(opts.engine_version or self.VERSION, self.OLDEST, self.NEWEST)

    def version_text(self, opts: EngineOptions) -> str:
        return ".".join(map(str, self.version(opts)))

    def version_label(self, opts: EngineOptions) -> str:
        return self.version_text(opts)

    def async_scheduling(self, opts: EngineOptions) -> bool:
        """--async-scheduling, else the version's default: on from vLLM 0.14.0 (its release notes: "Async
        scheduling is now enabled by default", PR #27614); off before (0.11.1's notes: "We expect
        --async-scheduling to be enabled by default in the next release")."""
        if opts.async_scheduling is not None:
            return opts.async_scheduling
        return self.version(opts) >= (0, 14, 0)

    def batch_defaults(self, opts: EngineOptions) -> tuple[int, int, str]:
        """max_num_batched_tokens and max_num_seqs as `vllm serve` defaults them, and why.

        EngineArgs.get_batch_defaults (vllm/engine/arg_utils.py): on a device of at least 70 GiB whose name has
        no "a100" (PR #17885: large batches slowed A100s down), the OPENAI_API_SERVER context takes 8,192 tokens
        and 1,024 sequences (the LLM class 16,384 / 1,024); otherwise 2,048 tokens (LLM class 8,192) and 256
        sequences. Device memory is cudaMemGetInfo's total, as the GPU catalog's usable bytes.
        """
        memory = opts.device_memory_bytes
        if memory is None:
            return 8192, 1024, f"no {spell(Param.GPU)}: vllm serve's defaults on a GPU of at least 70 GiB"
        big = memory >= 70 * GiB and "a100" not in opts.device_name.lower()
        where = "a GPU of at least 70 GiB that is not an A100" if big else "an A100 or a GPU under 70 GiB"
        tokens, seqs = (8192, 1024) if big else (2048, 256)
        return tokens, seqs, f"vllm serve's defaults on {where} (this one: {memory / GiB:.2f} GiB)"

    def batch_limits(self, opts: EngineOptions, max_model_len: int) -> tuple[int, int]:
        """The max_num_batched_tokens and max_num_seqs vLLM runs with (_set_default_max_num_seqs_and_batched_
        tokens_args: a default token budget is capped at max_num_seqs x max_model_len, a default max_num_seqs
        at the token budget)."""
        tokens, seqs, _ = self.batch_defaults(opts)
        if opts.max_num_seqs is not None:
            seqs = opts.max_num_seqs
        if opts.max_num_batched_tokens is not None:
            tokens = opts.max_num_batched_tokens
        else:
            tokens = min(seqs * max_model_len, tokens)
        if opts.max_num_seqs is None:
            seqs = min(seqs, tokens)
        return tokens, seqs

    def in_flight(self, opts: EngineOptions, max_model_len: int) -> int:
        """Tokens a sliding layer keeps beyond its window: max_num_batched_tokens x the batches in flight (2 with
        async scheduling at pp 1: the scheduler plans step n + 1 while step n runs; pp batches with pp stages)."""
        batched = self.batch_limits(opts, max_model_len)[0]
        return batched * self.batches_in_flight(opts)

    def batches_in_flight(self, opts: EngineOptions) -> int:
        pp = opts.pipeline_parallel_size
        return (2 if pp == 1 else pp) if self.async_scheduling(opts) else pp

    def pages_per_request(self, layer: LayerSpec, block: int, ctx: int, opts: EngineOptions) -> int:
        if layer.kind is LayerKind.STATE:
            if not opts.enable_prefix_caching:
                return 1
            # align mode: 2 pages + 1 prefill checkpoint for the Mamba2 mixer (mamba_mixer2.py); GDN has none.
            return 3 if any(t.name == "ssm" for t in layer.state) else 2
        if layer.kind is LayerKind.SLIDING and layer.window is not None:
            return cdiv(min(layer.window - 1 + self.in_flight(opts, ctx), ctx), block) + 1
        if layer.kind is LayerKind.CHUNKED and layer.window is not None:
            return cdiv(min(layer.window + self.in_flight(opts, ctx), ctx), block)
        return cdiv(ctx, block)

    def specs(self, layers: Sequence[LayerSpec], types: CacheTypes, opts: EngineOptions) -> list[_VllmSpec]:
        """Page size per layer after hybrid block-size alignment and page unification."""
        block = self.block_size(opts)
        cached = [layer for layer in layers if layer.kind.grows_with_context or layer.kind is LayerKind.STATE]
        attention = [layer for layer in cached if layer.kind is not LayerKind.STATE]
        states = [layer for layer in cached if layer.kind is LayerKind.STATE]
        if states and attention:
            attn_1tok = max(fp8_indexer_token_bytes(layer, types) for layer in attention)
            mamba_page = max(state_bytes(layer, types) for layer in states)
            align = 128 if any(layer.kind is LayerKind.MLA for layer in attention) else block
            raised = 16 * cdiv(align * cdiv(mamba_page, align * attn_1tok), 16)
            block = max(block, raised)
        pages = {layer.index: block * fp8_indexer_token_bytes(layer, types) for layer in attention}
        pages.update({layer.index: state_bytes(layer, types) for layer in states})
        if len(set(pages.values())) <= 1 or self.uniform_type(cached):
            # One spec, or one attention type with per-layer sizes (UniformTypeKVCacheSpecs): pages as they are.
            return [_VllmSpec(layer, block, pages[layer.index]) for layer in cached]
        # Hybrid with different page sizes (unify_kv_cache_spec_page_size): states are padded to the largest page;
        # attention layers whose page divides it get a proportionally larger block, the others are padded.
        max_page = max(pages.values())
        out = []
        for layer in cached:
            page = pages[layer.index]
            scale = 1 if layer.kind is LayerKind.STATE or max_page % page else max_page // page
            out.append(_VllmSpec(layer, block * scale, max_page))
        return out

    @staticmethod
    def uniform_type(layers: Sequence[LayerSpec]) -> bool:
        """All layers of one attention type and window (they share one group even if head counts differ)."""
        return len({(layer.kind, layer.window) for layer in layers}) == 1 and all(
            layer.kind is not LayerKind.STATE for layer in layers
        )

    def groups(self, specs: Sequence[_VllmSpec]) -> list[_VllmGroup]:
        if not specs:
            return []
        buckets: dict[tuple[object, ...], list[_VllmSpec]] = {}
        for spec in specs:
            key = (spec.layer.kind, spec.layer.window, spec.block, spec.page, spec.layer.signature())
            buckets.setdefault(key, []).append(spec)
        if len(buckets) == 1 or self.uniform_type([spec.layer for spec in specs]):
            return [_VllmGroup(specs[0].layer.kind, tuple(specs), len(specs))]
        counts = [len(b) for b in buckets.values()]
        lo, hi = min(counts), max(counts)
        size = hi if hi < 1.5 * lo else lo
        out = []
        for bucket in buckets.values():
            n_groups = cdiv(len(bucket), size)
            for g in range(n_groups):
                members = tuple(bucket[g::n_groups])  # strided, as vLLM assigns layers[i::num_groups]
                out.append(_VllmGroup(bucket[0].layer.kind, members, size))
        return out

    def stage_groups(self, layers: Sequence[LayerSpec], types: CacheTypes, opts: EngineOptions) -> list[_VllmGroup]:
        return self.groups(self.specs(layers, types, opts))

    def stage_costs(
        self, layout: CacheLayout, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> tuple[tuple[LayerCost, ...], ...]:
        """Costs per layer slot of every KV cache group, padding slots included."""
        stages = []
        for stage in self.stage_layers(layout, opts):
            costs = []
            for group in self.stage_groups(stage, types, opts):
                for spec in group.layers:
                    pages = self.pages_per_request(spec.layer, spec.block, ctx, opts)
                    if spec.layer.kind is LayerKind.STATE:
                        how = f"{pages} page(s) of {spec.page:,} B per request"
                        costs.append(LayerCost(spec.layer, 0, 0, pages * spec.page * batch, how))
                    else:
                        how = self.pages_how(spec, ctx, pages, opts)
                        per_token = spec.page // spec.block
                        costs.append(LayerCost(spec.layer, pages * spec.block * batch, per_token, 0, how))
                if group.padding:
                    first = group.layers[0]
                    pages = self.pages_per_request(first.layer, first.block, ctx, opts)
                    pad = LayerSpec(index=-1, kind=LayerKind.NONE)
                    how = f"{group.padding} padding layer(s) in a group of {group.size}: {pages} page(s) each"
                    costs.append(LayerCost(pad, 0, 0, group.padding * pages * first.page * batch, how))
            stages.append(tuple(costs))
        return tuple(stages)

    def pages_how(self, spec: _VllmSpec, ctx: int, pages: int, opts: EngineOptions) -> str:
        b = spec.block
        layer = spec.layer
        if layer.kind is LayerKind.SLIDING and layer.window is not None:
            return (
                f"cdiv(min({layer.window:,} - 1 + {self.in_flight(opts, ctx):,} in flight, {ctx:,}), {b}) + 1 = "
                f"{pages:,} pages of {b} tokens"
            )
        if layer.kind is LayerKind.CHUNKED and layer.window is not None:
            return (
                f"cdiv(min({layer.window:,} + {self.in_flight(opts, ctx):,} in flight, {ctx:,}), {b}) = "
                f"{pages:,} pages of {b} tokens"
            )
        return f"cdiv({ctx:,}, {b}) = {pages:,} pages of {b} tokens"

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [f"pages of {self.block_size(opts)} tokens per layer (--block-size; vLLM's default 16)"]
        if any(layer.kind is LayerKind.MLA for layer in layout.layers):
            out.append(
                "MLA: one latent page per layer, whole on every rank; default MLA backends page 16 "
                "(FLASH_ATTN_MLA, Hopper) or 32 (FlashInfer-MLA, Blackwell); FlashMLA 64, CUTLASS MLA 128: "
                "pass --block-size"
            )
        if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) for layer in layout.layers):
            out.append(
                f"sliding / chunked layers reserve the window plus {self.in_flight(opts, ctx):,} in-flight tokens "
                "(max_num_batched_tokens x batches in flight) per request"
            )
            out += self.settings(opts, ctx)
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            mode = (
                "align mode (prefix caching on): 2 pages, Mamba2 +1 checkpoint"
                if opts.enable_prefix_caching
                else "1 page"
            )
            out.append(f"state layers: {mode} per request; the attention block is raised so a page holds a state")
        return out

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {"block_size": self.block_size(opts), "in_flight_tokens": self.in_flight(opts, ctx)}

    #: --kv-cache-dtype values (vllm/config/cache.py CacheDType) for kvplan's canonical dtypes.
    CACHE_DTYPES: ClassVar[dict[str, str]] = {
        "bfloat16": "bfloat16",
        "float16": "float16",
        "fp8_e4m3": "fp8_e4m3",
        "fp8_e5m2": "fp8_e5m2",
        "fp8_ds_mla": "fp8_ds_mla",
        "int8_per_token_head": "int8_per_token_head",
        "fp8_per_token_head": "fp8_per_token_head",
        "nvfp4": "nvfp4",
    }

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...]:
        """`vllm serve MODEL` with the plan's numbers. Every EngineArgs field is a flag (vllm/engine/arg_utils.py,
        EngineArgs.add_cli_args): --max-model-len, --max-num-seqs, --kv-cache-dtype (CacheConfig.cache_dtype:
        auto, bfloat16, float16, fp8, fp8_e4m3, fp8_e5m2, ...), --tensor-parallel-size, --pipeline-parallel-size,
        --gpu-memory-utilization, --block-size, --max-num-batched-tokens, --enforce-eager, and bool fields as
        --x / --no-x (argparse.BooleanOptionalAction) such as --async-scheduling; --speculative-config is JSON."""
        opts = plan.opts
        dtype = engine_dtype(plan.kv_cache_dtype, plan.auto_dtype, self.CACHE_DTYPES, "vllm serve", "--kv-cache-dtype")
        args = [
            "vllm",
            "serve",
            plan.model,
            "--max-model-len",
            str(plan.max_model_len),
            "--max-num-seqs",
            str(plan.max_num_seqs),
            "--kv-cache-dtype",
            dtype,
            "--tensor-parallel-size",
            str(opts.tensor_parallel_size),
        ]
        if opts.pipeline_parallel_size > 1:
            args += ["--pipeline-parallel-size", str(opts.pipeline_parallel_size)]
        if plan.fraction is not None:
            args += ["--gpu-memory-utilization", fraction_text(plan.fraction)]
        if plan.kv_cache_memory_bytes is not None:
            # CacheConfig.kv_cache_memory_bytes: a fixed KV size that skips profiling (gpu_memory_utilization unused)
            args += ["--kv-cache-memory-bytes", str(plan.kv_cache_memory_bytes)]
        if opts.block_size is not None:
            args += ["--block-size", str(opts.block_size)]
        if opts.max_num_batched_tokens is not None:
            args += ["--max-num-batched-tokens", str(opts.max_num_batched_tokens)]
        if opts.enforce_eager:
            args.append("--enforce-eager")
        if opts.async_scheduling is not None:
            args.append("--async-scheduling" if opts.async_scheduling else "--no-async-scheduling")
        if opts.speculative_layers:
            # SpeculativeConfig (vllm/config/speculative.py): "mtp" drafts with the model's own MTP layers; an
            # EAGLE draft is its own checkpoint, which the plan does not know: the command names a placeholder.
            tokens = opts.speculative_tokens or opts.speculative_layers
            draft = "" if plan.speculative_method == "mtp" else ', "model": "<EAGLE draft checkpoint>"'
            config = f'{{"method": "{plan.speculative_method}"{draft}, "num_speculative_tokens": {tokens}}}'
            args += ["--speculative-config", config]
        return tuple(args)

    # -- the memory before the cache --------------------------------------------------------------------------
    #
    # GPUWorker.determine_available_memory (vllm/v1/worker/gpu_worker.py) gives the cache
    #   requested - (weights + torch peak increase + non-torch increase) [- the CUDA-graph estimate]
    # measured around GPUModelRunner.profile_run. kvplan predicts each term from the model's widths; the
    # constants are calibrated against 30 logged vLLM 0.19.0 startups (tests/data/engine_logs.yaml,
    # docs/engine-overhead.md has the errors).

    def activation_peak(self, shape: ForwardShape, tokens: int, seqs: int, tp: int) -> tuple[int, str]:
        """The torch peak of profile_run: a dummy forward of ``tokens`` tokens, then _dummy_sampler_run over
        min(max_num_seqs, tokens) rows of logits, which are gathered whole on every rank (so this does not shrink
        with tp: Llama-3.1-8B logged 1.89 GiB at tp 1, 2 and 4).

        - sampler: the hidden states (tokens x hidden) plus (13 + e) B per row per vocabulary entry: the logits
          in the activation dtype (e B) and about 13 B of float32 working copies (fit to the logs: 14.7-15.1 B at
          e = 2; Llama-3.1-8B in float32, e = 4: 2.20 GiB predicted, 2.21 logged);
        - forward: tokens x (3 x intermediate / tp + 4 x hidden) x e, the gate/up output, the activated half and
          the hidden / residual streams at the MLP (CodeLlama-7B, vocabulary 32,016: 0.75 GiB, 0.77 logged);
        - MoE adds the fused-MoE intermediate caches, tokens x top_k x (3 x expert width / tp + hidden) x e
          (Mixtral tp 2: 1.30 GiB predicted, 1.21 logged; Qwen3-30B-A3B 2.74 / 2.68), except for experts that
          run without them (gpt-oss MXFP4: 2.83 / 2.87 without the term).
        """
        e = shape.activation_bytes
        rows = min(seqs, tokens)
        sampler = tokens * shape.hidden * e + (13 + e) * rows * shape.vocab
        forward = tokens * (3 * cdiv(shape.intermediate, tp) + 4 * shape.hidden) * e
        how = (
            f"max(sampler {tokens:,} x {shape.hidden:,} x {e} + {13 + e} x {rows:,} rows x {shape.vocab:,} vocab, "
            f"forward {tokens:,} x (3 x {cdiv(shape.intermediate, tp):,} + 4 x {shape.hidden:,}) x {e})"
        )
        peak = max(sampler, forward)
        # gpt-oss's MXFP4 experts run through a kernel without fused-MoE caches (logged 2.87 GiB, 2.83 predicted
        # without the term, 3.36 with it).
        if shape.expert_intermediate and shape.expert_format != "mxfp4":
            check_experts_per_token(shape)
            width = cdiv(shape.expert_intermediate, tp)
            moe = tokens * shape.experts_per_token * (3 * width + shape.hidden) * e
            peak += moe
            how += f" + MoE {tokens:,} x {shape.experts_per_token} x (3 x {width:,} + {shape.hidden:,}) x {e}"
        return peak, how

    # non-torch memory growth during profiling, per GPU (logged "non-torch forward increase memory", vLLM
    # 0.19.0 on H100): 0.24-0.27 GiB at tp 1, 2.06-2.11 GiB at tp 2 and 2.13-2.21 GiB at tp 4 (the custom
    # all-reduce and NCCL buffers), 0.07 GiB on a pipeline stage without tensor parallelism.
    NON_TORCH_MIB_TP1 = 256
    NON_TORCH_MIB_TP2 = 2150
    NON_TORCH_MIB_TP4 = 2222
    NON_TORCH_MIB_PP = 72

    def non_torch(self, tp: int, pp: int) -> int:
        if tp == 1:
            return (self.NON_TORCH_MIB_TP1 if pp == 1 else self.NON_TORCH_MIB_PP) * MiB
        return (self.NON_TORCH_MIB_TP2 if tp == 2 else self.NON_TORCH_MIB_TP4) * MiB

    # CUDA graphs: vLLM >= 0.21.0 subtracts an estimate of the graph pool (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS,
    # on by default: "CUDA graph memory profiling is enabled (default since v0.21.0)"); 0.19.0 logs the estimate
    # ("Estimated CUDA graph memory: 0.84 GiB total" for Llama-3.1-8B, 51 PIECEWISE + 51 FULL sizes up to 512)
    # without subtracting it. Fit to 46 logged estimates: 320 MiB + 16 MiB per layer on the GPU (MAE 0.15 GiB).
    GRAPH_BASE_MIB = 320
    GRAPH_LAYER_MIB = 16

    def overhead_terms(self, work: Workload, fraction: Fraction) -> tuple[BudgetTerm, ...]:
        """The terms vLLM subtracts besides the weights, each with its arithmetic and source."""
        opts = work.opts
        version = self.version(opts)
        if version < (0, 17, 0):
            raise OptionError(
                Param.ENGINE_VERSION,
                f"vLLM {self.version_text(opts)}'s activation peak is not modelled (before 0.17 it was about 2.5x "
                "larger: Qwen3-14B logged 5.64 GiB in 0.16.0, 2.23 GiB in 0.17.0); pass "
                f"{spell(Param.RESERVE_BYTES)} with the torch peak + non-torch figures its startup log prints",
            )
        tp, pp = opts.tensor_parallel_size, opts.pipeline_parallel_size
        tokens, seqs = self.batch_limits(opts, work.max_model_len)
        peak, how = self.activation_peak(work.shape, tokens, seqs, tp)
        source = "GPUModelRunner.profile_run, calibrated on vLLM 0.19.0 logs"
        terms = [
            BudgetTerm("activation peak", peak, f"{how}; {source}"),
            BudgetTerm(
                "non-torch memory",
                self.non_torch(tp, pp),
                ("NCCL / custom all-reduce buffers" if tp > 1 else "cuBLAS workspaces and other memory outside torch")
                + f" at tp {tp}, pp {pp} (logged non-torch forward increase, vLLM 0.19.0 on H100)",
            ),
        ]
        if version >= (0, 21, 0) and not opts.enforce_eager:
            layers = cdiv(work.shape.layers, pp) + opts.speculative_layers
            graphs = (self.GRAPH_BASE_MIB + self.GRAPH_LAYER_MIB * layers) * MiB
            terms.append(
                BudgetTerm(
                    "CUDA graphs",
                    graphs,
                    f"{self.GRAPH_BASE_MIB} MiB + {self.GRAPH_LAYER_MIB} MiB x {layers} layers: the graph-pool "
                    "estimate vLLM >= 0.21 subtracts (--enforce-eager: none)",
                )
            )
        return tuple(terms)

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """--gpu-memory-utilization is a share of the whole GPU (request_memory, vllm/v1/worker/utils.py):
        ceil(usable x fraction), of which the KV cache gets what the weights and the profiled terms
        (:meth:`overhead_terms`) leave."""
        rule = self.whole_gpu_budget(usable, weights, reserve, fraction, work)
        if work is None or reserve is not None:
            return rule
        return replace(rule, settings=self.settings(work.opts, work.max_model_len))

    def settings(self, opts: EngineOptions, max_model_len: int) -> tuple[str, ...]:
        """The batch limits and the scheduling the terms and the sliding layers use, each with where it came from:
        the option, or vLLM's default and its rule."""
        tokens, seqs = self.batch_limits(opts, max_model_len)
        if opts.max_num_batched_tokens is not None and opts.max_num_seqs is not None:
            why = "as given"
        else:
            why = f"{self.batch_defaults(opts)[2]}; EngineArgs.get_batch_defaults"
            if opts.max_num_batched_tokens is None and tokens < self.batch_defaults(opts)[0]:
                why += f", the token budget capped at max_num_seqs x max_model_len {max_model_len:,}"
        on = self.async_scheduling(opts)
        batches = self.batches_in_flight(opts)
        given = "as given" if opts.async_scheduling is not None else f"vLLM {self.version_text(opts)}'s default"
        scheduling = f"async scheduling {'on' if on else 'off'} ({given}): {batches} batch{'es' if batches > 1 else ''}"
        return (f"max_num_batched_tokens {tokens:,}, max_num_seqs {seqs:,}: {why}", f"{scheduling} in flight")

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
        return vllm_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts, k_dtype, v_dtype)

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        """vLLM V1: per layer, ``num_blocks`` = pages per request x batch pages of the layer's (unified) page size.
        Attention [2, num_blocks, block, heads, head_dim] (FlashAttention); MLA [num_blocks, block, latent]; state
        [num_blocks, *state]; a page padded to the unified size gets a uint8 pad; padding layers are raw pages."""
        b = batch
        out: list[LayerTensors] = []
        for group in self.stage_groups(stage, types, opts):
            for spec in group.layers:
                layer, block = spec.layer, spec.block
                blocks = self.pages_per_request(layer, block, ctx, opts) * b
                tensors: list[TensorSpec]
                attended = 0
                if layer.kind is LayerKind.STATE:
                    tensors = state_tensors(layer, types, blocks)
                    natural = state_bytes(layer, types)
                elif layer.kind is LayerKind.MLA:
                    tensors = mla_latent(layer, types, (blocks, block), split=False)
                    if layer.indexer_head_dim:
                        tensors.append(row("indexer_k", (blocks, block), layer.indexer_head_dim, types.k))
                    natural = block * token_bytes(layer, types)
                else:
                    same = layer.k_heads == layer.v_heads and layer.k_head_dim == layer.v_head_dim
                    if same and torch_dtype_name(types.k) is not None:
                        tensors = [row("kv", (2, blocks, block, layer.k_heads), layer.k_head_dim, types.k)]
                        attended = layer.tokens_held(ctx)
                    else:
                        tensors = kv_pair(layer, types, (blocks, block), 2)
                    natural = block * token_bytes(layer, types)
                if spec.page > natural:
                    tensors.append(TensorSpec("page_padding", (blocks, spec.page - natural), "uint8"))
                out.append(LayerTensors(layer.index, layer.kind, tuple(tensors), layer.q_heads, attended))
            if group.padding:
                first = group.layers[0]
                pages = self.pages_per_request(first.layer, first.block, ctx, opts) * b
                pad = TensorSpec("padding_layers", (group.padding * pages, first.page), "uint8")
                out.append(LayerTensors(-1, LayerKind.NONE, (pad,)))
        return out


def vllm_capacity(
    engine: VLLMEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
) -> Capacity:
    """get_kv_cache_config_from_groups / get_max_concurrency_for_kv_cache_config / get_kv_cache_capacity."""
    engine.validate(layout, opts)
    types = engine.cache_types(layout, kv_cache_dtype, k_dtype, v_dtype)
    lines: list[str] = []
    best: tuple[Fraction, int, int, int] | None = None
    for i, stage in enumerate(engine.stage_layers(layout, opts)):
        groups = engine.stage_groups(stage, types, opts)
        per_block = max(sum(spec.page for spec in g.layers) + g.padding * g.layers[0].page for g in groups)
        num_blocks = max(kv_memory // per_block, 0)
        per_request = sum(
            engine.pages_per_request(g.layers[0].layer, g.layers[0].block, max_model_len, opts) for g in groups
        )
        conc = Fraction(num_blocks, per_request)
        where = f"stage {i}: " if opts.pipeline_parallel_size > 1 else ""
        lines.append(
            f"{where}{len(groups)} group(s); bytes per block = {per_block:,} B (one page in every layer slot "
            "of a group)"
        )
        lines.append(f"{where}num_blocks = {kv_memory:,} // {per_block:,} = {num_blocks:,} (one is the null block)")
        lines.append(f"{where}blocks one request of {max_model_len:,} tokens needs = {per_request:,}")
        if best is None or conc < best[0]:
            best = (conc, num_blocks, per_request, len(groups))
    assert best is not None
    conc, num_blocks, per_request, n_groups = best
    tokens = conc.numerator * max_model_len // conc.denominator
    block = engine.block_size(opts)
    lines.append(f"max concurrency = {num_blocks:,} / {per_request:,} = {float(conc):.2f}x")
    lines.append(
        f"GPU KV cache size = int({float(conc):.2f} x {max_model_len:,}) = {tokens:,} tokens (vLLM 0.33; "
        f"vLLM 0.11 printed (num_blocks // {n_groups} groups) x block size = "
        f"{num_blocks // n_groups * block:,})"
    )
    facts = {
        "num_groups": n_groups,
        "blocks_per_request": per_request,
        "in_flight_tokens": engine.in_flight(opts, max_model_len),
    }
    return Capacity(
        engine.name, kv_memory, max_model_len, block, num_blocks, tokens, conc, tuple(lines), facts, types.label
    )

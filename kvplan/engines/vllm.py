"""vLLM V1: paged cache, KV cache groups, and its capacity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from kvplan.engines.base import Capacity, Engine, EngineOptions, LayerCost, cdiv, fp8_indexer_token_bytes
from kvplan.engines.budget import KvBudget, whole_gpu_budget
from kvplan.engines.tensors import LayerTensors, TensorSpec, kv_pair, mla_latent, row, state_tensors, torch_dtype_name
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
    summary = "vLLM V1 paged cache (0.33): block_size pages per layer, heads max(1, H_kv // tp), groups"
    DEFAULT_BLOCK = 16
    #: vllm serve on a >= 70 GiB GPU other than A100 (engine/arg_utils.py get_batch_defaults); 2048 on smaller GPUs.
    DEFAULT_BATCHED_TOKENS = 8192
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

    def in_flight(self, opts: EngineOptions) -> int:
        batched = opts.max_num_batched_tokens or self.DEFAULT_BATCHED_TOKENS
        pp = opts.pipeline_parallel_size
        batches = (2 if pp == 1 else pp) if opts.async_scheduling else pp
        return batched * batches

    def pages_per_request(self, layer: LayerSpec, block: int, ctx: int, opts: EngineOptions) -> int:
        if layer.kind is LayerKind.STATE:
            if not opts.enable_prefix_caching:
                return 1
            # align mode: 2 pages + 1 prefill checkpoint for the Mamba2 mixer (mamba_mixer2.py); GDN has none.
            return 3 if any(t.name == "ssm" for t in layer.state) else 2
        if layer.kind is LayerKind.SLIDING and layer.window is not None:
            return cdiv(min(layer.window - 1 + self.in_flight(opts), ctx), block) + 1
        if layer.kind is LayerKind.CHUNKED and layer.window is not None:
            return cdiv(min(layer.window + self.in_flight(opts), ctx), block)
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
                f"cdiv(min({layer.window:,} - 1 + {self.in_flight(opts):,} in flight, {ctx:,}), {b}) + 1 = "
                f"{pages:,} pages of {b} tokens"
            )
        if layer.kind is LayerKind.CHUNKED and layer.window is not None:
            return (
                f"cdiv(min({layer.window:,} + {self.in_flight(opts):,} in flight, {ctx:,}), {b}) = "
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
                f"sliding / chunked layers reserve the window plus {self.in_flight(opts):,} in-flight tokens "
                "(max_num_batched_tokens x batches in flight) per request"
            )
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            mode = (
                "align mode (prefix caching on): 2 pages, Mamba2 +1 checkpoint"
                if opts.enable_prefix_caching
                else "1 page"
            )
            out.append(f"state layers: {mode} per request; the attention block is raised so a page holds a state")
        return out

    def facts(self, layout: CacheLayout, ctx: int, opts: EngineOptions) -> dict[str, int]:
        return {"block_size": self.block_size(opts), "in_flight_tokens": self.in_flight(opts)}

    def kv_budget(self, usable: int, weights: int, reserve: int, fraction: Fraction) -> KvBudget:
        """--gpu-memory-utilization is a share of the whole GPU (request_memory, vllm/v1/worker/utils.py):
        ceil(usable x fraction), of which the KV cache gets what the weights and the profiled peak leave."""
        return whole_gpu_budget(self.name, usable, weights, reserve, fraction)

    def capacity(
        self, layout: CacheLayout, kv_memory: int, max_model_len: int, kv_cache_dtype: str, opts: EngineOptions
    ) -> Capacity:
        return vllm_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts)

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
) -> Capacity:
    """get_kv_cache_config_from_groups / get_max_concurrency_for_kv_cache_config / get_kv_cache_capacity."""
    engine.validate(layout, opts)
    types = engine.cache_types(layout, kv_cache_dtype, None, None)
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
    facts = {"num_groups": n_groups, "blocks_per_request": per_request, "in_flight_tokens": engine.in_flight(opts)}
    return Capacity(
        engine.name, kv_memory, max_model_len, block, num_blocks, tokens, conc, tuple(lines), facts, types.label
    )

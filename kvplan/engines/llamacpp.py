"""llama.cpp: cells, padding, SWA cache, and its capacity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

from kvplan.dtypes import canonical_name
from kvplan.engines.base import Capacity, Engine, EngineOptions, allowed_types, cdiv, largest
from kvplan.engines.budget import KvBudget, whole_gpu_budget
from kvplan.engines.tensors import LayerTensors, row, state_tensors
from kvplan.formula import CacheTypes, resolve_types, state_bytes
from kvplan.layout import CLASSIC_KINDS, CacheLayout, LayerKind, LayerSpec


class LlamaCppEngine(Engine):
    """llama.cpp, as read at ggml-org/llama.cpp@0c1e57098 (src/llama-context.cpp, llama-kv-cache.cpp,
    llama-kv-cache-iswa.cpp, llama-memory-recurrent.cpp, ggml-common.h).

    - n_ctx (-c) is rounded up to a multiple of 256; with -np N sequences the server shares one unified stream of
      n_ctx cells (kvplan: n_ctx = ctx x batch); without --kv-unified each sequence gets pad256(n_ctx / N) cells.
    - Per layer K = row_size(type_k, head_dim x KV heads) x cells and V likewise with type_v (block formats: q8_0
      34 B per 32 values ...). -ctk / -ctv default to f16 whatever the model's dtype.
    - Sliding layers (iSWA): pad256(min(cells per stream, window x (unified ? N : 1) + n_ubatch)) cells, or full
      size with --swa-full.
    - MLA (DeepSeek2 GGUFs with the MLA keys): K only, kv_lora_rank + rope values; V is a view of K.
    - Recurrent layers: conv state (kernel - 1) x conv_dim and SSM state, both float32, one row per sequence.
    - Layers split across GPUs (-sm layer), never heads: --pipeline-parallel-size, not --tensor-parallel-size.
    """

    KINDS = CLASSIC_KINDS

    name = "llama.cpp"
    aliases = ("llamacpp", "llama-cpp")
    label = "llama.cpp"
    summary = "llama.cpp: n_ctx padded to 256 cells, K/V types apart (default f16), SWA cells window x n_seq + n_ubatch"
    shards_heads = False
    linear_in_batch = False
    PAD = 256
    TYPES = ("float32", "float16", "bfloat16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "iq4_nl")

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        base = "float16" if canonical_name(kv_cache_dtype) == "auto" else kv_cache_dtype
        types = resolve_types(layout, base, k_dtype=k, v_dtype=v)
        allowed_types(self.name, types, self.TYPES)
        return types

    def pad(self, n: int) -> int:
        return cdiv(n, self.PAD) * self.PAD

    def streams(self, batch: int, opts: EngineOptions) -> int:
        return 1 if opts.kv_unified else batch

    def cells_per_stream(self, ctx: int, batch: int, opts: EngineOptions) -> int:
        return self.pad(ctx * batch) if opts.kv_unified else self.pad(ctx)

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        return tuple(
            replace(layer, state=tuple(replace(t, dtype="float32") for t in layer.state))
            if layer.kind is LayerKind.STATE
            else layer
            for layer in layout.layers
        )

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        if not layer.kind.grows_with_context:
            return 0, ""
        cells = self.cells_per_stream(ctx, batch, opts)
        streams = self.streams(batch, opts)
        if opts.kv_unified:
            how = f"pad256({ctx:,} x {batch} seq) = {cells:,} cells"
        else:
            how = f"{streams} streams x pad256({ctx:,}) = {cells:,} cells each"
        if layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) and layer.window is not None and not opts.swa_full:
            seqs = batch if opts.kv_unified else 1
            swa = self.pad(min(cells, layer.window * seqs + opts.n_ubatch))
            how = f"pad256(min({cells:,}, {layer.window:,} x {seqs} + n_ubatch {opts.n_ubatch})) = {swa:,} cells"
            return swa * streams, how
        return cells * streams, how

    def fixed_bytes(self, layer: LayerSpec, types: CacheTypes) -> int:
        return state_bytes(layer, types)

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [
            f"n_ctx = pad256({ctx:,} x {batch}) cells"
            + (" in one unified stream" if opts.kv_unified else f"; {batch} streams of pad256({ctx:,}) cells")
        ]
        out.append("K and V types apart (-ctk / -ctv; default f16)")
        if any(layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED) for layer in layout.layers):
            out.append(
                "sliding layers: full size (--swa-full)"
                if opts.swa_full
                else f"sliding layers: window x n_seq + n_ubatch ({opts.n_ubatch}) cells, padded to 256"
            )
        if any(layer.kind is LayerKind.MLA for layer in layout.layers):
            out.append("MLA: K only (latent + rope), V is a view of K")
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("recurrent layers: conv and SSM state in float32, one row per sequence")
        return out

    def kv_budget(self, usable: int, weights: int, reserve: int, fraction: Fraction) -> KvBudget:
        """llama.cpp allocates what -c asks for; what a GPU can hold follows the whole-GPU rule,
        ceil(usable x fraction) - weights - reserve."""
        return whole_gpu_budget(self.name, usable, weights, reserve, fraction)

    def capacity(
        self, layout: CacheLayout, kv_memory: int, max_model_len: int, kv_cache_dtype: str, opts: EngineOptions
    ) -> Capacity:
        return llamacpp_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts)

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        return [self.cell_layer(layer, ctx, batch, types, opts) for layer in stage]

    def cell_layer(
        self, layer: LayerSpec, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> LayerTensors:
        """llama.cpp: K and V of ``cells`` rows of ggml_row_size(type, heads x head_dim) bytes (block types as uint8
        rows); MLA keeps K only (latent + rope); recurrent state one row per sequence."""
        b = batch
        if layer.kind is LayerKind.STATE:
            return LayerTensors(layer.index, layer.kind, tuple(state_tensors(layer, types, b)))
        cells, _ = self.slots(layer, ctx, b, opts)
        if layer.kind is LayerKind.MLA:
            tensors = [row("k", (cells,), layer.latent_dim, types.k)]
            if layer.indexer_head_dim:
                tensors.append(row("indexer_k", (cells,), layer.indexer_head_dim, types.k))
            return LayerTensors(layer.index, layer.kind, tuple(tensors))
        if not layer.kind.grows_with_context:
            return LayerTensors(layer.index, layer.kind, ())
        return LayerTensors(
            layer.index,
            layer.kind,
            (
                row("k", (cells,), layer.k_heads * layer.k_head_dim, types.k),
                row("v", (cells,), layer.v_heads * layer.v_head_dim, types.v),
            ),
        )


def llamacpp_capacity(
    engine: LlamaCppEngine,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    kv_cache_dtype: str,
    opts: EngineOptions,
) -> Capacity:
    """llama.cpp allocates what -c asks for; this finds the largest -c and -np that fit the memory."""

    def cost(ctx: int, batch: int) -> int:
        return engine.estimate(layout, ctx, batch, kv_cache_dtype=kv_cache_dtype, opts=opts).per_gpu_bytes

    cells = largest(lambda n: n == 0 or cost(n * engine.PAD, 1) <= kv_memory, 1 << 28) * engine.PAD
    seqs = largest(lambda b: b == 0 or cost(max_model_len, b) <= kv_memory, 1 << 24)
    lines = [
        f"largest -c that fits: {cells:,} cells (a multiple of 256)",
        f"largest -np with -c {max_model_len:,} per sequence: {seqs:,} sequences",
    ]
    label = engine.cache_types(layout, kv_cache_dtype, None, None).label
    return Capacity(
        engine.name, kv_memory, max_model_len, None, None, cells, Fraction(seqs), tuple(lines), kv_dtype=label
    )

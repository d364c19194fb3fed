"""llama.cpp: cells, padding, SWA cache, and its capacity."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import ClassVar

from kvplan.dtypes import canonical_name
from kvplan.engines.base import (
    Capacity,
    Engine,
    EngineOptions,
    LaunchPlan,
    LayerCost,
    Workload,
    allowed_types,
    cdiv,
    largest,
)
from kvplan.engines.budget import KvBudget
from kvplan.engines.tensors import LayerTensors, row, state_tensors
from kvplan.errors import OptionError, Param
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
    #: The flags of the engine's own server that kvplan writes or cites (each cited in :meth:`launch_command`).
    SERVER_FLAGS: ClassVar[frozenset[str]] = frozenset(
        (
            "--swa-full",
            "--spec-draft-n-max",
            "--cache-type-k",
            "--cache-type-v",
            "-c",
            "-ctk",
            "-ctv",
            "-fa",
            "-hf",
            "-kvu",
            "-m",
            "-np",
            "-ub",
        )
    )
    VERSION = "0c1e57098"
    summary = "llama.cpp: n_ctx padded to 256 cells, K/V types apart (default f16), SWA cells window x n_seq + n_ubatch"
    #: The README engine table's rules column (scripts/sync_readme.py writes the table from the registry).
    rules_text = (
        "`n_ctx` (x `-np` sequences, one unified stream) padded to 256 cells; K and V types apart "
        "(`--cache-type-k/-v`, default f16; q8_0 = 34 B per 32 values, q4_0 = 18 B per 32); SWA layers "
        "`pad256(min(n_ctx, W x n_seq + n_ubatch))` cells; MLA K only; recurrent state f32; `-c 8192`: f16 "
        "1,024 MiB, q8_0 544 MiB, q4_0 288 MiB; `-c 5000` allocates 5,120 cells"
    )
    #: What the engine does when an option is not given (the CLI's help lists these per engine): llama-server's
    #: -ub 512 and -ctk / -ctv f16 (common/common.h).
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {
        Param.N_UBATCH: "512",
        Param.K_DTYPE: "f16",
        Param.V_DTYPE: "f16",
        Param.UTILIZATION: "0.90",
        Param.RESERVE_BYTES: "a stated 2 GiB",
    }
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

    #: Families whose llama.cpp architecture keeps recurrent-state snapshots for speculative rollback
    #: (llm_arch_supports_rs_rollback: QWEN35 / QWEN35MOE; other archs clamp n_rs_seq to 0).
    ROLLBACK_FAMILIES = frozenset({"qwen3_5_text", "qwen3_5_moe_text", "qwen3_5", "qwen3_5_moe"})
    #: common_params_speculative_draft.n_max (common/common.h): tokens drafted per step by default.
    DRAFT_N_MAX = 3

    def state_rows(self, layout: CacheLayout, opts: EngineOptions) -> int:
        """Rows of recurrent state per sequence: 1 + n_rs_seq (src/llama-memory-recurrent.cpp allocates
        mem_size x (1 + n_rs_seq) rows per layer). The server sets n_rs_seq = need_n_rs_seq() = the draft's n_max
        when a model-based draft (MTP, EAGLE3, DFlash) runs on an architecture that rolls its state back."""
        if opts.speculative_layers == 0 or layout.family not in self.ROLLBACK_FAMILIES:
            return 1
        return 1 + (opts.speculative_tokens or self.DRAFT_N_MAX)

    def stage_costs(
        self, layout: CacheLayout, ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> tuple[tuple[LayerCost, ...], ...]:
        stages = super().stage_costs(layout, ctx, batch, types, opts)
        rows = self.state_rows(layout, opts)
        if rows == 1:
            return stages
        how = f"{rows} rows per sequence (1 + n_rs_seq {rows - 1} rollback snapshots for speculative decoding)"
        return tuple(
            tuple(
                replace(c, fixed_bytes=c.fixed_bytes * rows, how=how) if c.spec.kind is LayerKind.STATE else c
                for c in stage
            )
            for stage in stages
        )

    #: -ctk / -ctv values (common/arg.cpp kv_cache_types: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0, q5_1).
    CACHE_TYPES: ClassVar[dict[str, str]] = {
        "float32": "f32",
        "float16": "f16",
        "bfloat16": "bf16",
        "q8_0": "q8_0",
        "q4_0": "q4_0",
        "q4_1": "q4_1",
        "q5_0": "q5_0",
        "q5_1": "q5_1",
        "iq4_nl": "iq4_nl",
    }

    def cache_type_flag(self, name: str) -> str:
        key = canonical_name(name)
        key = "float16" if key == "auto" else key  # -ctk / -ctv default to f16 whatever the model's dtype
        if key not in self.CACHE_TYPES:
            raise OptionError(Param.K_DTYPE, f"llama-server's -ctk / -ctv have no value for {key}")
        return self.CACHE_TYPES[key]

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...]:
        """`llama-server` with the plan's numbers (common/arg.cpp): -c is the whole cache, ctx x parallel, which one
        unified stream (-kvu) shares among -np sequences; -ctk / -ctv the K and V types (a quantized V needs flash
        attention, -fa on); -hf names a Hub repo, -m a local GGUF file."""
        opts = plan.opts
        source = ["-m", self.gguf_file(plan)] if not plan.gguf or plan.model.lower().endswith(".gguf") else []
        source = source or ["-hf", plan.model]
        k = self.cache_type_flag(plan.k_dtype or plan.kv_cache_dtype)
        v = self.cache_type_flag(plan.v_dtype or plan.kv_cache_dtype)
        args = [
            "llama-server",
            *source,
            "-c",
            str(plan.max_model_len * plan.max_num_seqs),
            "-np",
            str(plan.max_num_seqs),
            "-ctk",
            k,
            "-ctv",
            v,
        ]
        if v not in ("f32", "f16", "bf16"):
            args += ["-fa", "on"]
        if opts.kv_unified and plan.max_num_seqs > 1:
            args.append("-kvu")
        if opts.n_ubatch != 512:
            args += ["-ub", str(opts.n_ubatch)]
        if opts.swa_full:
            args.append("--swa-full")
        return tuple(args)

    @staticmethod
    def gguf_file(plan: LaunchPlan) -> str:
        """The GGUF file -m loads: the model's own path, or, for a model planned from its config.json, the file a
        conversion of it would be (named after the repo; llama-server's -hf takes only repos that hold GGUF
        files, which a transformers checkpoint's does not)."""
        if plan.gguf:
            return plan.model
        return plan.model.rstrip("/").rsplit("/", 1)[-1] + ".gguf"

    def launch_notes(self, plan: LaunchPlan) -> tuple[str, ...]:
        if plan.gguf:
            return ()
        return (
            f"llama.cpp runs GGUF files and {plan.model} was planned from its config: convert the checkpoint to "
            f"{self.gguf_file(plan)} (llama.cpp's convert_hf_to_gguf.py), or give -hf a Hub repo that holds a GGUF "
            "conversion of it",
        )

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
            rows = self.state_rows(layout, opts)
            out.append(
                "recurrent layers: conv and SSM state in float32, "
                + ("one row per sequence" if rows == 1 else f"{rows} rows per sequence (1 + n_rs_seq {rows - 1})")
            )
        return out

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """llama.cpp allocates what -c asks for; what a GPU can hold follows the whole-GPU rule,
        ceil(usable x fraction) - weights - the stated reserve."""
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
        return llamacpp_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts, k_dtype, v_dtype)

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
    k_dtype: str | None = None,
    v_dtype: str | None = None,
) -> Capacity:
    """llama.cpp allocates what -c asks for; this finds the largest -c and -np that fit the memory."""

    def cost(ctx: int, batch: int) -> int:
        est = engine.estimate(
            layout, ctx, batch, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=opts
        )
        return est.per_gpu_bytes

    cells = largest(lambda n: n == 0 or cost(n * engine.PAD, 1) <= kv_memory, 1 << 28) * engine.PAD
    seqs = largest(lambda b: b == 0 or cost(max_model_len, b) <= kv_memory, 1 << 24)
    lines = [
        f"largest -c that fits: {cells:,} cells (a multiple of 256)",
        f"largest -np with -c {max_model_len:,} per sequence: {seqs:,} sequences",
    ]
    label = engine.cache_types(layout, kv_cache_dtype, k_dtype, v_dtype).label
    return Capacity(
        engine.name, kv_memory, max_model_len, None, None, cells, Fraction(seqs), tuple(lines), kv_dtype=label
    )

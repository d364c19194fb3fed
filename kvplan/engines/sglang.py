"""SGLang: token pools, and its capacity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction

from kvplan.engines.base import Capacity, Engine, EngineOptions, cdiv, fp8_indexer_token_bytes
from kvplan.engines.budget import KvBudget, whole_gpu_budget
from kvplan.engines.tensors import LayerTensors, TensorSpec, kv_pair, mla_latent, state_tensors
from kvplan.errors import OptionError, Param
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
    summary = "SGLang token pools: cell_size per token, page 1, fp32 SSM state, SWA pool ratio 0.8"
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

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = [f"token pool, page size {self.page(opts)} (--page-size)"]
        if any(layer.indexer_head_dim for layer in layout.layers):
            out.append("DSA indexer keys stored as fp8 + one fp32 scale per 128 values")
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("state layers: conv state in bfloat16, SSM state in float32 (SGLang's defaults)")
        return out

    def kv_budget(self, usable: int, weights: int, reserve: int, fraction: Fraction) -> KvBudget:
        """--mem-fraction-static is a share of the whole GPU (srt/model_executor/pool_configurator.py: the pools get
        what it leaves after the weights): ceil(usable x fraction) - weights - reserve."""
        return whole_gpu_budget(self.name, usable, weights, reserve, fraction)

    def capacity(
        self, layout: CacheLayout, kv_memory: int, max_model_len: int, kv_cache_dtype: str, opts: EngineOptions
    ) -> Capacity:
        return sglang_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts)

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
) -> Capacity:
    """profile_max_num_token / calculate_pool_sizes, HybridSWAPoolConfigurator, _handle_max_mamba_cache."""
    one = engine.estimate(layout, 1, 1, kv_cache_dtype=kv_cache_dtype, opts=opts)
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

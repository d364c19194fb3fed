"""Hugging Face transformers (DynamicCache)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from typing import ClassVar

from kvplan.engines.base import Capacity, Engine, EngineOptions, LaunchPlan, Workload
from kvplan.engines.budget import KvBudget
from kvplan.engines.ideal import bhsd_layer, ideal_capacity
from kvplan.engines.tensors import LayerTensors
from kvplan.errors import Param, spell
from kvplan.formula import CacheTypes, resolve_types
from kvplan.layout import CacheLayout, LayerKind, LayerSpec


class HFEngine(Engine):
    """Hugging Face transformers 5.x DynamicCache, exactly the tensors it holds after a forward pass.

    Rules (transformers/cache_utils.py and the model files, read at 5.23.0; checked by tests/test_oracle.py):
    - dtype: K/V in the model's own dtype (an fp32 config stays fp32: from_pretrained loads dtype "auto").
    - full layers (DynamicLayer): every token, [batch, kv_heads, seq, head_dim] for K and for V.
    - sliding and chunked layers (DynamicSlidingWindowLayer; Llama 4's chunked layers too): the last
      sliding_window - 1 tokens (window = attention_chunk_size for chunked layers).
    - MLA (DeepSeek V2/V3, Kimi-K2 as deepseek_v3): keys = the kv_lora_rank latent, values = the rope key, one
      head; V3.2 adds indexer_keys [batch, seq, index_head_dim].
    - linear attention / Mamba (LinearAttentionLayer): conv_states [batch, conv_dim, kernel] in the model dtype
      (the whole kernel, not kernel - 1) and recurrent_states in float32 (the torch kernels keep the state in
      fp32: Qwen3-Next / Qwen3.5 GatedDeltaNet, Nemotron-H Mamba2).
    - Falcon with the new decoder architecture (Falcon-40B) broadcasts K/V to all query heads before caching
      (models/falcon/modeling_falcon.py: num_kv_heads = num_heads if new_decoder_architecture).
    - DeepSeek-V4 (models/deepseek_v4/modeling_deepseek_v4.py): a sliding-only layer is a plain
      DynamicSlidingWindowLayer, so its K = V is stored twice; a CSA / HCA layer (DeepseekV4CSACache /
      DeepseekV4HCACache) keeps keys = values once for window - 1 tokens, compressed_kv per closed window, and the
      compressor's pending tokens: buffer_kv and buffer_gate of ctx % rate tokens (2 x head_dim wide for CSA's
      two overlapping series, head_dim for HCA), and for CSA overlap_kv / overlap_gate of the last window's
      rate x head_dim once a window has closed; CSA's indexer keeps the same four at index_head_dim.
    - Llama 3.2 Vision cross-attention layers (DynamicLayer): K and V of the image tokens only, nothing when
      the sequence has no image (MllamaTextModel skips the layer).
    """

    name = "hf"
    aliases = ("transformers",)
    label = "hf (transformers)"
    VERSION = "5.23.0"
    summary = "transformers DynamicCache: sliding layers keep window - 1 tokens, fp32 recurrent state"
    #: The README engine table's rules column (scripts/sync_readme.py writes the table from the registry).
    rules_text = (
        "exactly the tensors `DynamicCache` holds: sliding and chunked layers keep `window - 1` tokens, conv "
        "state the whole kernel, recurrent state float32, fp32 checkpoints stay fp32, Falcon-40B's K/V "
        "broadcast to all 128 heads; checked to the byte against transformers on the meta device for every "
        "buildable bundled config (`tests/test_oracle.py`)"
    )
    #: What a plan assumes when an option is not given (the CLI's help lists these per engine).
    FLAG_DEFAULTS: ClassVar[Mapping[Param, str]] = {
        Param.UTILIZATION: "0.90",
        Param.RESERVE_BYTES: "a stated 2 GiB",
    }
    single_process = True

    def cache_types(self, layout: CacheLayout, kv_cache_dtype: str, k: str | None, v: str | None) -> CacheTypes:
        return resolve_types(layout, kv_cache_dtype, k_dtype=k, v_dtype=v, keep_fp32=True)

    @staticmethod
    def broadcasts_heads(layout: CacheLayout) -> bool:
        return layout.falcon_new_decoder

    def prepare(self, layout: CacheLayout) -> tuple[LayerSpec, ...]:
        layers = []
        for layer in layout.layers:
            if self.broadcasts_heads(layout) and layer.kind.has_kv_heads:
                layer = replace(layer, k_heads=layer.q_heads, v_heads=layer.q_heads)
            if layer.kind is LayerKind.SLIDING and layer.v_heads == 0:
                layer = replace(layer, v_heads=layer.k_heads, v_head_dim=layer.k_head_dim)
            if layer.kind is LayerKind.STATE:
                layer = replace(
                    layer,
                    state=tuple(
                        replace(t, shape=(t.shape[0], t.shape[1] + 1))
                        if t.name == "conv"
                        else replace(t, dtype="float32")
                        for t in layer.state
                    ),
                )
            layers.append(layer)
        return tuple(layers)

    def slots(self, layer: LayerSpec, ctx: int, batch: int, opts: EngineOptions) -> tuple[int, str]:
        if layer.kind.windowed and layer.window is not None:
            return min(ctx, layer.window - 1) * batch, f"min(ctx {ctx:,}, window {layer.window:,} - 1)"
        return super().slots(layer, ctx, batch, opts)

    def compressed_bytes(self, layer: LayerSpec, ctx: int, types: CacheTypes) -> int:
        if layer.kind is not LayerKind.COMPRESSED:
            return 0
        rate, row = layer.compress_ratio, types.k.row_bytes
        dims = (layer.k_head_dim, layer.indexer_head_dim) if layer.indexer_head_dim else (layer.k_head_dim,)
        csa = len(dims) == 2
        series = 2 if csa else 1  # CSA projects two overlapping series per token
        entries, pending = divmod(ctx, rate)
        total = 0
        for dim in dims:
            total += entries * row(dim)  # compressed_kv
            total += 2 * pending * row(series * dim)  # buffer_kv + buffer_gate
            if csa and entries:
                total += 2 * rate * row(dim)  # overlap_kv + overlap_gate
        return total

    def rules(self, layout: CacheLayout, ctx: int, batch: int, opts: EngineOptions) -> list[str]:
        out = []
        if any(layer.kind.windowed for layer in layout.layers):
            out.append("sliding / chunked layers keep the last window - 1 tokens (DynamicSlidingWindowLayer)")
        if any(layer.kind is LayerKind.COMPRESSED for layer in layout.layers):
            out.append(
                "DeepSeek-V4: compressed entries plus the compressor's pending tokens (buffer, gate) and, for CSA, "
                "the last window's overlap (DeepseekV4CSACache / DeepseekV4HCACache)"
            )
        if any(layer.kind is LayerKind.STATE for layer in layout.layers):
            out.append("linear-attention / SSM layers: conv state of the whole kernel, recurrent state in float32")
        if layout.dtype == "float32":
            out.append(
                "K/V in float32: transformers keeps the checkpoint's dtype "
                f"(pass {spell(Param.KV_CACHE_DTYPE)} to change)"
            )
        if self.broadcasts_heads(layout):
            out.append("Falcon new decoder architecture: K/V broadcast to every query head before caching")
        return out

    def kv_budget(
        self, usable: int, weights: int, reserve: int | None, fraction: Fraction | None, work: Workload | None = None
    ) -> KvBudget:
        """transformers allocates as it goes; the plan keeps the whole-GPU rule, ceil(usable x fraction) - weights
        - the stated reserve."""
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
        """No pool and no blocks: as many sequences as their DynamicCache tensors fit (the ideal arithmetic)."""
        return ideal_capacity(self, layout, kv_memory, max_model_len, kv_cache_dtype, opts, k_dtype, v_dtype)

    def launch_command(self, plan: LaunchPlan) -> tuple[str, ...] | None:
        """No server: transformers is a library (generate), not a program to launch."""
        return None

    def stage_tensors(
        self, stage: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, opts: EngineOptions
    ) -> list[LayerTensors]:
        """DynamicCache: [batch, kv_heads, seq, head_dim] for K and for V (MLA: keys latent, values rope)."""
        return [bhsd_layer(self, layer, ctx, batch, types, opts) for layer in stage]

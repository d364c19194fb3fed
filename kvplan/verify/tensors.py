"""The tensors an engine holds, layer by layer, from the layer specs alone (pure: no torch)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from math import prod
from typing import TYPE_CHECKING

from kvplan.dtypes import StorageType
from kvplan.engines import Engine, LlamaCppEngine, SGLangEngine, TRTLLMEngine, VLLMEngine, get_engine
from kvplan.formula import CacheTypes, state_bytes, token_bytes
from kvplan.layout import LayerKind, LayerSpec
from kvplan.units import human_bytes

if TYPE_CHECKING:
    pass
from kvplan.verify.plans import VerifyPlan

#: kvplan storage name -> torch dtype name, for types whose values torch stores natively. Every other type
#: (block-scaled, with per-token scales, packed formats) is stored as uint8 rows of its exact byte size.
TORCH_DTYPES: dict[str, str] = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "fp8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
    "int8": "int8",
}


#: Bytes per element of the torch dtypes verify allocates (checked against torch's own element_size).
ITEMSIZE: dict[str, int] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int8": 1,
    "uint8": 1,
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to allocate: a name within its layer, a shape, and a torch dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * ITEMSIZE[self.dtype]

    def describe(self) -> str:
        return f"{self.name} [{', '.join(map(str, self.shape))}] {self.dtype} ({human_bytes(self.nbytes)})"


@dataclass(frozen=True)
class LayerTensors:
    """The tensors one layer holds on one GPU for the whole batch (index -1: a vLLM padding layer)."""

    index: int
    kind: LayerKind
    tensors: tuple[TensorSpec, ...]
    #: Query heads of the layer (after tensor parallelism), for the decode-attention timing.
    q_heads: int = 0
    #: Tokens one decode step attends to per sequence (0: not an attention layer verify can time).
    attended: int = 0

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def torch_dtype_name(store: StorageType) -> str | None:
    """The torch dtype that stores ``store`` natively, or None for a type stored as uint8 rows."""
    return TORCH_DTYPES.get(store.name) if store.is_plain else None


def _row(name: str, prefix: tuple[int, ...], values: int, store: StorageType) -> TensorSpec:
    """A tensor of rows of ``values`` values: native dtype when torch has one, else uint8 rows of row_bytes."""
    dtype = torch_dtype_name(store)
    if dtype is not None:
        return TensorSpec(name, (*prefix, values), dtype)
    return TensorSpec(name, (*prefix, store.row_bytes(values)), "uint8")


def _state_tensors(layer: LayerSpec, types: CacheTypes, rows: int) -> list[TensorSpec]:
    out = []
    for t in layer.state:
        store = types.activation if t.dtype is None else _storage(t.dtype)
        dtype = torch_dtype_name(store)
        if dtype is None:
            out.append(TensorSpec(t.name, (rows, t.elements * store.element_bytes), "uint8"))
        else:
            out.append(TensorSpec(t.name, (rows, *t.shape), dtype))
    return out


def _storage(name: str) -> StorageType:
    from kvplan.dtypes import STORAGE_TYPES

    return STORAGE_TYPES[name]


def _mla_latent(layer: LayerSpec, types: CacheTypes, prefix: tuple[int, ...], split: bool) -> list[TensorSpec]:
    """An MLA layer's per-token latent: keys (kv_lora_rank) and values (rope) apart when ``split`` (transformers),
    else one latent row; packed types (fp8_ds_mla, nvfp4) as one uint8 row of the format's bytes per token."""
    if types.k.name == "fp8_ds_mla":
        # An opaque packed row (fp8 latent + fp32 scales + bf16 rope): its bytes per token are the format's.
        packed = token_bytes(replace(layer, indexer_head_dim=0), types)
        return [TensorSpec("latent", (*prefix, packed), "uint8")]
    if split and torch_dtype_name(types.k) is not None:
        return [_row("keys", prefix, layer.kv_lora_rank, types.k), _row("values", prefix, layer.rope_dim, types.k)]
    return [_row("latent", prefix, layer.latent_dim, types.k)]


def _kv_pair(layer: LayerSpec, types: CacheTypes, prefix: tuple[int, ...], heads_axis: int) -> list[TensorSpec]:
    """K and V as ``prefix`` with the layer's head count inserted at ``heads_axis``, then the head dim."""
    k_prefix = (*prefix[:heads_axis], layer.k_heads, *prefix[heads_axis:])
    v_prefix = (*prefix[:heads_axis], layer.v_heads, *prefix[heads_axis:])
    return [_row("k", k_prefix, layer.k_head_dim, types.k), _row("v", v_prefix, layer.v_head_dim, types.v)]


def _bhsd_layer(engine: Engine, layer: LayerSpec, plan: VerifyPlan, types: CacheTypes) -> LayerTensors:
    """transformers DynamicCache (and ideal): [batch, heads, seq, head_dim] per K and V."""
    b = plan.batch
    seq, _ = engine.slots(layer, plan.ctx, 1, plan.opts)
    if layer.kind is LayerKind.STATE:
        return LayerTensors(layer.index, layer.kind, tuple(_state_tensors(layer, types, b)))
    if layer.kind is LayerKind.MLA:
        tensors = _mla_latent(layer, types, (b, 1, seq), split=True)
        if layer.indexer_head_dim:
            tensors.append(_row("indexer_keys", (b, seq), layer.indexer_head_dim, types.k))
        return LayerTensors(layer.index, layer.kind, tuple(tensors))
    if not layer.kind.grows_with_context:
        return LayerTensors(layer.index, layer.kind, ())
    # [batch, heads, seq, head_dim]: heads go before seq.
    return LayerTensors(layer.index, layer.kind, tuple(_kv_pair(layer, types, (b, seq), 1)), layer.q_heads, seq)


def _pool_layer(engine: Engine, layer: LayerSpec, plan: VerifyPlan, types: CacheTypes) -> LayerTensors:
    """SGLang token pools: [slots, heads, head_dim] per K and V; MLA [slots, 1, latent]; the DSA indexer as
    fp8 + one fp32 scale per 128 values (uint8 rows)."""
    b = plan.batch
    slots, _ = engine.slots(layer, plan.ctx, b, plan.opts)
    if layer.kind is LayerKind.STATE:
        return LayerTensors(layer.index, layer.kind, tuple(_state_tensors(layer, types, b)))
    if layer.kind is LayerKind.MLA:
        tensors = _mla_latent(layer, types, (slots, 1), split=False)
        if layer.indexer_head_dim:
            d = layer.indexer_head_dim
            tensors.append(TensorSpec("indexer_keys", (slots, d + d // 128 * 4), "uint8"))
        return LayerTensors(layer.index, layer.kind, tuple(tensors))
    if not layer.kind.grows_with_context:
        return LayerTensors(layer.index, layer.kind, ())
    per_seq = slots // b if slots % b == 0 else 0
    attended = min(layer.tokens_held(plan.ctx), per_seq)
    return LayerTensors(layer.index, layer.kind, tuple(_kv_pair(layer, types, (slots,), 1)), layer.q_heads, attended)


def _trtllm_layer(engine: TRTLLMEngine, layer: LayerSpec, plan: VerifyPlan, types: CacheTypes) -> LayerTensors:
    """TensorRT-LLM blocks: [blocks, 2, heads, tokens_per_block, head_dim] (MLA: one latent head, kv_factor 1)."""
    b = plan.batch
    block = engine.block_size(plan.opts)
    slots, _ = engine.slots(layer, plan.ctx, b, plan.opts)
    blocks = slots // block
    if layer.kind is LayerKind.STATE:
        return LayerTensors(layer.index, layer.kind, tuple(_state_tensors(layer, types, b)))
    if layer.kind is LayerKind.MLA:
        tensors = _mla_latent(layer, types, (blocks, 1, 1, block), split=False)
        if layer.indexer_head_dim:
            tensors.append(_row("indexer_keys", (blocks, block), layer.indexer_head_dim, types.k))
        return LayerTensors(layer.index, layer.kind, tuple(tensors))
    if not layer.kind.grows_with_context:
        return LayerTensors(layer.index, layer.kind, ())
    same = types.k == types.v and layer.k_heads == layer.v_heads and layer.k_head_dim == layer.v_head_dim
    if same:
        tensors = [_row("kv", (blocks, 2, layer.k_heads, block), layer.k_head_dim, types.k)]
    else:
        tensors = [
            _row("k", (blocks, layer.k_heads, block), layer.k_head_dim, types.k),
            _row("v", (blocks, layer.v_heads, block), layer.v_head_dim, types.v),
        ]
    return LayerTensors(layer.index, layer.kind, tuple(tensors))


def _llamacpp_layer(engine: LlamaCppEngine, layer: LayerSpec, plan: VerifyPlan, types: CacheTypes) -> LayerTensors:
    """llama.cpp: K and V of ``cells`` rows of ggml_row_size(type, heads x head_dim) bytes (block types as uint8
    rows); MLA keeps K only (latent + rope); recurrent state one row per sequence."""
    b = plan.batch
    if layer.kind is LayerKind.STATE:
        return LayerTensors(layer.index, layer.kind, tuple(_state_tensors(layer, types, b)))
    cells, _ = engine.slots(layer, plan.ctx, b, plan.opts)
    if layer.kind is LayerKind.MLA:
        tensors = [_row("k", (cells,), layer.latent_dim, types.k)]
        if layer.indexer_head_dim:
            tensors.append(_row("indexer_k", (cells,), layer.indexer_head_dim, types.k))
        return LayerTensors(layer.index, layer.kind, tuple(tensors))
    if not layer.kind.grows_with_context:
        return LayerTensors(layer.index, layer.kind, ())
    return LayerTensors(
        layer.index,
        layer.kind,
        (
            _row("k", (cells,), layer.k_heads * layer.k_head_dim, types.k),
            _row("v", (cells,), layer.v_heads * layer.v_head_dim, types.v),
        ),
    )


def _vllm_stage(
    engine: VLLMEngine, stage: Sequence[LayerSpec], plan: VerifyPlan, types: CacheTypes
) -> list[LayerTensors]:
    """vLLM V1: per layer, ``num_blocks`` = pages per request x batch pages of the layer's (unified) page size.
    Attention [2, num_blocks, block, heads, head_dim] (FlashAttention); MLA [num_blocks, block, latent]; state
    [num_blocks, *state]; a page padded to the unified size gets a uint8 pad; padding layers are raw pages."""
    b = plan.batch
    out: list[LayerTensors] = []
    for group in engine.stage_groups(stage, types, plan.opts):
        for spec in group.layers:
            layer, block = spec.layer, spec.block
            blocks = engine.pages_per_request(layer, block, plan.ctx, plan.opts) * b
            tensors: list[TensorSpec]
            attended = 0
            if layer.kind is LayerKind.STATE:
                tensors = _state_tensors(layer, types, blocks)
                natural = state_bytes(layer, types)
            elif layer.kind is LayerKind.MLA:
                tensors = _mla_latent(layer, types, (blocks, block), split=False)
                if layer.indexer_head_dim:
                    tensors.append(_row("indexer_k", (blocks, block), layer.indexer_head_dim, types.k))
                natural = block * token_bytes(layer, types)
            else:
                same = layer.k_heads == layer.v_heads and layer.k_head_dim == layer.v_head_dim
                if same and torch_dtype_name(types.k) is not None:
                    tensors = [_row("kv", (2, blocks, block, layer.k_heads), layer.k_head_dim, types.k)]
                    attended = layer.tokens_held(plan.ctx)
                else:
                    tensors = _kv_pair(layer, types, (blocks, block), 2)
                natural = block * token_bytes(layer, types)
            if spec.page > natural:
                tensors.append(TensorSpec("page_padding", (blocks, spec.page - natural), "uint8"))
            out.append(LayerTensors(layer.index, layer.kind, tuple(tensors), layer.q_heads, attended))
        if group.padding:
            first = group.layers[0]
            pages = engine.pages_per_request(first.layer, first.block, plan.ctx, plan.opts) * b
            pad = TensorSpec("padding_layers", (group.padding * pages, first.page), "uint8")
            out.append(LayerTensors(-1, LayerKind.NONE, (pad,)))
    return out


def _stage_tensors(plan: VerifyPlan, stage: Sequence[LayerSpec], types: CacheTypes) -> list[LayerTensors]:
    engine = get_engine(plan.engine)
    if isinstance(engine, VLLMEngine):
        return _vllm_stage(engine, stage, plan, types)
    if isinstance(engine, LlamaCppEngine):
        return [_llamacpp_layer(engine, layer, plan, types) for layer in stage]
    if isinstance(engine, SGLangEngine):
        return [_pool_layer(engine, layer, plan, types) for layer in stage]
    if isinstance(engine, TRTLLMEngine):
        return [_trtllm_layer(engine, layer, plan, types) for layer in stage]
    return [_bhsd_layer(engine, layer, plan, types) for layer in stage]


def cache_tensors(plan: VerifyPlan) -> tuple[LayerTensors, ...]:
    """The tensors one GPU of the plan's pipeline stage (``plan.stage``, else the largest) holds, built from the
    layer specs and the engine's own rules (tokens, pages, cells), never from the estimate's byte figures."""
    engine = get_engine(plan.engine)
    engine.validate(plan.layout, plan.opts)
    types = engine.cache_types(plan.layout, plan.kv_cache_dtype, None, None)
    stages = [_stage_tensors(plan, stage, types) for stage in engine.stage_layers(plan.layout, plan.opts)]
    if plan.stage is not None:
        return tuple(stages[plan.stage])
    sizes = [sum(layer.nbytes for layer in stage) for stage in stages]
    return tuple(stages[sizes.index(max(sizes))])

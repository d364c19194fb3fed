"""Check a plan on a real torch device: allocate the cache an engine would hold and compare bytes exactly.

For every plan (a layout, ctx, batch, KV dtype and engine) this module

1. builds the tensors the engine stores, layer by layer, from the layer specs alone (:func:`cache_tensors`):
   transformers / ideal ``[batch, kv_heads, seq, head_dim]`` for K and for V (MLA: keys ``[batch, 1, seq,
   kv_lora_rank]``, values ``[batch, 1, seq, rope]``); vLLM pages ``[2, num_blocks, block_size, kv_heads,
   head_dim]`` (FlashAttention), MLA ``[num_blocks, block_size, latent]``, state ``[pages, *state]``; llama.cpp
   rows ``[cells, heads x head_dim]``; SGLang token pools; TensorRT-LLM blocks. Block-scaled or scaled types
   (q8_0, nvfp4, ``*_per_token_head``, fp8_ds_mla) are uint8 rows of their exact byte size;
2. allocates them (weights first, when the plan carries weight bytes), writes into every byte so the memory is
   committed, and measures: tensor bytes, storage bytes, and the allocator (CUDA / MPS) or the process's
   resident memory (CPU) before and after;
3. checks that the tensor bytes equal the engine estimate's ``per_gpu_bytes`` exactly, that a plan predicted
   to fit does fit and one predicted not to fit runs out of memory (which layer, how far it got), and,
   optionally, probes the largest batch that really fits and times one decode step of attention.

Allocator rounding, reserve and resident memory are reported beside the comparison, never folded into it.
``max_bytes`` is a software cap on what verify allocates: passing it raises the same out-of-memory result as
the device would, so the out-of-memory and probe paths run on a CPU with small shapes.

torch is imported inside the functions that need it (:func:`import_torch`), never at module import: kvplan
works without it, and ``kvplan verify`` says to ``pip install "kvplan[verify]"``. Nothing here prints.
"""

from __future__ import annotations

import gc
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from math import prod
from typing import TYPE_CHECKING, Any

from kvplan.dtypes import StorageType
from kvplan.engines import (
    Engine,
    EngineEstimate,
    EngineOptions,
    LlamaCppEngine,
    SGLangEngine,
    TRTLLMEngine,
    VLLMEngine,
    get_engine,
)
from kvplan.errors import DeviceUnavailableError, KvplanError, OptionError, TorchMissingError, UnknownGPUError
from kvplan.formula import CacheTypes, check_positive, state_bytes, token_bytes, with_kv_heads
from kvplan.layout import CacheLayout, LayerKind, LayerSpec
from kvplan.units import exact_and_human, human_bytes

if TYPE_CHECKING:
    import torch

    from kvplan.gpus import GpuEntry

MiB = 2**20
GiB = 2**30

#: ``on_progress(task, done, total)``: ``task`` names the plan and the phase ("Llama-2-7B G=32",
#: "Llama-2-7B G=32: probe batch 4", "Llama-2-7B G=32: timing"); ``done`` of ``total`` layers (or repeats).
ProgressCallback = Callable[[str, int, int], None]

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

#: The byte verify writes everywhere: a normal (not subnormal) value in every float type it allocates
#: (fp16 1.06, bf16 / fp32 0.0115, fp8 e4m3 1.5, e5m2 1.0), so timing never runs on denormals.
FILL_BYTE = 0x3C

#: Self-check scaling keeps this share of the available memory for the plan (the rest absorbs allocator
#: rounding and the timing's query / output tensors).
HEADROOM = (9, 10)

LLAMA2_7B = "meta-llama/Llama-2-7b-hf"
LLAMA2_13B = "meta-llama/Llama-2-13b-hf"


def import_torch() -> Any:
    """torch, or :class:`~kvplan.errors.TorchMissingError` naming ``pip install "kvplan[verify]"``."""
    try:
        import torch
    except ImportError:
        raise TorchMissingError() from None
    return torch


# ----------------------------------------------------------------------------------------------------------
# Plans


def auto_device() -> str:
    """``cuda`` when torch sees a CUDA device, else ``mps``, else ``cpu``."""
    torch = import_torch()
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@dataclass(frozen=True)
class VerifyPlan:
    """One cache to allocate: a layout (with any --kv-heads what-if applied), ctx, batch, KV dtype and engine."""

    name: str
    layout: CacheLayout
    ctx: int
    batch: int = 1
    kv_cache_dtype: str = "auto"
    engine: str = "ideal"
    opts: EngineOptions = field(default_factory=EngineOptions)
    #: Weight bytes per GPU to allocate before the cache (0: cache only).
    weights_bytes: int = 0
    #: A size the plan is known to have (the self-check's textbook 2 GiB, 512 MiB, 64 MiB), checked too.
    nominal_bytes: int | None = None
    #: Probe the largest batch that really fits at this ctx.
    probe: bool = False
    #: Time one decode step over the allocated cache.
    timing: bool = True
    #: How the plan was made or scaled, in words ("batch 32 -> 2 to fit 2.7 GiB; weights left out ...").
    note: str = ""

    @property
    def kv_heads(self) -> int | None:
        return self.layout.kv_heads if self.layout.attention_layers else None

    @property
    def model(self) -> str:
        return self.layout.model

    def with_batch(self, batch: int) -> VerifyPlan:
        return replace(self, batch=batch)


def predict(plan: VerifyPlan, batch: int | None = None) -> EngineEstimate:
    """The engine's estimate for the plan (at ``batch`` when given): what verify checks the device against."""
    batch = plan.batch if batch is None else batch
    engine = get_engine(plan.engine)
    return engine.estimate(plan.layout, plan.ctx, batch, kv_cache_dtype=plan.kv_cache_dtype, opts=plan.opts)


def _weights_for(layout: CacheLayout, kv_heads: int | None, dtype: str | None, opts: EngineOptions) -> tuple[int, str]:
    """Weight bytes per GPU (0 and a note when the config does not say enough to count them)."""
    from kvplan.weights import weight_bytes

    try:
        est = weight_bytes(layout, dtype=dtype, kv_heads=kv_heads)
    except KvplanError as err:
        return 0, f"weights not counted ({err}): cache only"
    per_gpu = est.bytes_per_gpu(opts.tensor_parallel_size)
    pp = opts.pipeline_parallel_size
    if pp > 1:
        return -(-per_gpu // pp), f"weights per GPU ~ ceil({per_gpu:,} / {pp} stages) (stages not weighed apart)"
    return per_gpu, ""


def plan_for_model(
    model: str | CacheLayout,
    *,
    ctx: int | None = None,
    batch: int = 1,
    kv_cache_dtype: str = "auto",
    kv_heads: int | None = None,
    engine: str = "ideal",
    opts: EngineOptions | None = None,
    weights: bool = True,
    probe: bool = True,
    name: str | None = None,
) -> VerifyPlan:
    """A plan for one model (a name :func:`kvplan.load_model` resolves, or a layout), as ``kvplan verify
    --model`` builds it: the --kv-heads what-if applied, ctx defaulting to the model's maximum, weight bytes
    per GPU in the serving dtype (``weights=False``: cache only)."""
    from kvplan.plan import default_context
    from kvplan.resolve import load_model

    layout = load_model(model) if isinstance(model, str) else model
    opts = opts or EngineOptions()
    own = layout
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    ctx_value, _ = default_context(layout, ctx)
    check_positive("--batch", batch)
    get_engine(engine)  # an unknown engine is a usage error now, not mid-run
    weights_bytes, note = _weights_for(own, kv_heads, None, opts) if weights else (0, "")
    g = f" G={layout.kv_heads}" if layout.attention_layers and layout.kv_heads else ""
    label = name or f"{layout.model}{g} ctx {ctx_value:,} x {batch}"
    return VerifyPlan(
        name=label,
        layout=layout,
        ctx=ctx_value,
        batch=batch,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        opts=opts,
        weights_bytes=weights_bytes,
        probe=probe,
        note=note,
    )


def _budget(available_bytes: int) -> int:
    return available_bytes * HEADROOM[0] // HEADROOM[1]


def scale_to_fit(plan: VerifyPlan, available_bytes: int) -> VerifyPlan:
    """The plan scaled down to what ``available_bytes`` hold (90% of it, see HEADROOM): weights dropped when they
    take half the budget or more, then the batch halved, then ctx halved, until weights + cache fit. The note
    says what changed."""
    budget = _budget(available_bytes)
    steps: list[str] = []
    weights = plan.weights_bytes
    cache = predict(plan).per_gpu_bytes
    if weights + cache <= budget:
        return plan
    if weights and weights * 2 >= budget:
        steps.append(f"weights ({human_bytes(weights)}) left out")
        weights = 0
    batch, ctx = plan.batch, plan.ctx
    scaled = replace(plan, weights_bytes=weights)
    while weights + predict(scaled).per_gpu_bytes > budget and (batch > 1 or ctx > 1):
        if batch > 1:
            batch = max(1, batch // 2)
        else:
            ctx = max(1, ctx // 2)
        scaled = replace(scaled, batch=batch, ctx=ctx)
    if batch != plan.batch:
        steps.append(f"batch {plan.batch} -> {batch}")
    if ctx != plan.ctx:
        steps.append(f"ctx {plan.ctx:,} -> {ctx:,}")
    why = (
        f"scaled to fit {human_bytes(budget)} (90% of {human_bytes(available_bytes)} available): "
        f"{'; '.join(steps)}; the unscaled plan needs {human_bytes(plan.weights_bytes + cache)}"
    )
    return replace(scaled, note="; ".join(x for x in (plan.note, why) if x))


def self_check_plans(available_bytes: int) -> list[VerifyPlan]:
    """The self-check suite: Llama-2-7B's shape at G = 32, 8 and 1 (ctx 4,096, batch 1, fp16: 2 GiB, 512 MiB,
    64 MiB under transformers' layout, each timed), and the reference pick-g scenario (Llama-2-13B, ctx 65,536,
    batch 32, G = 1, fp16, vLLM pages) scaled to ``available_bytes``, with a capacity probe.

    Weights (fp16) are included where they fit beside the cache in 90% of ``available_bytes``; otherwise the
    plan is cache only and its note says so.
    """
    from kvplan.resolve import load_model

    budget = _budget(available_bytes)
    plans = []
    llama7 = load_model(LLAMA2_7B)
    for g, nominal in ((32, 2 * GiB), (8, 512 * MiB), (1, 64 * MiB)):
        weights, note = _weights_for(llama7, g, "float16", EngineOptions())
        if weights + nominal > budget:
            note = f"weights ({human_bytes(weights)}) left out: with the cache they pass {human_bytes(budget)}"
            weights = 0
        plans.append(
            VerifyPlan(
                name=f"Llama-2-7B G={g}",
                layout=with_kv_heads(llama7, g),
                ctx=4096,
                batch=1,
                kv_cache_dtype="float16",
                engine="hf",
                weights_bytes=weights,
                nominal_bytes=nominal,
                note=note,
            )
        )
    llama13 = load_model(LLAMA2_13B)
    weights, note = _weights_for(llama13, 1, "float16", EngineOptions())
    pick_g = VerifyPlan(
        name="pick-g Llama-2-13B G=1",
        layout=with_kv_heads(llama13, 1),
        ctx=65536,
        batch=32,
        kv_cache_dtype="float16",
        engine="vllm",
        weights_bytes=weights,
        probe=True,
        # Timed through the three G plans above; a 65,536-token step over 40 layers takes most of a minute on
        # a CPU, where no bandwidth figure exists to compare with anyway.
        timing=False,
        note=note,
    )
    plans.append(scale_to_fit(pick_g, available_bytes))
    return plans


# ----------------------------------------------------------------------------------------------------------
# The tensors an engine holds (pure: no torch)


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
    """The tensors one GPU of the plan's largest pipeline stage holds, built from the layer specs and the
    engine's own rules (tokens, pages, cells), never from the estimate's byte figures."""
    engine = get_engine(plan.engine)
    engine.validate(plan.layout, plan.opts)
    types = engine.cache_types(plan.layout, plan.kv_cache_dtype, None, None)
    stages = [_stage_tensors(plan, stage, types) for stage in engine.stage_layers(plan.layout, plan.opts)]
    sizes = [sum(layer.nbytes for layer in stage) for stage in stages]
    return tuple(stages[sizes.index(max(sizes))])


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Check:
    """One prediction set against the device. ``ok`` False means the prediction is refuted."""

    name: str
    plan: str
    #: "cache_bytes" | "nominal_bytes" | "fits" | "max_batch"
    kind: str
    predicted_bytes: int
    measured_bytes: int
    ok: bool
    detail: str

    @property
    def difference_bytes(self) -> int:
        """measured - predicted."""
        return self.measured_bytes - self.predicted_bytes


@dataclass(frozen=True)
class OutOfMemory:
    """Where an allocation ran out of memory: the device's error, or the software cap (``max_bytes``)."""

    #: The layer whose tensor failed; None when the weights themselves did not fit.
    layer: int | None
    layer_kind: str
    tensor: str
    requested_bytes: int
    #: What verify held when it failed (weights + cache tensors so far).
    allocated_bytes: int
    #: The cap that was hit, or the device's free memory when the plan began.
    limit_bytes: int | None
    #: "max_bytes" (the software cap) or "device".
    source: str
    message: str

    def describe(self) -> str:
        where = "the weights" if self.layer is None else f"layer {self.layer} ({self.layer_kind})"
        limit = f" of the {exact_and_human(self.limit_bytes)} limit" if self.limit_bytes is not None else ""
        cap = "the --max-bytes cap" if self.source == "max_bytes" else "the device"
        return (
            f"out of memory at {where}, tensor {self.tensor} ({human_bytes(self.requested_bytes)}), "
            f"with {exact_and_human(self.allocated_bytes)} already held{limit} ({cap})"
        )


@dataclass(frozen=True)
class MemoryMeasure:
    """What one plan's allocation measured (weights + cache, all tensors alive)."""

    #: Sum of numel x element_size over the cache tensors.
    cache_tensor_bytes: int
    weights_bytes: int
    #: Sum of untyped_storage().nbytes() over every tensor (weights included).
    storage_bytes: int
    tensors: int
    #: CUDA / MPS: allocator-reported bytes after minus before (None on CPU).
    allocated_delta: int | None
    #: CUDA: memory_reserved after minus before; MPS: driver-allocated memory after minus before.
    reserved_delta: int | None
    #: CPU: growth of the process's resident memory (/proc/self/statm) while allocating and writing.
    resident_delta: int | None
    #: The same, in words, for the report.
    notes: tuple[str, ...] = ()

    @property
    def allocator_rounding_bytes(self) -> int | None:
        """Allocator bytes beyond the tensors' storage (None where the device has no allocator counter)."""
        return None if self.allocated_delta is None else self.allocated_delta - self.storage_bytes


@dataclass(frozen=True)
class LayerResult:
    index: int
    kind: str
    predicted_bytes: int
    measured_bytes: int
    tensors: tuple[str, ...]


@dataclass(frozen=True)
class TimingResult:
    """One decode step of scaled-dot-product attention over every timed layer of the allocated cache."""

    plan: str
    kv_heads: int | None
    layers: int
    batch: int
    tokens: int
    #: K and V bytes one step reads.
    cache_bytes_read: int
    median_seconds: float | None
    repeats: int
    warmup: int
    achieved_bytes_per_second: float | None
    #: The catalog's memory bandwidth for this device (None on CPU or when the catalog has no figure).
    catalog_bytes_per_second: float | None
    note: str = ""


@dataclass(frozen=True)
class ProbeResult:
    """The largest batch that really fits at the plan's ctx, beside the largest the prediction allows."""

    plan: str
    ctx: int
    #: Memory the cache could use during the probe (after the weights): min(free, cap - weights).
    memory_bytes: int
    weights_bytes: int
    predicted_max_batch: int
    predicted_bytes: int
    measured_max_batch: int
    #: Cache tensor bytes of the largest batch that fitted (0 when none did).
    measured_bytes: int
    #: (batch, fitted) in the order tried: doubling, then bisection.
    trials: tuple[tuple[int, bool], ...]
    note: str = ""


@dataclass(frozen=True)
class PlanResult:
    """One plan on the device."""

    name: str
    model: str
    engine: str
    ctx: int
    batch: int
    kv_heads: int | None
    kv_dtype: str
    note: str
    #: The engine estimate's per_gpu_bytes (sum of the largest stage's LayerCost.total).
    predicted_bytes: int
    #: Bytes of the cache tensors as planned (torch element sizes x shapes), allocated or not.
    planned_bytes: int
    weights_bytes: int
    #: min(device free memory when the plan began, the cap less what verify already held).
    available_bytes: int
    predicted_fits: bool
    fits: bool
    out_of_memory: OutOfMemory | None
    measured: MemoryMeasure | None
    layers: tuple[LayerResult, ...]
    timing: TimingResult | None = None
    probe: ProbeResult | None = None


@dataclass(frozen=True)
class CatalogComparison:
    """The device's total memory beside the catalog entry for it."""

    gpu_id: str
    gpu_name: str
    catalog_usable_bytes: int | None
    device_total_bytes: int
    #: device total - catalog usable_bytes (None when the entry has no usable_bytes).
    difference_bytes: int | None
    #: The catalog line(s) that should change, or "" when none should.
    suggestion: str
    bandwidth_tbps: float | None


@dataclass(frozen=True)
class DeviceInfo:
    """The device verify runs on, and the memory it may use."""

    #: "cuda:0", "cpu", "mps".
    device: str
    kind: str
    name: str
    torch_version: str
    total_bytes: int | None
    free_bytes: int | None
    #: The software cap (max_bytes, or the CPU default), None when only the device limits.
    cap_bytes: int | None
    cap_note: str
    #: min(free, cap): what a plan may use.
    available_bytes: int
    catalog: CatalogComparison | None
    catalog_note: str


@dataclass(frozen=True)
class VerifyReport:
    """Everything ``kvplan verify`` shows. ``ok``: every check held; ``refuted``: the checks that did not."""

    device: DeviceInfo
    plans: tuple[PlanResult, ...]
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def refuted(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    @property
    def refuted_checks(self) -> tuple[Check, ...]:
        return self.refuted

    @property
    def timings(self) -> tuple[TimingResult, ...]:
        return tuple(p.timing for p in self.plans if p.timing is not None)

    @property
    def probes(self) -> tuple[ProbeResult, ...]:
        return tuple(p.probe for p in self.plans if p.probe is not None)


# ----------------------------------------------------------------------------------------------------------
# The device


_DEVICE = re.compile(r"^(cpu|mps|cuda)(?::(\d+))?$")


def parse_device(text: str) -> tuple[str, int | None]:
    """``cuda`` / ``cuda:N`` / ``cpu`` / ``mps`` -> (kind, index)."""
    match = _DEVICE.match(text.strip().lower())
    if not match or (match.group(2) is not None and match.group(1) != "cuda"):
        raise OptionError("--device", f"expected cuda, cuda:N, cpu or mps; got {text!r}")
    index = match.group(2)
    return match.group(1), None if index is None else int(index)


def _open(torch: Any, text: str) -> tuple[Any, str]:
    """The torch.device for ``text`` after checking it exists, and its canonical name."""
    kind, index = parse_device(text)
    if kind == "cuda":
        if not torch.cuda.is_available():
            if getattr(torch.version, "cuda", None) is None:
                why = f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build of torch"
            else:
                why = "CUDA is not available: no NVIDIA driver or GPU is visible to torch"
            raise DeviceUnavailableError(text, why)
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if index is None else index
        if index >= count:
            raise DeviceUnavailableError(
                text, f"there {'is' if count == 1 else 'are'} {count} CUDA device(s): 0-{count - 1}"
            )
        return torch.device("cuda", index), f"cuda:{index}"
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise DeviceUnavailableError(
                text, "MPS is not available (it needs Apple silicon, macOS 12.3+ and a torch built with MPS)"
            )
        return torch.device("mps"), "mps"
    return torch.device("cpu"), "cpu"


def _meminfo(key: str) -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _sysconf(name: str) -> int | None:
    try:
        pages, size = os.sysconf(name), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return pages * size if pages > 0 and size > 0 else None


def _resident_bytes() -> int | None:
    """The process's resident memory (Linux /proc/self/statm), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _memory(torch: Any, dev: Any) -> tuple[int | None, int | None]:
    """(total, free) bytes of the device: cudaMemGetInfo; MPS's recommended maximum less what the driver holds;
    CPU physical memory and MemAvailable."""
    if dev.type == "cuda":
        free, total = torch.cuda.mem_get_info(dev)
        return int(total), int(free)
    if dev.type == "mps":
        total = int(torch.mps.recommended_max_memory())
        return total, max(0, total - int(torch.mps.driver_allocated_memory()))
    free = _meminfo("MemAvailable") or _sysconf("SC_AVPHYS_PAGES")
    return _sysconf("SC_PHYS_PAGES"), free


def _device_name(torch: Any, dev: Any) -> str:
    if dev.type == "cuda":
        return str(torch.cuda.get_device_name(dev))
    if dev.type == "mps":
        return "Apple MPS"
    import platform

    return platform.processor() or platform.machine() or "CPU"


def compare_catalog(entry: GpuEntry, total: int) -> CatalogComparison:
    """The device's torch total beside the entry's usable_bytes, and what the catalog line should become."""
    usable = entry.usable_bytes
    diff = None if usable is None else total - usable
    mib, whole = divmod(total, MiB)
    suggestion = ""
    if diff:
        at = f"configs/gpus.yaml (id {entry.id})"
        if whole == 0:
            torch_line = f"torch_total_mib_min: {mib} and usable_bytes: {total} (= {mib:,} x 2^20)"
        else:
            torch_line = f"usable_source: measured and usable_bytes: {total} (not a whole MiB)"
        if entry.usable_source == "torch":
            lo, hi = entry.torch_total_mib_min, entry.torch_total_mib_max
            if total < (usable or 0):
                suggestion = f"{at}: this device has less than the lowest torch total seen: {torch_line}"
            elif whole == 0 and (hi is None or mib > hi) and lo is not None:
                suggestion = f"{at}: torch_total_mib_max: {mib} (usable_bytes stays the lowest seen, {lo:,} MiB)"
        else:
            suggestion = (
                f"{at}: usable_source is {entry.usable_source!r}; a torch figure is better evidence: "
                f"usable_source: torch, {torch_line}"
            )
    return CatalogComparison(entry.id, entry.name, usable, total, diff, suggestion, entry.bandwidth_tbps)


def open_device(device: str = "cpu", *, max_bytes: int | None = None, gpu: str | None = None) -> DeviceInfo:
    """Import torch, check the device exists, read its memory and compare it with the GPU catalog.

    ``gpu`` names the catalog entry to compare with (default: the entry for torch's device name). On a CPU
    without ``max_bytes`` verify caps itself at half of MemAvailable: the kernel would kill the process, not
    raise, if it ran out.
    """
    parse_device(device)
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1):
        raise OptionError("--max-bytes", f"must be a positive size, e.g. 3GiB; got {max_bytes!r}")
    torch = import_torch()
    dev, canonical = _open(torch, device)
    total, free = _memory(torch, dev)
    cap, cap_note = max_bytes, ""
    if max_bytes is not None:
        cap_note = f"--max-bytes {exact_and_human(max_bytes)}: a software cap on what verify allocates"
    elif dev.type == "cpu":
        cap = (free or total or 0) // 2
        cap_note = (
            f"no --max-bytes on a CPU: verify allocates at most half of the available RAM, {exact_and_human(cap)} "
            "(running out of RAM kills the process instead of raising)"
        )
    limits = [x for x in (free, cap) if x is not None]
    available = min(limits) if limits else 0
    name = _device_name(torch, dev)
    comparison, catalog_note = None, ""
    if dev.type == "cuda" or gpu is not None:
        from kvplan.gpus import load_catalog

        catalog = load_catalog()
        entry = catalog.lookup(gpu if gpu is not None else name)
        if gpu is not None and entry is None:
            raise UnknownGPUError(gpu, catalog.suggestions(gpu))
        if entry is None:
            catalog_note = f"{name!r} is not in the GPU catalog: add it (kvplan gpus lists the catalog)"
        elif dev.type != "cuda" or total is None:
            catalog_note = f"{entry.id}: the device is {canonical}, so its memory is not compared with the catalog"
        else:
            comparison = compare_catalog(entry, total)
    else:
        catalog_note = f"{canonical}: not a catalog device (no memory or bandwidth figure to compare)"
    return DeviceInfo(
        device=canonical,
        kind=dev.type,
        name=name,
        torch_version=str(torch.__version__),
        total_bytes=total,
        free_bytes=free,
        cap_bytes=cap,
        cap_note=cap_note,
        available_bytes=available,
        catalog=comparison,
        catalog_note=catalog_note,
    )


# ----------------------------------------------------------------------------------------------------------
# Allocation with a software cap


class _OutOfMemoryError(Exception):
    def __init__(self, oom: OutOfMemory) -> None:
        super().__init__(oom.describe())
        self.oom = oom


def _is_oom(torch: Any, err: BaseException) -> bool:
    oom_types = tuple(t for t in (getattr(torch, "OutOfMemoryError", None),) if isinstance(t, type))
    if oom_types and isinstance(err, oom_types):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


class _Arena:
    """Every tensor verify holds, the bytes they take, and the cap. ``release`` drops them all."""

    def __init__(self, torch: Any, dev: Any, cap: int | None, device_limit: int | None) -> None:
        self.torch = torch
        self.dev = dev
        self.cap = cap
        self.device_limit = device_limit
        self.tensors: list[torch.Tensor] = []
        self.layers: dict[int, dict[str, torch.Tensor]] = {}
        self.used = 0

    def allocate(self, spec: TensorSpec, layer: int | None, kind: str, *, write: bool) -> None:
        """Allocate ``spec`` (and write FILL_BYTE into every byte when ``write``), or raise _OutOfMemoryError.
        The new tensor is only ever referenced from the arena, so release() frees it even mid-interrupt."""
        torch = self.torch
        need = spec.nbytes
        if self.cap is not None and self.used + need > self.cap:
            raise _OutOfMemoryError(
                OutOfMemory(
                    layer,
                    kind,
                    spec.name,
                    need,
                    self.used,
                    self.cap,
                    "max_bytes",
                    f"{self.used:,} + {need:,} B would pass the {self.cap:,} B cap",
                )
            )
        try:
            self.tensors.append(torch.empty(spec.shape, dtype=getattr(torch, spec.dtype), device=self.dev))
        except Exception as err:
            if not _is_oom(torch, err):
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise _OutOfMemoryError(
                OutOfMemory(layer, kind, spec.name, need, self.used, self.device_limit, "device", first)
            ) from None
        if write:
            self.tensors[-1].view(torch.uint8).fill_(FILL_BYTE)
        if layer is not None:
            named = self.layers.setdefault(layer, {})
            key, n = spec.name, 1
            while key in named:  # vLLM's padding layers of several groups all sit at index -1
                n += 1
                key = f"{spec.name}#{n}"
            named[key] = self.tensors[-1]
        self.used += self.tensors[-1].nelement() * self.tensors[-1].element_size()

    def release(self, *, collect: bool = True) -> None:
        """Drop every reference and hand the memory back (``collect``: also run the cycle collector, ~0.1 s)."""
        self.tensors.clear()
        self.layers.clear()
        self.used = 0
        if collect:
            gc.collect()
        _empty_cache(self.torch, self.dev)


def _empty_cache(torch: Any, dev: Any) -> None:
    """Give freed memory back: the CUDA / MPS caching allocator's blocks, or on a CPU glibc's free heap pages
    (malloc_trim), so the next plan's measurements start from a clean slate."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
    elif dev.type == "mps":
        torch.mps.synchronize()
        torch.mps.empty_cache()
    else:
        _malloc_trim()


@cache
def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None elsewhere (looked up once: find_library may run ldconfig)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None
    return trim


def _malloc_trim() -> None:
    trim = _libc_malloc_trim()
    if trim is not None:
        trim(0)


def _counters(torch: Any, dev: Any) -> tuple[int | None, int | None, int | None]:
    """(allocated, reserved, resident) now."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        return int(torch.cuda.memory_allocated(dev)), int(torch.cuda.memory_reserved(dev)), None
    if dev.type == "mps":
        torch.mps.synchronize()
        return int(torch.mps.current_allocated_memory()), int(torch.mps.driver_allocated_memory()), None
    return None, None, _resident_bytes()


def _delta(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def _available(torch: Any, dev: Any, cap: int | None) -> tuple[int, int | None]:
    """(what a plan may use now, the device's free memory now)."""
    _, free = _memory(torch, dev)
    limits = [x for x in (free, cap) if x is not None]
    return (min(limits) if limits else 0), free


# ----------------------------------------------------------------------------------------------------------
# Running one plan


def _by_index(items: Iterable[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for index, value in items:
        out[index] = out.get(index, 0) + value
    return out


def _layer_results(
    est: EngineEstimate, tensors: Sequence[LayerTensors], measured: dict[int, int] | None
) -> tuple[LayerResult, ...]:
    predicted = _by_index((c.spec.index, c.total) for c in est.largest_stage)
    planned = _by_index((layer.index, layer.nbytes) for layer in tensors)
    kinds = {c.spec.index: c.spec.kind.value for c in est.largest_stage}
    kinds.update({layer.index: layer.kind.value for layer in tensors})
    names: dict[int, list[str]] = {}
    for layer in tensors:
        names.setdefault(layer.index, []).extend(t.describe() for t in layer.tensors)
    got = planned if measured is None else measured
    order = sorted(set(predicted) | set(got), key=lambda i: (i < 0, i))
    return tuple(
        LayerResult(i, kinds.get(i, ""), predicted.get(i, 0), got.get(i, 0), tuple(names.get(i, ()))) for i in order
    )


def _bytes_check(plan: VerifyPlan, predicted: int, measured: int, how: str, layers: Sequence[LayerResult]) -> Check:
    ok = predicted == measured
    if ok:
        detail = f"predicted {exact_and_human(predicted)} = {how} {exact_and_human(measured)}"
    else:
        diff = measured - predicted
        detail = f"{how} {exact_and_human(measured)} vs predicted {exact_and_human(predicted)}: {diff:+,} B"
        wrong = next((layer for layer in layers if layer.predicted_bytes != layer.measured_bytes), None)
        if wrong is not None:
            where = "padding layers" if wrong.index < 0 else f"layer {wrong.index} ({wrong.kind})"
            detail += (
                f"; first difference at {where}: predicted {wrong.predicted_bytes:,} B, "
                f"measured {wrong.measured_bytes:,} B ({wrong.measured_bytes - wrong.predicted_bytes:+,} B)"
            )
    return Check(f"{plan.name}: cache bytes", plan.name, "cache_bytes", predicted, measured, ok, detail)


def _fit_check(plan: VerifyPlan, need: int, available: int, fits: bool, held: int, oom: OutOfMemory | None) -> Check:
    predicted_fits = need <= available
    says = "fits" if predicted_fits else "does not fit"
    head = f"predicted: {says} ({exact_and_human(need)} needed, {exact_and_human(available)} available)"
    if fits:
        seen = f"allocated and written {exact_and_human(held)}: it fits"
    else:
        assert oom is not None
        seen = oom.describe()
    agree = "as predicted" if predicted_fits == fits else "REFUTED"
    return Check(
        f"{plan.name}: fits", plan.name, "fits", need, held, predicted_fits == fits, f"{head}; {seen}: {agree}"
    )


def _run_plan(
    torch: Any,
    dev: Any,
    plan: VerifyPlan,
    cap: int | None,
    *,
    timing: bool,
    repeats: int,
    warmup: int,
    time_budget_s: float,
    bandwidth_tbps: float | None,
    on_progress: ProgressCallback | None,
) -> tuple[PlanResult, list[Check]]:
    est = predict(plan)
    tensors = cache_tensors(plan)
    predicted = est.per_gpu_bytes
    planned = sum(layer.nbytes for layer in tensors)
    available, free = _available(torch, dev, cap)
    need = plan.weights_bytes + predicted
    arena = _Arena(torch, dev, cap, free)
    before = _counters(torch, dev)
    oom: OutOfMemory | None = None
    measured: MemoryMeasure | None = None
    timing_result: TimingResult | None = None
    measured_layers: dict[int, int] | None = None
    count = len(tensors)
    try:
        try:
            if plan.weights_bytes:
                arena.allocate(TensorSpec("weights", (plan.weights_bytes,), "uint8"), None, "weights", write=True)
            for n, layer in enumerate(tensors):
                for spec in layer.tensors:
                    if spec.nbytes:
                        arena.allocate(spec, layer.index, layer.kind.value, write=True)
                if on_progress is not None:
                    on_progress(plan.name, n + 1, count)
        except _OutOfMemoryError as err:
            oom = err.oom
        held = arena.used
        if oom is None:
            after = _counters(torch, dev)
            weights = plan.weights_bytes
            cache_bytes = sum(t.nelement() * t.element_size() for i in arena.layers for t in arena.layers[i].values())
            storage = sum(t.untyped_storage().nbytes() for t in arena.tensors)
            measured_layers = {
                i: sum(t.nelement() * t.element_size() for t in named.values()) for i, named in arena.layers.items()
            }
            measured = _measure(cache_bytes, weights, storage, len(arena.tensors), before, after)
            if timing and plan.timing:
                timing_result = _time_decode(
                    torch, dev, plan, tensors, arena, repeats, warmup, time_budget_s, bandwidth_tbps, on_progress
                )
    finally:
        arena.release()
    layers = _layer_results(est, tensors, measured_layers)
    checks = []
    if measured is not None:
        checks.append(_bytes_check(plan, predicted, measured.cache_tensor_bytes, "measured tensor bytes", layers))
    else:
        checks.append(
            _bytes_check(plan, predicted, planned, "tensor bytes from the shapes (not allocated in full)", layers)
        )
    cache_measured = measured.cache_tensor_bytes if measured is not None else planned
    if plan.nominal_bytes is not None:
        ok = plan.nominal_bytes == cache_measured
        checks.append(
            Check(
                f"{plan.name}: textbook size",
                plan.name,
                "nominal_bytes",
                plan.nominal_bytes,
                cache_measured,
                ok,
                f"2 x L x H_kv x d_head x seq x batch x bytes = {exact_and_human(plan.nominal_bytes)}; "
                f"tensors {exact_and_human(cache_measured)}"
                + ("" if ok else f" ({cache_measured - plan.nominal_bytes:+,} B)"),
            )
        )
    checks.append(_fit_check(plan, need, available, oom is None, held, oom))
    result = PlanResult(
        name=plan.name,
        model=plan.model,
        engine=est.engine,
        ctx=plan.ctx,
        batch=plan.batch,
        kv_heads=plan.kv_heads,
        kv_dtype=est.types.label,
        note=plan.note,
        predicted_bytes=predicted,
        planned_bytes=planned,
        weights_bytes=plan.weights_bytes,
        available_bytes=available,
        predicted_fits=need <= available,
        fits=oom is None,
        out_of_memory=oom,
        measured=measured,
        layers=layers,
        timing=timing_result,
    )
    return result, checks


def _measure(
    cache_bytes: int,
    weights: int,
    storage: int,
    count: int,
    before: tuple[int | None, int | None, int | None],
    after: tuple[int | None, int | None, int | None],
) -> MemoryMeasure:
    allocated = _delta(after[0], before[0])
    reserved = _delta(after[1], before[1])
    resident = _delta(after[2], before[2])
    notes = []
    if allocated is not None:
        notes.append(f"allocator: +{allocated:,} B allocated ({allocated - storage:+,} B over the tensors' storage)")
    if reserved is not None:
        notes.append(f"allocator: +{reserved:,} B reserved ({reserved - (allocated or 0):+,} B beyond allocated)")
    if resident is not None:
        notes.append(f"process resident memory: {resident:+,} B ({resident - storage:+,} B beside the storage)")
    return MemoryMeasure(cache_bytes, weights, storage, count, allocated, reserved, resident, tuple(notes))


# ----------------------------------------------------------------------------------------------------------
# Decode-attention timing


_TIMED_DTYPES = ("float16", "bfloat16", "float32")


def _attention_views(
    torch: Any, plan: VerifyPlan, layer: LayerTensors, named: dict[str, Any]
) -> tuple[Any, Any] | None:
    """K and V of one layer as [batch, kv_heads, tokens, head_dim] views of the allocated cache, or None."""
    if not layer.attended or not layer.q_heads:
        return None
    b, s = plan.batch, layer.attended
    if "kv" in named:  # vLLM FlashAttention pages: [2, blocks, block, heads, dim]
        kv = named["kv"]
        if str(kv.dtype).removeprefix("torch.") not in _TIMED_DTYPES:
            return None
        heads, dim = kv.shape[-2], kv.shape[-1]
        k = kv[0].reshape(b, -1, heads, dim)[:, :s].transpose(1, 2)
        v = kv[1].reshape(b, -1, heads, dim)[:, :s].transpose(1, 2)
        return k, v
    k, v = named.get("k"), named.get("v")
    if k is None or v is None or str(k.dtype).removeprefix("torch.") not in _TIMED_DTYPES or k.dtype != v.dtype:
        return None
    if k.dim() == 3:  # SGLang token pool: [slots, heads, dim]
        k = k.reshape(b, -1, k.shape[1], k.shape[2])[:, :s].transpose(1, 2)
        v = v.reshape(b, -1, v.shape[1], v.shape[2])[:, :s].transpose(1, 2)
    if k.dim() != 4 or layer.q_heads % k.shape[1]:
        return None
    return k, v


def _sync(torch: Any, dev: Any) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def _time_decode(
    torch: Any,
    dev: Any,
    plan: VerifyPlan,
    tensors: Sequence[LayerTensors],
    arena: _Arena,
    repeats: int,
    warmup: int,
    budget_s: float,
    bandwidth_tbps: float | None,
    on_progress: ProgressCallback | None,
) -> TimingResult:
    """One decode step: for every attention layer, SDPA of q [B, H, 1, D] over k / v [B, G, S, D] with
    enable_gqa=True. Warm-up, then up to ``repeats`` timed steps (CUDA events; synchronised wall clock
    elsewhere) within ``budget_s`` seconds (at least one); the median."""
    catalog_bps = None if bandwidth_tbps is None or dev.type == "cpu" else bandwidth_tbps * 1e12
    # Only this list holds the views and queries (no loop variable does), so clearing it in ``finally`` lets the
    # arena free the cache even while a Ctrl-C traceback still references this frame.
    triples: list[tuple[Any, Any, Any, int]] = []
    try:
        triples.extend(_decode_inputs(torch, dev, plan, tensors, arena))
        return _time_steps(torch, dev, plan, triples, repeats, warmup, budget_s, catalog_bps, on_progress)
    except Exception as err:
        if not _is_oom(torch, err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        note = f"not timed: out of memory for the query / attention workspace beside the cache ({first})"
        return TimingResult(plan.name, plan.kv_heads, 0, plan.batch, 0, 0, None, 0, warmup, None, catalog_bps, note)
    finally:
        triples.clear()


def _decode_inputs(
    torch: Any, dev: Any, plan: VerifyPlan, tensors: Sequence[LayerTensors], arena: _Arena
) -> list[tuple[Any, Any, Any, int]]:
    """(q, k, v, tokens) per timed layer: q [B, H, 1, D], k / v [B, G, S, D] views of the allocated cache."""
    out = []
    for layer in tensors:
        views = _attention_views(torch, plan, layer, arena.layers.get(layer.index, {}))
        if views is not None:
            q = torch.randn(plan.batch, layer.q_heads, 1, views[0].shape[-1], dtype=views[0].dtype, device=dev)
            out.append((q, views[0], views[1], layer.attended))
    return out


def _time_steps(
    torch: Any,
    dev: Any,
    plan: VerifyPlan,
    triples: list[tuple[Any, Any, Any, int]],
    repeats: int,
    warmup: int,
    budget_s: float,
    catalog_bps: float | None,
    on_progress: ProgressCallback | None,
) -> TimingResult:
    read = sum(k.nelement() * k.element_size() + v.nelement() * v.element_size() for _, k, v, _ in triples)
    tokens = max((n for *_, n in triples), default=0)

    def result(median: float | None, n: int, note: str) -> TimingResult:
        achieved = read / median if median else None
        if dev.type == "cpu":
            note = "; ".join(x for x in (note, "CPU: no catalog bandwidth to compare") if x)
        elif catalog_bps is None:
            note = "; ".join(x for x in (note, "no catalog bandwidth for this device") if x)
        return TimingResult(
            plan.name,
            plan.kv_heads,
            len(triples),
            plan.batch,
            tokens,
            read,
            median,
            n,
            warmup,
            achieved,
            catalog_bps,
            note,
        )

    if not triples:
        return result(
            None,
            0,
            f"not timed: verify times softmax attention over {'/'.join(_TIMED_DTYPES)} K/V; this cache has none "
            "(MLA latents, state, quantized rows, or a layout without per-sequence K/V views)",
        )
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def step() -> None:
        for i in range(len(triples)):  # by index: no local outlives an interrupted step
            sdpa(triples[i][0], triples[i][1], triples[i][2], enable_gqa=True)

    task = f"{plan.name}: timing"
    try:
        with torch.no_grad():
            for _ in range(warmup):
                step()
            _sync(torch, dev)
            times: list[float] = []
            spent = time.perf_counter()
            while len(times) < repeats and (not times or time.perf_counter() - spent < budget_s):
                if dev.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    step()
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / 1000)
                else:
                    t0 = time.perf_counter()
                    step()
                    _sync(torch, dev)
                    times.append(time.perf_counter() - t0)
                if on_progress is not None:
                    on_progress(task, len(times), repeats)
    except TypeError as err:  # torch < 2.5: no enable_gqa
        return result(None, 0, f"not timed: this torch's scaled_dot_product_attention has no enable_gqa ({err})")
    note = "" if len(times) == repeats else f"{len(times)} of {repeats} repeats within the {budget_s:g} s budget"
    return result(statistics.median(times), len(times), note)


# ----------------------------------------------------------------------------------------------------------
# Capacity probe


def _largest(fits: Callable[[int], bool], limit: int = 1 << 24) -> tuple[int, list[tuple[int, bool]]]:
    """The largest n >= 1 with fits(n) for a monotone ``fits`` (0 when fits(1) is False): double, then bisect."""
    trials: list[tuple[int, bool]] = []

    def trial(n: int) -> bool:
        ok = fits(n)
        trials.append((n, ok))
        return ok

    if not trial(1):
        return 0, trials
    lo, hi = 1, 2
    while hi <= limit and trial(hi):
        lo, hi = hi, hi * 2
    if hi > limit:
        return lo, trials
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return lo, trials


def _probe(
    torch: Any, dev: Any, plan: VerifyPlan, cap: int | None, on_progress: ProgressCallback | None
) -> tuple[ProbeResult, Check]:
    """Allocate the weights, then the whole cache at growing batches (no writes: CUDA commits on allocation,
    and on a CPU the cap is the limit), releasing between trials."""
    arena = _Arena(torch, dev, cap, None)
    try:
        weights_note = ""
        if plan.weights_bytes:
            try:
                arena.allocate(TensorSpec("weights", (plan.weights_bytes,), "uint8"), None, "weights", write=True)
            except _OutOfMemoryError as err:
                weights_note = f"the weights do not fit ({err.oom.describe()})"
        _, free = _memory(torch, dev)
        limits = [x for x in (free, None if cap is None else cap - arena.used) if x is not None]
        memory = min(limits) if limits else 0

        if weights_note:
            predicted_max = 0
        else:
            predicted_max, _ = _largest(lambda b: predict(plan, b).per_gpu_bytes <= memory)
        best_bytes = 0

        def really_fits(batch: int) -> bool:
            nonlocal best_bytes
            trial = _Arena(torch, dev, None if cap is None else cap - arena.used, free)
            layers = cache_tensors(plan.with_batch(batch))
            task = f"{plan.name}: probe batch {batch}"
            try:
                for n, layer in enumerate(layers):
                    for spec in layer.tensors:
                        if spec.nbytes:
                            trial.allocate(spec, layer.index, layer.kind.value, write=False)
                    if on_progress is not None:
                        on_progress(task, n + 1, len(layers))
            except _OutOfMemoryError:
                return False
            finally:
                held = trial.used
                trial.release(collect=False)
            best_bytes = max(best_bytes, held)
            return True

        trials: list[tuple[int, bool]] = []
        measured_max = 0
        if not weights_note:
            measured_max, trials = _largest(really_fits)
    finally:
        arena.release()
    predicted_bytes = predict(plan, predicted_max).per_gpu_bytes if predicted_max else 0
    measured_bytes = best_bytes if measured_max else 0
    probe = ProbeResult(
        plan.name,
        plan.ctx,
        memory,
        plan.weights_bytes,
        predicted_max,
        predicted_bytes,
        measured_max,
        measured_bytes,
        tuple(trials),
        weights_note,
    )
    tried = ", ".join(f"{b} {'ok' if ok else 'oom'}" for b, ok in trials)
    ok = predicted_max == measured_max
    detail = (
        f"predicted max batch at ctx {plan.ctx:,}: {predicted_max} ({exact_and_human(predicted_bytes)} of "
        f"{exact_and_human(memory)} for the cache); probed: {measured_max} (trials: {tried or 'none'})"
    )
    if not ok:
        detail += f": {measured_max - predicted_max:+d} sequences"
        if measured_max < predicted_max and cap is None:
            detail += " (the allocator's rounding and fragmentation take memory the prediction does not count)"
    if weights_note:
        detail += f"; {weights_note}"
    check = Check(f"{plan.name}: max batch", plan.name, "max_batch", predicted_bytes, measured_bytes, ok, detail)
    return probe, check


# ----------------------------------------------------------------------------------------------------------
# Entry points


def run_verify(
    plans: Sequence[VerifyPlan],
    device: str = "cpu",
    *,
    max_bytes: int | None = None,
    gpu: str | None = None,
    timing: bool = True,
    probe: bool = True,
    repeats: int = 5,
    warmup: int = 1,
    time_budget_s: float = 2.0,
    on_progress: ProgressCallback | None = None,
    device_info: DeviceInfo | None = None,
) -> VerifyReport:
    """Allocate, measure and check every plan on ``device``; probe the plans marked ``probe`` (when ``probe``);
    time a decode step over each allocated cache (when ``timing``).

    Memory is released after each plan and on any exception (Ctrl-C included). Raises TorchMissingError,
    DeviceUnavailableError or OptionError before allocating anything; a plan that runs out of memory is a
    result, not an exception.
    """
    check_positive("--repeats", repeats)
    info = device_info or open_device(device, max_bytes=max_bytes, gpu=gpu)
    torch = import_torch()
    dev, _ = _open(torch, info.device)
    for plan in plans:  # usage errors (a dtype the engine lacks ...) before any allocation
        predict(plan)
    bandwidth = info.catalog.bandwidth_tbps if info.catalog is not None else None
    results = []
    checks: list[Check] = []
    try:
        for plan in plans:
            result, plan_checks = _run_plan(
                torch,
                dev,
                plan,
                info.cap_bytes,
                timing=timing,
                repeats=repeats,
                warmup=warmup,
                time_budget_s=time_budget_s,
                bandwidth_tbps=bandwidth,
                on_progress=on_progress,
            )
            checks.extend(plan_checks)
            if probe and plan.probe:
                probe_result, probe_check = _probe(torch, dev, plan, info.cap_bytes, on_progress)
                result = replace(result, probe=probe_result)
                checks.append(probe_check)
            results.append(result)
    finally:
        _empty_cache(torch, dev)
    return VerifyReport(info, tuple(results), tuple(checks))


def self_check(
    device: str = "cpu",
    *,
    max_bytes: int | None = None,
    gpu: str | None = None,
    timing: bool = True,
    probe: bool = True,
    repeats: int = 5,
    time_budget_s: float = 2.0,
    on_progress: ProgressCallback | None = None,
) -> VerifyReport:
    """``kvplan verify`` without ``--model``: :func:`self_check_plans` scaled to the device, then :func:`run_verify`."""
    info = open_device(device, max_bytes=max_bytes, gpu=gpu)
    return run_verify(
        self_check_plans(info.available_bytes),
        info.device,
        max_bytes=max_bytes,
        timing=timing,
        probe=probe,
        repeats=repeats,
        time_budget_s=time_budget_s,
        on_progress=on_progress,
        device_info=info,
    )

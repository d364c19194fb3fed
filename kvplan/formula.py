"""Exact KV-cache arithmetic over a :class:`~kvplan.layout.CacheLayout`.

Bytes are Python ints; nothing is rounded. For one sequence of ``ctx`` tokens a layer costs
``tokens_held(ctx) x token_bytes + state_bytes``; the model costs the sum over layers, ``batch`` sequences
cost ``batch`` times that. The textbook ``2 x L x H_kv x d_head x seq x batch x bytes`` is the case where every
layer is full attention with the same heads. Each result carries an :class:`Explanation` whose factors
multiply to its bytes, so the CLI can show the arithmetic with the real numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod

from kvplan.dtypes import AUTO, STORAGE_TYPES, StorageType, canonical_name, storage_type
from kvplan.errors import OptionError, Param, spell
from kvplan.layout import CacheLayout, LayerGroup, LayerKind, LayerSpec, StateTensor
from kvplan.limits import MAX_COUNT
from kvplan.readers.context import context_limit

# ----------------------------------------------------------------------------------------------------------
# Storage types of one plan


@dataclass(frozen=True)
class CacheTypes:
    """The storage of K, V and of state tensors for one plan (``auto`` already resolved)."""

    k: StorageType
    v: StorageType
    #: The model's activation dtype: state tensors with no dtype of their own use it.
    activation: StorageType
    #: What the user asked for (``auto``, ``fp8`` ...), for display.
    requested: str = AUTO
    #: Why ``auto`` resolved the way it did, if it did.
    note: str = ""

    @property
    def label(self) -> str:
        name = self.k.name if self.k == self.v else f"K {self.k.name} / V {self.v.name}"
        if self.requested not in (AUTO, name) and canonical_name(self.requested) == name:
            return f"{self.requested} ({name})"
        return name if self.requested != AUTO else f"auto ({name})"


def serving_dtype(layout: CacheLayout) -> tuple[str, str]:
    """The 16-bit dtype a serving engine runs the model in, and why.

    vLLM's ``--dtype auto`` serves fp32 and fp16 checkpoints in fp16 and bf16 checkpoints in bf16 (its docs:
    "auto will use FP16 precision for FP32 and FP16 models, and BF16 precision for BF16 models"); SGLang
    and TensorRT-LLM do the same, so an fp32 config still caches 2-byte values.
    """
    if layout.dtype == "bfloat16":
        return "bfloat16", "the config's dtype"
    if layout.dtype == "float16":
        return "float16", "the config's dtype"
    if layout.dtype == "float32":
        return "float16", "the config says float32; engines serve fp32 checkpoints in 16 bits"
    return "float16", "the config states no dtype; engines default to 16 bits"


def resolve_types(
    layout: CacheLayout,
    kv_cache_dtype: str = AUTO,
    *,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
    keep_fp32: bool = False,
) -> CacheTypes:
    """Resolve a KV dtype request (``auto`` = the model's serving dtype) into storage types.

    ``k_dtype`` / ``v_dtype`` override K and V separately (llama.cpp ``--cache-type-k/-v``). With
    ``keep_fp32`` an fp32 config stays fp32 (transformers loads checkpoints in their own dtype).
    """
    if keep_fp32 and layout.dtype is not None:
        model_name, why = layout.dtype, "the config's dtype"
    else:
        model_name, why = serving_dtype(layout)
    activation = STORAGE_TYPES[model_name]
    requested = canonical_name(kv_cache_dtype)
    base = activation if requested == AUTO else storage_type(requested)
    k = base if k_dtype is None else _resolve_one(k_dtype, activation, Param.K_DTYPE)
    v = base if v_dtype is None else _resolve_one(v_dtype, activation, Param.V_DTYPE)
    note = f"auto = {model_name}: {why}" if AUTO in (requested, k_dtype, v_dtype) else ""
    return CacheTypes(k=k, v=v, activation=activation, requested=kv_cache_dtype, note=note)


def _resolve_one(name: str, activation: StorageType, option: Param) -> StorageType:
    return activation if canonical_name(name, option) == AUTO else storage_type(name, option)


# ----------------------------------------------------------------------------------------------------------
# Per-layer costs


def _fp8_ds_mla_bytes(layer: LayerSpec) -> int:
    # vLLM's DeepSeek sparse-MLA cache ("fp8_ds_mla", vllm/v1/kv_cache_interface.py; SGLang's NSA layout
    # agrees): the latent in fp8 plus one fp32 scale per 128 values, the rope part kept in bf16:
    # 512 + 512/128 x 4 + 64 x 2 = 656 B per token per layer.
    return layer.kv_lora_rank + layer.kv_lora_rank // 128 * 4 + layer.rope_dim * 2


def token_bytes(layer: LayerSpec, types: CacheTypes) -> int:
    """Bytes one cached token costs in this layer (0 for layers that cache no tokens)."""
    if layer.kind is LayerKind.MLA:
        latent = _fp8_ds_mla_bytes(layer) if types.k.name == "fp8_ds_mla" else types.k.row_bytes(layer.latent_dim)
        indexer = types.k.row_bytes(layer.indexer_head_dim) if layer.indexer_head_dim else 0
        return latent + indexer
    if not layer.kind.grows_with_context:
        return 0
    return kv_row_bytes(layer, types)


def kv_row_bytes(layer: LayerSpec, types: CacheTypes) -> int:
    """K and V of one token in a per-head layer (V absent where K = V is stored once: DeepSeek-V4)."""
    if "fp8_ds_mla" in (types.k.name, types.v.name):
        raise OptionError(Param.KV_CACHE_DTYPE, "fp8_ds_mla is a layout for MLA models (DeepSeek) only")
    k = layer.k_heads * types.k.row_bytes(layer.k_head_dim)
    v = layer.v_heads * types.v.row_bytes(layer.v_head_dim)
    return k + v


def compressed_entry_bytes(layer: LayerSpec, types: CacheTypes) -> int:
    """COMPRESSED: one compressed KV entry of k_head_dim values, plus the CSA indexer's key of
    indexer_head_dim (DeepSeek-V4: compressed_kv["compressor"] and ["indexer"] in DeepseekV4CSACache)."""
    if layer.kind is not LayerKind.COMPRESSED:
        return 0
    indexer = types.k.row_bytes(layer.indexer_head_dim) if layer.indexer_head_dim else 0
    return types.k.row_bytes(layer.k_head_dim) + indexer


def compressed_bytes(layer: LayerSpec, ctx: int, types: CacheTypes) -> int:
    """COMPRESSED: the entries ``ctx`` tokens have produced, for one sequence."""
    return layer.compressed_entries(ctx) * compressed_entry_bytes(layer, types)


def state_element_bytes(tensor: StateTensor, types: CacheTypes) -> int:
    """Bytes per value of a state tensor: its own dtype, else the model's activation dtype."""
    store = types.activation if tensor.dtype is None else STORAGE_TYPES[tensor.dtype]
    return store.element_bytes


def state_tensor_bytes(tensor: StateTensor, types: CacheTypes) -> int:
    return tensor.elements * state_element_bytes(tensor, types)


def state_bytes(layer: LayerSpec, types: CacheTypes) -> int:
    """Bytes of the fixed per-sequence state of a layer (0 for self-attention layers): SSM / linear-attention
    state, or a cross-attention layer's K and V of its images' tokens."""
    if layer.kind is LayerKind.CROSS:
        return layer.cross_tokens * kv_row_bytes(layer, types)
    return sum(state_tensor_bytes(t, types) for t in layer.state)


TokensHeld = Callable[[LayerSpec, int], int]


def ideal_tokens_held(layer: LayerSpec, ctx: int) -> int:
    return layer.tokens_held(ctx)


# ----------------------------------------------------------------------------------------------------------
# Explanations


@dataclass(frozen=True)
class Factor:
    """One factor of a product: a value and what it counts."""

    value: int
    label: str


@dataclass(frozen=True)
class Product:
    """``label: f1 x f2 x ... = result`` with ``prod(f.value) == result`` (checked at construction)."""

    label: str
    factors: tuple[Factor, ...]
    result: int
    note: str = ""

    def __post_init__(self) -> None:
        if prod(f.value for f in self.factors) != self.result:
            raise AssertionError(f"explanation does not multiply out: {self}")


@dataclass(frozen=True)
class Explanation:
    """The arithmetic behind a result: one product per group of identical layers, and their sum."""

    lines: tuple[Product, ...]
    total: int
    notes: tuple[str, ...] = ()


def line_factors(layer: LayerSpec, types: CacheTypes, count: int, tokens: int, batch: int) -> tuple[Factor, ...]:
    """Factors of ``count x token_bytes x tokens x batch``, textbook-shaped where the storage allows."""
    n_layers, n_tokens, n_seqs = Factor(count, "layers"), Factor(tokens, "tokens"), Factor(batch, "seq")
    per_token = token_bytes(layer, types)
    if layer.kind is LayerKind.MLA:
        if layer.indexer_head_dim or not types.k.is_plain or types.k.name == "fp8_ds_mla":
            return n_layers, Factor(per_token, "B per token (latent + indexer)"), n_tokens, n_seqs
        latent = Factor(layer.latent_dim, f"latent ({layer.kv_lora_rank} + {layer.rope_dim} rope)")
        return n_layers, latent, n_tokens, n_seqs, Factor(types.k.block_bytes, "B")
    if layer.v_heads == 0:
        return n_layers, Factor(per_token, "B of K (= V, stored once) per token"), n_tokens, n_seqs
    symmetric = types.k == types.v and layer.k_heads == layer.v_heads and layer.k_head_dim == layer.v_head_dim
    if not symmetric:
        return n_layers, Factor(per_token, "B of K and V per token"), n_tokens, n_seqs
    heads = Factor(layer.k_heads, "KV heads")
    if types.k.is_plain:
        return (
            Factor(2, ""),
            n_layers,
            heads,
            Factor(layer.k_head_dim, "head_dim"),
            n_tokens,
            n_seqs,
            Factor(types.k.block_bytes, "B"),
        )
    row = Factor(types.k.row_bytes(layer.k_head_dim), f"B per {layer.k_head_dim}-value row ({types.k.name})")
    return Factor(2, ""), n_layers, heads, row, n_tokens, n_seqs


def _group_lines(group: LayerGroup, ctx: int, batch: int, types: CacheTypes, held: TokensHeld) -> tuple[Product, ...]:
    """The product for a group, and for COMPRESSED layers a second one for their compressed entries."""
    first = _group_line(group, ctx, batch, types, held)
    spec = group.spec
    if spec.kind is not LayerKind.COMPRESSED:
        return (first,)
    entries = spec.compressed_entries(ctx)
    what = "KV + indexer key" if spec.indexer_head_dim else "KV"
    factors = (
        Factor(group.count, "layers"),
        Factor(entries, "compressed entries"),
        Factor(compressed_entry_bytes(spec, types), f"B per entry ({what})"),
        Factor(batch, "seq"),
    )
    note = f"entries = ctx {ctx:,} // {spec.compress_ratio}"
    second = Product(
        f"  their compressed entries (1 per {spec.compress_ratio} tokens)",
        factors,
        prod(f.value for f in factors),
        note=note,
    )
    return first, second


def _group_line(group: LayerGroup, ctx: int, batch: int, types: CacheTypes, held: TokensHeld) -> Product:
    spec = group.spec
    label = f"{group.count} {spec.kind.value.replace('_', ' ')} layer{'s' if group.count > 1 else ''}"
    if spec.kind is LayerKind.STATE:
        per_seq = state_bytes(spec, types)
        parts = " + ".join(
            f"{t.name} {' x '.join(map(str, t.shape))} x {state_element_bytes(t, types)} B" for t in spec.state
        )
        state_factors = (
            Factor(group.count, "layers"),
            Factor(per_seq, "B state per seq"),
            Factor(batch, "seq"),
        )
        return Product(label, state_factors, group.count * per_seq * batch, note=f"state per seq = {parts}")
    if spec.kind is LayerKind.CROSS:
        per_image = spec.tokens_per_image
        cross: tuple[Factor, ...] = (
            Factor(group.count, "layers"),
            Factor(spec.cross_tokens, "image tokens"),
            Factor(kv_row_bytes(spec, types), "B of K and V per token"),
            Factor(batch, "seq"),
        )
        note = f"image tokens = {spec.images} image(s) x {per_image:,}, whatever the context"
        return Product(label, cross, prod(f.value for f in cross), note=note)
    if not spec.kind.grows_with_context:
        return Product(label, (Factor(group.count, "layers"), Factor(0, "B")), 0)
    tokens = held(spec, ctx)
    note = ""
    if spec.window is not None and spec.kind.windowed:
        what = "chunk" if spec.kind is LayerKind.CHUNKED else "window"
        note = f"tokens = min(ctx {ctx:,}, {what} {spec.window:,})"
    factors = line_factors(spec, types, group.count, tokens, batch)
    return Product(label, factors, group.count * token_bytes(spec, types) * tokens * batch, note=note)


# ----------------------------------------------------------------------------------------------------------
# Estimates


@dataclass(frozen=True)
class KindBreakdown:
    """The cost of all layers of one kind."""

    kind: LayerKind
    layers: int
    bytes_per_token: int
    tokens_held: int
    state_bytes_per_sequence: int
    bytes_per_sequence: int
    total_bytes: int


@dataclass(frozen=True)
class CacheEstimate:
    """What a layout costs at (ctx, batch) with given storage types."""

    layout: CacheLayout
    ctx: int
    batch: int
    types: CacheTypes
    #: Bytes one more token costs while ctx is inside every window (sum over context-growing layers).
    bytes_per_token: int
    bytes_per_sequence: int
    total_bytes: int
    breakdown: tuple[KindBreakdown, ...]
    explanation: Explanation
    #: Multi-token-prediction layers, costed separately (not in the totals above).
    mtp_bytes_per_token: int = 0
    mtp_total_bytes: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)


def layer_sequence_bytes(layer: LayerSpec, ctx: int, types: CacheTypes, held: TokensHeld = ideal_tokens_held) -> int:
    """Bytes one sequence of ``ctx`` tokens costs in one layer."""
    windowed = held(layer, ctx) * token_bytes(layer, types)
    return windowed + compressed_bytes(layer, ctx, types) + state_bytes(layer, types)


def breakdown_by_kind(
    layers: Sequence[LayerSpec], ctx: int, batch: int, types: CacheTypes, held: TokensHeld = ideal_tokens_held
) -> tuple[KindBreakdown, ...]:
    out = []
    for kind in LayerKind:
        of_kind = [layer for layer in layers if layer.kind is kind]
        if not of_kind:
            continue
        per_seq = sum(layer_sequence_bytes(layer, ctx, types, held) for layer in of_kind)
        out.append(
            KindBreakdown(
                kind=kind,
                layers=len(of_kind),
                bytes_per_token=sum(token_bytes(layer, types) for layer in of_kind),
                tokens_held=max(held(layer, ctx) for layer in of_kind),
                state_bytes_per_sequence=sum(state_bytes(layer, types) for layer in of_kind),
                bytes_per_sequence=per_seq,
                total_bytes=per_seq * batch,
            )
        )
    return tuple(out)


def check_positive(option: Param, value: int) -> int:
    """A positive whole number of at most MAX_COUNT (2^63 - 1)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(option, f"must be a positive whole number, got {value!r}")
    if value > MAX_COUNT:
        raise OptionError(option, f"must be at most {MAX_COUNT:,} (2^63 - 1), got a {value.bit_length()}-bit number")
    return value


def estimate(
    layout: CacheLayout,
    ctx: int,
    batch: int = 1,
    types: CacheTypes | None = None,
    *,
    held: TokensHeld = ideal_tokens_held,
) -> CacheEstimate:
    """The exact cache of ``batch`` sequences of ``ctx`` tokens for ``layout``."""
    check_positive(Param.CTX, ctx)
    check_positive(Param.BATCH, batch)
    types = types or resolve_types(layout)
    breakdown = breakdown_by_kind(layout.layers, ctx, batch, types, held)
    per_seq = sum(b.bytes_per_sequence for b in breakdown)
    lines = tuple(line for g in layout.groups() for line in _group_lines(g, ctx, batch, types, held))
    lines = tuple(line for line in lines if line.result or len(lines) == 1)
    notes = [types.note] if types.note else []
    cross = layout.cross_layers
    if cross:
        notes.append(
            f"each sequence carries {cross[0].images} image(s) of {cross[0].tokens_per_image:,} tokens for the "
            "cross-attention layers (0 = text only)"
        )
    if any(layer.kind is LayerKind.SHARED for layer in layout.layers):
        notes.append("shared-KV layers read an earlier layer's cache and add nothing")
    mtp_per_token = sum(token_bytes(layer, types) for layer in layout.mtp_layers)
    mtp_total = sum(layer_sequence_bytes(layer, ctx, types, held) for layer in layout.mtp_layers) * batch
    if layout.mtp_layers:
        notes.append(
            f"{len(layout.mtp_layers)} multi-token-prediction layer(s) not included: "
            f"{mtp_total:,} B more when serving with MTP speculative decoding"
        )
    return CacheEstimate(
        layout=layout,
        ctx=ctx,
        batch=batch,
        types=types,
        bytes_per_token=sum(b.bytes_per_token for b in breakdown),
        bytes_per_sequence=per_seq,
        total_bytes=per_seq * batch,
        breakdown=breakdown,
        explanation=Explanation(lines=lines, total=per_seq * batch, notes=tuple(notes)),
        mtp_bytes_per_token=mtp_per_token,
        mtp_total_bytes=mtp_total,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------------------------------------
# The G spectrum


def valid_kv_heads(layout: CacheLayout) -> tuple[int, ...]:
    """Every G that divides the query heads of every attention layer (ascending)."""
    attention = layout.attention_layers
    if not attention:
        return ()
    return divisors(math.gcd(*{layer.q_heads for layer in attention}))


def divisors(n: int) -> tuple[int, ...]:
    """Every divisor of ``n`` (ascending), by trial division up to sqrt(n): 1,024 steps for 2^20 heads."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return tuple(small + [n // d for d in reversed(small) if d * d != n])


def with_kv_heads(layout: CacheLayout, kv_heads: int, option: Param = Param.KV_HEADS) -> CacheLayout:
    """Validate and apply the GQA what-if: ``kv_heads`` K/V heads in every attention layer."""
    check_positive(option, kv_heads)
    if LayerKind.COMPRESSED in layout.kinds:
        raise OptionError(
            option, f"{layout.model} attends with one K = V head shared by every query head (DeepSeek-V4)"
        )
    if not layout.attention_layers:
        kinds = ", ".join(k.value for k in layout.kinds)
        raise OptionError(option, f"{layout.model} has no per-head K/V to change (layers: {kinds})")
    valid = valid_kv_heads(layout)
    if kv_heads not in valid:
        h = layout.query_heads
        raise OptionError(option, f"{kv_heads} does not divide the {h} query heads; valid: {list(valid)}")
    return layout.with_kv_heads(kv_heads)


def default_context(layout: CacheLayout, ctx: int | None) -> tuple[int, str]:
    """The context to plan for: the user's, else the model's own maximum."""
    if ctx is not None:
        return check_positive(Param.CTX, ctx), spell(Param.CTX)
    limit = context_limit(layout)
    if limit is None:
        raise OptionError(
            Param.CTX,
            f"{layout.model} does not state a context length (max_position_embeddings or similar); pass "
            f"{spell(Param.CTX)} N",
        )
    if limit.scaled:
        return limit.tokens, f"the model's context limit: {limit.scaling}"
    return limit.tokens, "the model's max_position_embeddings"


@dataclass(frozen=True)
class SpectrumPoint:
    """One G of the spectrum: MHA (G = H), GQA, MQA (G = 1)."""

    name: str
    kv_heads: int
    bytes_per_token: int
    total_bytes: int
    #: H / G, exact because G divides H.
    compression: int
    is_model: bool = False
    is_what_if: bool = False


def attention_kind_name(g: int, h: int) -> str:
    return "MHA" if g == h else "MQA" if g == 1 else "GQA"


def g_spectrum(
    layout: CacheLayout, ctx: int, batch: int, types: CacheTypes, *, own: int | None = None
) -> tuple[SpectrumPoint, ...]:
    """MHA (G = H), the model's own G, any what-if G, and MQA (G = 1), with bytes and compression H/G.

    ``layout`` may already carry a what-if G; ``own`` is the model's original G.
    """
    if not layout.attention_layers or LayerKind.COMPRESSED in layout.kinds:
        return ()
    h = min(layer.q_heads for layer in layout.attention_layers)
    current = layout.kv_heads
    own = current if own is None else own
    wanted = {h, 1} | {g for g in (own, current) if g}
    out = []
    for g in sorted(wanted, reverse=True):
        est = estimate(with_kv_heads(layout, g), ctx, batch, types)
        out.append(
            SpectrumPoint(
                name=attention_kind_name(g, h),
                kv_heads=g,
                bytes_per_token=est.bytes_per_token,
                total_bytes=est.total_bytes,
                compression=h // g,
                is_model=g == own,
                is_what_if=g == current and current != own,
            )
        )
    return tuple(out)

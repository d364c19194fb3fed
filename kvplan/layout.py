"""The typed model of what a model's KV cache stores, layer by layer.

A :class:`CacheLayout` is a tuple of :class:`LayerSpec`, one per decoder layer. Each layer says what it stores
per cached token (K heads x K head dim + V heads x V head dim values, or an MLA latent), how many tokens it
keeps (all of them, or at most a window / chunk), what fixed state it keeps per sequence (linear attention and
SSM layers), or that it keeps nothing (a layer that reuses another layer's KV, or has no attention). Plain GQA
is the case where every layer is ``FULL`` with the same heads. Everything here is frozen and integer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from math import prod

#: Images each sequence carries in a model with cross-attention layers, unless the plan says otherwise: one
#: (a chat turn about one picture); 0 is text only.
DEFAULT_IMAGES = 1


class LayerKind(StrEnum):
    """What one decoder layer caches."""

    FULL = "full_attention"  # K and V for every past token
    SLIDING = "sliding_attention"  # K and V for at most the last `window` tokens
    CHUNKED = "chunked_attention"  # K and V for the tokens of the current chunk (Llama 4 local attention)
    MLA = "mla"  # one compressed latent (+ decoupled rope key) per token, shared by every head (DeepSeek)
    #: A sliding window of K (= V, stored once) plus one compressed entry per ``compress_ratio`` tokens of the
    #: whole context (and an indexer key per entry for CSA layers): DeepSeek-V4's CSA / HCA layers.
    COMPRESSED = "compressed_attention"
    #: K and V of a fixed set of tokens from another modality (Llama 3.2 Vision's image tokens), not of the
    #: text context: a fixed cost per sequence.
    CROSS = "cross_attention"
    STATE = "state"  # a fixed per-sequence state (linear attention, Mamba): does not grow with context
    SHARED = "shared_kv"  # reads another layer's K/V (Gemma 3n): no cache of its own
    NONE = "no_cache"  # no attention in this layer (MLP-only block, NAS no-op)

    @property
    def grows_with_context(self) -> bool:
        return self in (LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.MLA, LayerKind.COMPRESSED)

    @property
    def windowed(self) -> bool:
        """Layers whose per-token K/V is kept for at most ``window`` tokens."""
        return self in (LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.COMPRESSED)

    @property
    def has_kv_heads(self) -> bool:
        """Layers whose K/V heads a GQA what-if (``--kv-heads``) can change."""
        return self in (LayerKind.FULL, LayerKind.SLIDING, LayerKind.CHUNKED, LayerKind.CROSS)


#: The kinds every serving engine's rules cover; DeepSeek-V4's compressed layers and cross-attention layers
#: have rules only under ideal and hf so far, and the other engines refuse them.
CLASSIC_KINDS = frozenset(LayerKind) - {LayerKind.COMPRESSED, LayerKind.CROSS}


@dataclass(frozen=True)
class StateTensor:
    """One per-sequence state tensor of a STATE layer (shape excludes the batch dimension)."""

    name: str
    shape: tuple[int, ...]
    #: Canonical storage name, or None for "the model's activation dtype".
    dtype: str | None = None

    @property
    def elements(self) -> int:
        return prod(self.shape)


@dataclass(frozen=True)
class LayerSpec:
    """What one decoder layer caches. Head counts are for the whole model (before tensor parallelism)."""

    index: int
    kind: LayerKind
    q_heads: int = 0
    k_heads: int = 0
    k_head_dim: int = 0
    v_heads: int = 0
    v_head_dim: int = 0
    #: Sliding window or chunk size in tokens (SLIDING, CHUNKED).
    window: int | None = None
    #: MLA: the compressed KV rank and the decoupled rope key dim; the cached latent is their sum.
    kv_lora_rank: int = 0
    rope_dim: int = 0
    #: Extra per-token key of a sparse-attention indexer (DeepSeek-V3.2 DSA): one head of this dim.
    indexer_head_dim: int = 0
    state: tuple[StateTensor, ...] = ()
    #: SHARED: the layer whose cache this layer reads.
    shares_with: int | None = None
    #: COMPRESSED: one compressed entry (k_head_dim values, + indexer_head_dim for CSA) per this many tokens.
    compress_ratio: int = 0
    #: CROSS: the tokens of the other modality one image brings, and the images each sequence carries.
    tokens_per_image: int = 0
    images: int = 0

    @property
    def cross_tokens(self) -> int:
        """CROSS: the tokens this layer holds K and V for, per sequence."""
        return self.tokens_per_image * self.images

    def compressed_entries(self, ctx: int) -> int:
        """COMPRESSED: the entries ``ctx`` tokens have produced (a partial window produces none)."""
        return ctx // self.compress_ratio if self.kind is LayerKind.COMPRESSED and self.compress_ratio else 0

    @property
    def latent_dim(self) -> int:
        return self.kv_lora_rank + self.rope_dim

    @property
    def k_values(self) -> int:
        """K values per token (all heads)."""
        return self.k_heads * self.k_head_dim

    @property
    def v_values(self) -> int:
        """V values per token (all heads)."""
        return self.v_heads * self.v_head_dim

    def tokens_held(self, ctx: int) -> int:
        """Tokens this layer must keep for one sequence of ``ctx`` tokens (the architectural minimum)."""
        if not self.kind.grows_with_context:
            return 0
        if self.window is not None and self.kind.windowed:
            return min(ctx, self.window)
        return ctx

    def signature(self) -> tuple[object, ...]:
        """Everything but the index: layers with equal signatures cost the same."""
        return (
            self.kind,
            self.q_heads,
            self.k_heads,
            self.k_head_dim,
            self.v_heads,
            self.v_head_dim,
            self.window,
            self.kv_lora_rank,
            self.rope_dim,
            self.indexer_head_dim,
            self.state,
            self.shares_with is not None,
            self.compress_ratio,
            self.tokens_per_image,
            self.images,
        )


def attention_layer(
    index: int,
    q_heads: int,
    kv_heads: int,
    head_dim: int,
    *,
    v_head_dim: int | None = None,
    kind: LayerKind = LayerKind.FULL,
    window: int | None = None,
) -> LayerSpec:
    """A softmax-attention layer caching K and V per head (MHA, GQA, MQA; optionally windowed)."""
    return LayerSpec(
        index=index,
        kind=kind,
        q_heads=q_heads,
        k_heads=kv_heads,
        k_head_dim=head_dim,
        v_heads=kv_heads,
        v_head_dim=head_dim if v_head_dim is None else v_head_dim,
        window=window,
    )


def mla_layer(index: int, q_heads: int, kv_lora_rank: int, rope_dim: int, indexer_head_dim: int = 0) -> LayerSpec:
    """An MLA layer: one latent of ``kv_lora_rank + rope_dim`` values per token, no separate V."""
    return LayerSpec(
        index=index,
        kind=LayerKind.MLA,
        q_heads=q_heads,
        k_heads=1,
        k_head_dim=kv_lora_rank + rope_dim,
        kv_lora_rank=kv_lora_rank,
        rope_dim=rope_dim,
        indexer_head_dim=indexer_head_dim,
    )


class WarningKind(StrEnum):
    """Why a figure may be wrong although kvplan answered."""

    UNREAD_KEY = "unread_key"  # a config key that can shape the cache or the weights, and no rule read it
    UNKNOWN_FAMILY = "unknown_family"  # a model_type no rule names, read as a plain decoder
    ASSUMED = "assumed"  # a value the config omits, filled by what its config class assumes


@dataclass(frozen=True)
class ConfigWarning:
    """One thing the reader did not fully understand; ``--strict`` refuses any."""

    kind: WarningKind
    #: The config key it is about (empty for the model as a whole).
    key: str
    message: str
    #: What the key (or assumption) shapes: "cache" or "weights".
    shapes: str = "cache"


@dataclass(frozen=True)
class LayerGroup:
    """Consecutive-or-not layers with identical cost, for explanations and breakdowns."""

    spec: LayerSpec
    indices: tuple[int, ...]

    @property
    def count(self) -> int:
        return len(self.indices)


@dataclass(frozen=True)
class FileTensor:
    """One weight tensor as a model file stores it (GGUF): exact bytes on disk, quantization blocks included."""

    name: str
    #: The file's own dimension order (GGUF / ggml: ne[0] is the contiguous row).
    shape: tuple[int, ...]
    #: Storage type as the file names it ("Q4_K", "F16" ...).
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class ContextLimit:
    """The model's longest context in tokens, and how it follows from the config (kvplan.readers.context)."""

    tokens: int
    #: Empty when max_position_embeddings (or its equivalent) is the limit as it stands; else the RoPE scaling
    #: arithmetic, e.g. "yarn RoPE scaling: original_max_position_embeddings 32,768 x factor 4".
    scaling: str = ""

    @property
    def scaled(self) -> bool:
        return bool(self.scaling)

    def describe(self) -> str:
        """The limit in words: ``max_position_embeddings 4,096`` or ``context limit 131,072 (yarn RoPE ...)``."""
        if not self.scaling:
            return f"max_position_embeddings {self.tokens:,}"
        return f"context limit {self.tokens:,} ({self.scaling})"


@dataclass(frozen=True)
class CacheLayout:
    """A model's cache, layer by layer, with the few model-level facts planning needs."""

    model: str
    family: str
    layers: tuple[LayerSpec, ...]
    hidden_size: int
    #: Canonical name of the config's own dtype, or None when the config does not say.
    dtype: str | None = None
    #: The context the model was built for (max_position_embeddings or equivalent), if stated.
    max_context: int | None = None
    #: The longer context the config's RoPE scaling extends max_context to (vLLM's rule, read once by
    #: kvplan.readers.context.read_rope_limit); None when max_context stands as stated.
    rope_limit: ContextLimit | None = None
    #: Multi-token-prediction layers (DeepSeek num_nextn_predict_layers): cached only under speculative
    #: decoding, so they are reported separately and never silently added.
    mtp_layers: tuple[LayerSpec, ...] = ()
    #: Names of the config rules that produced this layout (shown by --explain).
    rules: tuple[str, ...] = ()
    source: str = ""
    #: What the reader did not fully understand (unread keys, assumptions): the figure may be wrong.
    warnings: tuple[ConfigWarning, ...] = ()
    #: Falcon's new decoder architecture (Falcon-40B; kvplan.families.falcon_new_decoder): transformers expands
    #: its K/V to every query head before caching, and its parallel-attention layers have two LayerNorms.
    falcon_new_decoder: bool = False
    #: The weight tensors a model file lists (GGUF): weights are then exact from the file, not counted from a
    #: config. Empty for config.json / params.json. Not part of equality.
    file_tensors: tuple[FileTensor, ...] = field(default=(), compare=False, repr=False, hash=False)

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def attention_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(layer for layer in self.layers if layer.kind.has_kv_heads)

    @property
    def query_heads(self) -> int:
        """The model's query-head count H (the largest, where layers differ)."""
        heads = [layer.q_heads for layer in self.layers if layer.q_heads]
        return max(heads) if heads else 0

    @property
    def kv_heads(self) -> int | None:
        """The model's KV-head count G when every attention layer agrees; None otherwise."""
        counts = {layer.k_heads for layer in self.attention_layers}
        return counts.pop() if len(counts) == 1 else None

    @property
    def head_dim(self) -> int | None:
        """The K head dim when every attention layer agrees (MLA: the latent width)."""
        dims = {layer.k_head_dim for layer in self.layers if layer.kind.has_kv_heads or layer.kind is LayerKind.MLA}
        return dims.pop() if len(dims) == 1 else None

    @property
    def kinds(self) -> tuple[LayerKind, ...]:
        """The layer kinds present, in a stable order."""
        present = {layer.kind for layer in self.layers}
        return tuple(kind for kind in LayerKind if kind in present)

    def groups(self, layers: Iterable[LayerSpec] | None = None) -> tuple[LayerGroup, ...]:
        """Layers grouped by identical cost, in order of first appearance."""
        buckets: dict[tuple[object, ...], list[LayerSpec]] = {}
        for layer in self.layers if layers is None else layers:
            buckets.setdefault(layer.signature(), []).append(layer)
        return tuple(LayerGroup(specs[0], tuple(s.index for s in specs)) for specs in buckets.values())

    @property
    def cross_layers(self) -> tuple[LayerSpec, ...]:
        return tuple(layer for layer in self.layers if layer.kind is LayerKind.CROSS)

    def with_images(self, images: int) -> CacheLayout:
        """The same model with every sequence carrying ``images`` images (0 = text only): what its
        cross-attention layers hold."""
        layers = tuple(
            replace(layer, images=images) if layer.kind is LayerKind.CROSS else layer for layer in self.layers
        )
        return replace(self, layers=layers)

    def with_kv_heads(self, kv_heads: int) -> CacheLayout:
        """The same model with ``kv_heads`` K/V heads in every attention layer (the GQA what-if)."""
        layers = tuple(
            replace(layer, k_heads=kv_heads, v_heads=kv_heads) if layer.kind.has_kv_heads else layer
            for layer in self.layers
        )
        return replace(self, layers=layers, rules=(*self.rules, f"what-if: {kv_heads} KV heads"))

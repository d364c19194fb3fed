"""Parameter count and weight bytes from a config, tensor by tensor.

:func:`count_parameters` rebuilds every weight tensor a model holds from its config (the decoder as the
family's modeling code builds it: embeddings, attention projections, MLP or MoE experts, norms, LM head)
and sums them with Python ints. Each family is a named rule below that says which transformers modeling
file (or, for remote-code models, which published modeling file) it follows; where a config omits a value
the family's transformers config class supplies, the default is cited. A count is ``exact`` when the rule
follows the family's architecture tensor for tensor, and an estimate otherwise (with a note saying why).

:func:`weight_bytes` prices those tensors: an explicit storage type, else the checkpoint's
``quantization_config`` (fp8 block scales, AWQ / GPTQ groups, MXFP4), else the 16-bit serving dtype.
Quantized formats convert only the decoder's weight matrices; embeddings, the LM head, norms, biases, MoE
routers and other small tensors stay 16-bit, as the checkpoints store them.

Only the text decoder is counted: a multimodal model's vision tower and projector hold no KV cache.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from math import prod
from typing import Any

from kvplan.config_reader import Fields
from kvplan.errors import ConfigError, UnknownDtypeError
from kvplan.formula import check_positive, serving_dtype, with_kv_heads
from kvplan.layout import CacheLayout, LayerKind, LayerSpec


def _cdiv(a: int, b: int) -> int:
    """Ceiling division on ints."""
    return -(-a // b)


# ----------------------------------------------------------------------------------------------------------
# The result


class Part(StrEnum):
    """Where a tensor sits in the model, for the breakdown."""

    EMBEDDING = "embedding"  # token (and learned position) embeddings
    ATTENTION = "attention"  # q/k/v/o projections and their biases, MLA projections, sinks
    MLP = "mlp"  # dense feed-forward blocks
    MOE = "moe"  # routed experts, shared experts, routers
    NORMS = "norms"  # RMSNorm / LayerNorm weights (and LayerNorm biases), q/k norms
    LM_HEAD = "lm_head"  # the output projection (absent when tied to the embedding)
    OTHER = "other"  # SSM / linear-attention mixers (Mamba, Gated DeltaNet)


class Role(StrEnum):
    """How a tensor is stored by quantized checkpoints and split by tensor parallelism."""

    MATRIX = "matrix"  # a decoder Linear weight (out x in): what weight quantization converts
    EXPERT = "expert"  # a routed expert's weight matrix (gpt-oss's MXFP4 converts only these)
    ROUTER = "router"  # small gating projections (MoE routers, shared-expert gates, V3.2 indexer weights)
    TABLE = "table"  # token / position embeddings and the LM head: kept 16-bit by quantized checkpoints
    VECTOR = "vector"  # biases, norm weights, sinks, SSM A/D/dt, conv kernels: never quantized


@dataclass(frozen=True)
class WeightTensor:
    """One kind of weight tensor and how many the model holds (layers x experts)."""

    part: Part
    role: Role
    name: str
    #: (out features, in features) for matrices, as the checkpoint stores them.
    shape: tuple[int, ...]
    count: int = 1
    #: Non-zero for K/V projection tensors: the KV heads of their layer. Tensor parallelism cannot split
    #: them over more ranks than heads (each rank keeps a whole head), so they replicate when TP > G.
    kv_heads: int = 0

    @property
    def params(self) -> int:
        return self.count * prod(self.shape)


@dataclass(frozen=True)
class ParamCount:
    """A model's parameter count from its config, with the tensors it is made of."""

    model: str
    family: str
    #: The family rule that produced the count.
    rule: str
    tensors: tuple[WeightTensor, ...]
    #: True when the rule follows this family's architecture exactly; False for an estimate.
    exact: bool
    tied_embeddings: bool
    #: The KV heads of a GQA what-if (None: the config's own).
    kv_heads: int | None = None
    #: Multi-token-prediction weights (DeepSeek, Qwen3.5): loaded only for speculative decoding, so they
    #: are not in :attr:`total`.
    mtp: int = 0
    notes: tuple[str, ...] = ()

    def part(self, part: Part) -> int:
        return sum(t.params for t in self.tensors if t.part is part)

    @property
    def total(self) -> int:
        return sum(t.params for t in self.tensors)

    @property
    def embedding(self) -> int:
        return self.part(Part.EMBEDDING)

    @property
    def attention(self) -> int:
        return self.part(Part.ATTENTION)

    @property
    def mlp(self) -> int:
        return self.part(Part.MLP)

    @property
    def moe(self) -> int:
        return self.part(Part.MOE)

    @property
    def norms(self) -> int:
        return self.part(Part.NORMS)

    @property
    def lm_head(self) -> int:
        return self.part(Part.LM_HEAD)

    @property
    def other(self) -> int:
        return self.part(Part.OTHER)

    def breakdown(self) -> tuple[tuple[Part, int], ...]:
        """Parameters per part, in a stable order (parts the model lacks included as 0)."""
        return tuple((p, self.part(p)) for p in Part)


# ----------------------------------------------------------------------------------------------------------
# Collecting tensors


class _Tensors:
    """Accumulates tensors, merging identical ones (same part, role, name, shape, KV heads) into a count."""

    def __init__(self) -> None:
        self._counts: dict[tuple[Part, Role, str, tuple[int, ...], int], int] = {}

    def add(self, part: Part, role: Role, name: str, shape: tuple[int, ...], count: int = 1, kv: int = 0) -> None:
        if count <= 0 or any(d <= 0 for d in shape):
            return
        key = (part, role, name, shape, kv)
        self._counts[key] = self._counts.get(key, 0) + count

    def linear(
        self,
        part: Part,
        name: str,
        out: int,
        inp: int,
        *,
        bias: bool = False,
        count: int = 1,
        role: Role = Role.MATRIX,
        kv: int = 0,
    ) -> None:
        self.add(part, role, f"{name}.weight", (out, inp), count, kv)
        if bias:
            self.add(part, Role.VECTOR, f"{name}.bias", (out,), count, kv)

    def norm(self, name: str, dim: int, *, bias: bool = False, count: int = 1, kv: int = 0) -> None:
        self.add(Part.NORMS, Role.VECTOR, f"{name}.weight", (dim,), count, kv)
        if bias:
            self.add(Part.NORMS, Role.VECTOR, f"{name}.bias", (dim,), count, kv)

    def vector(self, part: Part, name: str, shape: tuple[int, ...], count: int = 1) -> None:
        self.add(part, Role.VECTOR, name, shape, count)

    def freeze(self) -> tuple[WeightTensor, ...]:
        return tuple(
            WeightTensor(part, role, name, shape, count, kv)
            for (part, role, name, shape, kv), count in self._counts.items()
        )

    @property
    def params(self) -> int:
        return sum(count * prod(key[3]) for key, count in self._counts.items())


@dataclass(frozen=True)
class _Counted:
    """What a family rule returns."""

    rule: str
    tensors: tuple[WeightTensor, ...]
    tied: bool
    exact: bool = True
    notes: tuple[str, ...] = ()
    mtp: int = 0


@dataclass(frozen=True)
class _Config:
    """The config a rule reads: the layout (per-layer heads, what-if applied) and typed lookups."""

    layout: CacheLayout
    f: Fields

    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def hidden(self) -> int:
        return self.layout.hidden_size

    def integer(self, quantity: str, keys: Sequence[str], *, minimum: int = 1) -> int:
        return self.f.integer(quantity, keys, minimum=minimum)

    def optional(self, keys: Sequence[str], *, minimum: int = 1) -> int | None:
        return self.f.optional_integer(keys[0], keys, minimum=minimum)

    def flag(self, key: str, default: bool = False) -> bool:
        return self.f.flag(key, default)

    def number(self, quantity: str, key: str) -> float:
        value = self.f.data.get(key, self.f.defaults.get(key))
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.f.model, quantity, (key,), f"{value!r} is not a number")
        return float(value)


# ----------------------------------------------------------------------------------------------------------
# Family defaults (transformers' configuration_<family>.py, v5.23), for keys a config may omit

#: tie_word_embeddings defaults: True in these families' config classes (GPT2Config, BloomConfig,
#: FalconConfig, GemmaConfig, Gemma2Config, Gemma3TextConfig, GPTNeoConfig, OPTConfig, MptConfig,
#: MambaConfig, FalconMambaConfig, Starcoder2Config, CohereConfig, XGLMConfig) and False in every other
#: family we model (LlamaConfig, MistralConfig, Qwen2Config ... DeepseekV3Config, NemotronHConfig).
#: tiiuae's remote-code RWConfig (RefinedWeb / RefinedWebModel) ties them too (Falcon-7B's 6.92B).
TIED_BY_DEFAULT = frozenset(
    {
        "gpt2",
        "bloom",
        "falcon",
        "RefinedWeb",
        "RefinedWebModel",
        "gemma",
        "gemma2",
        "gemma3_text",
        "gemma3n_text",
        "gpt_neo",
        "opt",
        "mpt",
        "mamba",
        "falcon_mamba",
        "starcoder2",
        "cohere",
        "xglm",
    }
)

#: Other weight-relevant values a family's config class supplies when the file omits them.
#: Gemma3TextConfig: vocab_size 262_208 (google/gemma-3-*-it text_configs omit it). DeepseekV3Config:
#: first_k_dense_replace 3; DeepseekV2Config: 0. FalconConfig: parallel_attn True, bias False.
#: GPTNeoXConfig: attention_bias True. Qwen2MoeConfig: qkv_bias True. OPTConfig: ffn_dim 3072,
#: enable_bias True. MptConfig: no_bias True, expansion_ratio 4. Llama4TextConfig: intermediate_size_mlp
#: 16384. MambaConfig / FalconMambaConfig / JambaConfig: use_conv_bias True, use_bias / mamba_proj_bias False.
WEIGHT_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {"vocab_size": 262_208},
    "deepseek_v3": {"first_k_dense_replace": 3},
    "deepseek_v32": {"first_k_dense_replace": 3},
    "kimi_k2": {"first_k_dense_replace": 3},
    "deepseek_v2": {"first_k_dense_replace": 0},
    "falcon": {"parallel_attn": True, "bias": False},
    "RefinedWeb": {"parallel_attn": True, "bias": False},
    "RefinedWebModel": {"parallel_attn": True, "bias": False},
    "gpt_neox": {"attention_bias": True},
    "qwen2_moe": {"qkv_bias": True},
    "opt": {"ffn_dim": 3072, "enable_bias": True},
    "mpt": {"no_bias": True, "expansion_ratio": 4},
    "llama4_text": {"intermediate_size_mlp": 16_384},
    "mamba": {"use_conv_bias": True, "use_bias": False},
    "falcon_mamba": {"use_conv_bias": True, "use_bias": False},
    "mamba2": {"use_conv_bias": True, "use_bias": False},
    "jamba": {"mamba_proj_bias": False, "mamba_conv_bias": True},
    "nemotron_h": {"use_conv_bias": True, "use_bias": False, "mlp_bias": False},
    "internlm": {"bias": True},
}

VOCAB_KEYS = ("vocab_size", "padded_vocab_size")


def _tied(c: _Config) -> bool:
    """Rule tie_word_embeddings: the config's key, else the family default (TIED_BY_DEFAULT)."""
    value = c.f.data.get("tie_word_embeddings")
    if isinstance(value, bool):
        return value
    return c.family in TIED_BY_DEFAULT


def _vocab(c: _Config) -> int:
    return c.integer("vocab size", VOCAB_KEYS)


def _embedding_and_head(
    t: _Tensors,
    c: _Config,
    *,
    tied: bool,
    vocab: int | None = None,
    positions: int = 0,
    embed_norm_bias: bool | None = None,
    lm_head_bias: bool = False,
) -> None:
    """Token embedding, learned positions, the LM head (unless tied) and its bias (GPT-J, Phi-1/2)."""
    vocab = _vocab(c) if vocab is None else vocab
    t.add(Part.EMBEDDING, Role.TABLE, "embed_tokens.weight", (vocab, c.hidden))
    if positions:
        t.add(Part.EMBEDDING, Role.TABLE, "embed_positions.weight", (positions, c.hidden))
    if embed_norm_bias is not None:
        t.norm("word_embeddings_layernorm", c.hidden, bias=embed_norm_bias)
    if not tied:
        t.add(Part.LM_HEAD, Role.TABLE, "lm_head.weight", (vocab, c.hidden))
    if lm_head_bias:
        t.vector(Part.LM_HEAD, "lm_head.bias", (vocab,))


# ----------------------------------------------------------------------------------------------------------
# Feed-forward: dense MLP or mixture of experts


@dataclass(frozen=True)
class Moe:
    """One MoE block: routed experts, optional shared expert(s), the router."""

    experts: int
    intermediate: int
    gated: bool = True
    expert_bias: bool = False
    router_bias: bool = False
    #: Total intermediate width of the shared expert(s), 0 for none (DeepSeek: n_shared x moe width).
    shared: int = 0
    #: A sigmoid gate (1 x hidden) on the shared expert (Qwen2-MoE, Qwen3-Next, Qwen3.5-MoE).
    shared_gate: bool = False
    #: Nemotron-H: experts work in a latent of this width, with projections in and out.
    latent: int = 0
    latent_bias: bool = False


#: One layer's feed-forward: a dense MLP's intermediate width, a MoE block, or None (no FFN).
Ffn = int | Moe | None

EXPERT_KEYS = ("num_local_experts", "n_routed_experts", "num_experts")


def _mlp(t: _Tensors, part: Part, name: str, hidden: int, inter: int, *, gated: bool, bias: bool, role: Role) -> None:
    if gated:
        t.linear(part, f"{name}.gate_proj", inter, hidden, bias=bias, role=role)
    t.linear(part, f"{name}.up_proj", inter, hidden, bias=bias, role=role)
    t.linear(part, f"{name}.down_proj", hidden, inter, bias=bias, role=role)


def _moe(t: _Tensors, hidden: int, moe: Moe) -> None:
    e = moe.experts
    width = moe.latent or hidden
    if moe.gated:
        t.linear(
            Part.MOE, "experts.gate_proj", moe.intermediate, width, bias=moe.expert_bias, count=e, role=Role.EXPERT
        )
    t.linear(Part.MOE, "experts.up_proj", moe.intermediate, width, bias=moe.expert_bias, count=e, role=Role.EXPERT)
    t.linear(Part.MOE, "experts.down_proj", width, moe.intermediate, bias=moe.expert_bias, count=e, role=Role.EXPERT)
    t.linear(Part.MOE, "router", e, hidden, bias=moe.router_bias, role=Role.ROUTER)
    if moe.shared:
        _mlp(t, Part.MOE, "shared_expert", hidden, moe.shared, gated=moe.gated, bias=False, role=Role.MATRIX)
    if moe.shared_gate:
        t.linear(Part.MOE, "shared_expert_gate", 1, hidden, role=Role.ROUTER)
    if moe.latent:
        t.linear(Part.MOE, "fc1_latent_proj", moe.latent, hidden, bias=moe.latent_bias)
        t.linear(Part.MOE, "fc2_latent_proj", hidden, moe.latent, bias=moe.latent_bias)


def _ffn(t: _Tensors, hidden: int, ffn: Ffn, *, gated: bool, bias: bool) -> None:
    if isinstance(ffn, Moe):
        _moe(t, hidden, ffn)
    elif ffn:
        _mlp(t, Part.MLP, "mlp", hidden, ffn, gated=gated, bias=bias, role=Role.MATRIX)


def _moe_flags(c: _Config, layers: int) -> list[bool]:
    """Which layers are MoE, by the first rule whose keys the config has."""
    f = c.f
    # Rule mlp_layer_types: MiMoV2FlashConfig spells it "dense" / "sparse" per layer.
    types = f.sequence("mlp layer types", "mlp_layer_types", layers)
    if types is not None:
        return [t == "sparse" for t in types]
    # Rule moe_layer_freq_list: MiMo-V2-Flash lists moe_layer_freq per layer (0 dense, 1 MoE).
    freq = f.data.get("moe_layer_freq")
    if isinstance(freq, list):
        listed = f.sequence("moe_layer_freq", "moe_layer_freq", layers) or []
        return [bool(v) for v in listed]
    # Rule llama4_moe_layers: Llama4TextConfig.moe_layers, else every interleave_moe_layer_step-th layer
    # (layers step-1, 2*step-1, ...: Maverick alternates dense and MoE, Scout is all MoE).
    moe_layers = f.sequence("moe_layers", "moe_layers")
    if moe_layers is not None:
        return [i in moe_layers for i in range(layers)]
    step = c.optional(("interleave_moe_layer_step",))
    if step is not None:
        return [(i + 1) % step == 0 for i in range(layers)]
    # Rule jamba_expert_period: JambaConfig puts experts where i % expert_layer_period == offset.
    period = c.optional(("expert_layer_period",))
    if period is not None:
        offset = c.optional(("expert_layer_offset",), minimum=0) or 0
        return [i % period == offset for i in range(layers)]
    # Rule deepseek_first_k_dense: DeepSeek-V2/V3, Kimi-K2: the first first_k_dense_replace layers are
    # dense, then every moe_layer_freq-th layer is MoE (DeepSeek's modeling_deepseek.py).
    first_k = c.optional(("first_k_dense_replace",), minimum=0)
    if first_k is not None:
        every = c.optional(("moe_layer_freq",)) or 1
        return [i >= first_k and i % every == 0 for i in range(layers)]
    # Rule qwen_sparse_step: Qwen2-MoE / Qwen3-MoE / Qwen3-Next: MoE unless the layer is in mlp_only_layers,
    # on every decoder_sparse_step-th layer ((i + 1) % step == 0).
    sparse_step = c.optional(("decoder_sparse_step",))
    dense_only = f.sequence("mlp_only_layers", "mlp_only_layers") or []
    if sparse_step is not None or dense_only:
        step = sparse_step or 1
        return [i not in dense_only and (i + 1) % step == 0 for i in range(layers)]
    return [True] * layers


def _moe_block(c: _Config, experts: int) -> Moe:
    """The MoE block of a family: expert width, shared experts, biases."""
    f = c.f
    family = c.family
    inter = c.optional(("moe_intermediate_size",)) or c.integer("expert width", ("intermediate_size",))
    shared = 0
    n_shared = c.optional(("n_shared_experts",), minimum=0)
    if n_shared:
        # DeepSeek: the shared experts are one MLP n_shared_experts x moe_intermediate_size wide.
        shared = n_shared * inter
    shared = c.optional(("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size")) or shared
    if family == "llama4_text":
        # Llama4TextMoe: one shared expert as wide as the routed ones (intermediate_size).
        shared = inter
    # gpt-oss: GptOssExperts has gate_up / down biases and GptOssTopKRouter a bias.
    biased = family == "gpt_oss"
    return Moe(
        experts=experts,
        intermediate=inter,
        gated=family != "nemotron_h",
        expert_bias=biased,
        router_bias=biased,
        shared=shared,
        shared_gate=bool(shared) and family in ("qwen2_moe", "qwen3_next", "qwen3_5_moe_text"),
        latent=c.optional(("moe_latent_size",)) or 0,
        latent_bias=f.flag("mlp_bias"),
    )


def _ffn_plan(c: _Config, dense: int, layers: int) -> list[Ffn]:
    """Each layer's feed-forward: MoE where the family's rule says so, else a dense MLP of width ``dense``."""
    experts = next((n for key in EXPERT_KEYS if type(n := c.f.data.get(key)) is int and n > 0), 0)
    if not experts:
        return [dense] * layers
    block = _moe_block(c, experts)
    return [block if moe else dense for moe in _moe_flags(c, layers)]


# ----------------------------------------------------------------------------------------------------------
# Rule dense_decoder: llama-like and GPT-style decoders, one trait set per family


class QkNorm(StrEnum):
    """Which q/k norms an attention layer has."""

    NONE = "none"
    HEAD = "head"  # one RMSNorm over head_dim for q and one for k (Qwen3, Gemma 3, EXAONE 4)
    FULL = "full"  # over all q heads and all k heads (OLMo 2/3; StableLM's per-head LayerNorms)


@dataclass(frozen=True)
class DecoderSpec:
    """How one family builds its decoder layers, from its transformers modeling file."""

    intermediate: int
    qkv_bias: bool = False
    o_bias: bool = False
    #: Qwen3-Next / Qwen3.5: q_proj also emits an output gate (2 x heads x head_dim).
    gated_q: bool = False
    qk_norm: QkNorm = QkNorm.NONE
    layer_norms: int = 2
    #: LayerNorm with a bias (GPT-style) rather than RMSNorm.
    norm_bias: bool = False
    gated_mlp: bool = True
    mlp_bias: bool = False
    #: Layer kinds with one learned attention-sink logit per query head (gpt-oss, MiMo-V2-Flash).
    sinks: frozenset[LayerKind] = frozenset()
    positions: int = 0
    #: BLOOM's LayerNorm right after the embedding (None: no such norm).
    embed_norm_bias: bool | None = None
    final_norm: bool = True
    lm_head_bias: bool = False
    exact: bool = True
    notes: tuple[str, ...] = ()


def _dense_width(c: _Config, *keys: str) -> int:
    return c.integer("intermediate size", (*keys, "intermediate_size"))


def _llama(c: _Config) -> DecoderSpec:
    # LlamaConfig / GraniteConfig: attention_bias on q, k, v and o; mlp_bias on the MLP.
    bias = c.flag("attention_bias")
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, mlp_bias=c.flag("mlp_bias"))


def _no_bias(c: _Config) -> DecoderSpec:
    # Mistral, Ministral, Mixtral, Baichuan, Phi-3: no biases anywhere.
    return DecoderSpec(_dense_width(c))


def _qwen2(c: _Config) -> DecoderSpec:
    # Qwen2Attention: q, k and v have a bias (hard-coded), o_proj none; Qwen2MoeConfig: qkv_bias (True).
    return DecoderSpec(_dense_width(c), qkv_bias=c.family == "qwen2" or c.flag("qkv_bias"))


def _qwen3(c: _Config) -> DecoderSpec:
    # Qwen3 / Qwen3-MoE: attention_bias on all four, RMSNorm over head_dim for q and k.
    bias = c.flag("attention_bias")
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, qk_norm=QkNorm.HEAD)


def _qwen3_next(c: _Config) -> DecoderSpec:
    # Qwen3-Next / Qwen3.5: gated attention (q_proj is 2 x heads x head_dim wide, the second half gates the
    # output), head-dim q/k norms; the other layers are Gated DeltaNet (see _gated_delta_net).
    bias = c.flag("attention_bias")
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, gated_q=True, qk_norm=QkNorm.HEAD)


def _gemma(c: _Config) -> DecoderSpec:
    # Gemma: 2 norms per layer. Gemma 2: 4 (pre/post attention, pre/post feed-forward). Gemma 3: 4, and
    # head-dim q/k norms.
    bias = c.flag("attention_bias")
    norms = 2 if c.family == "gemma" else 4
    qk = QkNorm.HEAD if c.family == "gemma3_text" else QkNorm.NONE
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, layer_norms=norms, qk_norm=qk)


def _exaone4(c: _Config) -> DecoderSpec:
    # Exaone4: post-attention and post-feed-forward norms only; head-dim q/k norms.
    return DecoderSpec(_dense_width(c), qk_norm=QkNorm.HEAD)


def _olmo(c: _Config) -> DecoderSpec:
    # OLMo 2 / 3: post-attention and post-feed-forward norms; q_norm over all q heads, k_norm over all K
    # heads (so k_norm shrinks with a GQA what-if).
    bias = c.flag("attention_bias")
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, qk_norm=QkNorm.FULL)


def _gpt_oss(c: _Config) -> DecoderSpec:
    # GptOssAttention: attention_bias on q, k, v, o and one sink logit per head in every layer.
    bias = c.flag("attention_bias")
    sinks = frozenset({LayerKind.FULL, LayerKind.SLIDING})
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, sinks=sinks)


def _mimo(c: _Config) -> DecoderSpec:
    # MiMoV2FlashAttention: attention_bias on q, k, v (o_proj never); sinks per the config's flags
    # (add_swa_attention_sink_bias on sliding layers, add_full_attention_sink_bias on full ones).
    sinks = set()
    if c.flag("add_swa_attention_sink_bias", True):
        sinks.add(LayerKind.SLIDING)
    if c.flag("add_full_attention_sink_bias"):
        sinks.add(LayerKind.FULL)
    return DecoderSpec(_dense_width(c), qkv_bias=c.flag("attention_bias"), sinks=frozenset(sinks))


def _llama4(c: _Config) -> DecoderSpec:
    # Llama4TextDecoderLayer: dense layers are intermediate_size_mlp wide (intermediate_size is the expert
    # width); use_qk_norm is an L2 norm without weights.
    bias = c.flag("attention_bias")
    return DecoderSpec(c.integer("dense width", ("intermediate_size_mlp",)), qkv_bias=bias, o_bias=bias)


def _internlm(c: _Config) -> DecoderSpec:
    # InternLM (InternLMConfig bias, default True) and InternLM2 (remote modeling_internlm2.py: wqkv and
    # wo carry config.bias): attention biases only.
    bias = c.flag("bias")
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias)


def _chatglm(c: _Config) -> DecoderSpec:
    # ChatGLM2/3, GLM-4 (remote modeling_chatglm.py): query_key_value has add_qkv_bias, dense and the MLP
    # add_bias_linear; the MLP's dense_h_to_4h is gated (2 x ffn_hidden_size); RMSNorm unless rmsnorm is
    # false; a final norm when post_layer_norm; padded_vocab_size rows.
    linear = c.flag("add_bias_linear")
    return DecoderSpec(
        c.integer("intermediate size", ("ffn_hidden_size",)),
        qkv_bias=c.flag("add_qkv_bias"),
        o_bias=linear,
        mlp_bias=linear,
        norm_bias=not c.flag("rmsnorm", True),
        final_norm=c.flag("post_layer_norm", True),
    )


def _stablelm(c: _Config) -> DecoderSpec:
    # StableLM: LayerNorms with bias, use_qkv_bias on q/k/v, one norm per layer with use_parallel_residual,
    # qk_layernorm as per-head LayerNorms without bias.
    qk = QkNorm.FULL if c.flag("qk_layernorm") else QkNorm.NONE
    norms = 1 if c.flag("use_parallel_residual") else 2
    return DecoderSpec(_dense_width(c), qkv_bias=c.flag("use_qkv_bias"), norm_bias=True, qk_norm=qk, layer_norms=norms)


def _starcoder2(c: _Config) -> DecoderSpec:
    # Starcoder2: LayerNorms with bias; use_bias on every projection; a plain (c_fc, c_proj) MLP.
    bias = c.flag("use_bias", True)
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, mlp_bias=bias, norm_bias=True, gated_mlp=False)


def _four_h(c: _Config, *keys: str) -> int:
    """A plain MLP's width: the first key present, else 4 x hidden (GPT-2 n_inner, Falcon ffn_hidden_size)."""
    return c.optional(keys) or 4 * c.hidden


def _gpt2(c: _Config) -> DecoderSpec:
    # GPT-2: Conv1D c_attn / c_proj / c_fc with biases, LayerNorms with bias, learned positions.
    return DecoderSpec(
        _four_h(c, "n_inner"),
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        norm_bias=True,
        gated_mlp=False,
        positions=c.integer("positions", ("n_positions", "max_position_embeddings")),
    )


def _gpt_neox(c: _Config) -> DecoderSpec:
    # GPT-NeoX / Pythia: fused query_key_value and dense with attention_bias (default True), biased MLP,
    # two LayerNorms per layer even with use_parallel_residual.
    bias = c.flag("attention_bias")
    return DecoderSpec(_dense_width(c), qkv_bias=bias, o_bias=bias, mlp_bias=True, norm_bias=True, gated_mlp=False)


def _gptj(c: _Config) -> DecoderSpec:
    # GPT-J / CodeGen: unbiased q/k/v/out, biased fc_in/fc_out, one LayerNorm per layer (parallel),
    # an LM head with a bias.
    return DecoderSpec(
        _four_h(c, "n_inner"), mlp_bias=True, norm_bias=True, gated_mlp=False, layer_norms=1, lm_head_bias=True
    )


def _gpt_neo(c: _Config) -> DecoderSpec:
    # GPT-Neo: unbiased q/k/v, biased out_proj and MLP, learned positions.
    return DecoderSpec(
        _four_h(c, "intermediate_size"),
        o_bias=True,
        mlp_bias=True,
        norm_bias=True,
        gated_mlp=False,
        positions=c.integer("positions", ("max_position_embeddings",)),
    )


def _bloom(c: _Config) -> DecoderSpec:
    # BLOOM: biased fused query_key_value, dense and a 4 x hidden MLP; a LayerNorm after the embedding.
    return DecoderSpec(
        4 * c.hidden,
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        norm_bias=True,
        gated_mlp=False,
        embed_norm_bias=True,
    )


def _falcon(c: _Config) -> DecoderSpec:
    # Falcon (and tiiuae's legacy RefinedWeb = 40B-style, RefinedWebModel = 7B-style configs): one
    # query_key_value of (heads + 2 x KV heads) x head_dim, config.bias on every projection, a plain
    # 4 x hidden MLP. LayerNorms per layer (FalconDecoderLayer): two without parallel_attn; with it, two
    # (ln_attn, ln_mlp) in the new decoder architecture (num_ln_in_parallel_attn, default 2) and one in
    # the old.
    bias = c.flag("bias")
    new_arch = c.flag("new_decoder_architecture") or c.family == "RefinedWeb"
    if not c.flag("parallel_attn"):
        norms = 2
    elif new_arch:
        norms = c.optional(("num_ln_in_parallel_attn",)) or 2
    else:
        norms = 1
    return DecoderSpec(
        _four_h(c, "ffn_hidden_size"),
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        norm_bias=True,
        gated_mlp=False,
        layer_norms=norms,
    )


def _phi(c: _Config) -> DecoderSpec:
    # Phi-1/1.5/2: biased q/k/v/dense and fc1/fc2, one LayerNorm per layer (parallel), LM head with bias;
    # qk_layernorm adds LayerNorms (with bias) over head_dim.
    notes: tuple[str, ...] = ()
    exact = True
    if c.flag("qk_layernorm"):
        exact, notes = False, ("phi qk_layernorm not modelled",)
    return DecoderSpec(
        _dense_width(c),
        qkv_bias=True,
        o_bias=True,
        mlp_bias=True,
        norm_bias=True,
        gated_mlp=False,
        layer_norms=1,
        lm_head_bias=True,
        exact=exact,
        notes=notes,
    )


def _opt(c: _Config) -> DecoderSpec:
    # OPT: enable_bias on every projection, learned positions with an offset of 2 (OPTLearnedPositional-
    # Embedding), ffn_dim wide plain MLP, a final norm unless do_layer_norm_before is false.
    bias = c.flag("enable_bias")
    projected = c.optional(("word_embed_proj_dim",)) not in (None, c.hidden)
    notes = ("OPT word_embed_proj_dim != hidden_size (project_in / project_out) not modelled",) if projected else ()
    return DecoderSpec(
        c.integer("intermediate size", ("ffn_dim",)),
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=bias,
        norm_bias=c.flag("layer_norm_elementwise_affine", True),
        gated_mlp=False,
        positions=c.integer("positions", ("max_position_embeddings",)) + 2,
        final_norm=c.flag("do_layer_norm_before", True) and not c.flag("_remove_final_layer_norm"),
        exact=not projected,
        notes=notes,
    )


def _mpt(c: _Config) -> DecoderSpec:
    # MPT: fused Wqkv, plain expansion_ratio x hidden MLP; no_bias (default True) drops every bias,
    # LayerNorm biases included.
    bias = not c.flag("no_bias")
    width = int(c.number("expansion_ratio", "expansion_ratio") * c.hidden)
    return DecoderSpec(width, qkv_bias=bias, o_bias=bias, mlp_bias=bias, norm_bias=bias, gated_mlp=False)


#: Rule dense_decoder: the families whose decoder layers the generic builder covers, each with the
#: modeling file it follows (transformers unless noted).
DECODER_FAMILIES: dict[str, Callable[[_Config], DecoderSpec]] = {
    "llama": _llama,
    "granite": _llama,
    "mistral": _no_bias,
    "ministral": _no_bias,
    "ministral3": _no_bias,
    "mixtral": _no_bias,
    "baichuan": _no_bias,  # remote modeling_baichuan.py: W_pack, o_proj, MLP without biases
    "phi3": _no_bias,
    "qwen2": _qwen2,
    "qwen2_moe": _qwen2,
    "qwen3": _qwen3,
    "qwen3_moe": _qwen3,
    "qwen3_next": _qwen3_next,
    "qwen3_5_text": _qwen3_next,
    "qwen3_5_moe_text": _qwen3_next,
    "gemma": _gemma,
    "gemma2": _gemma,
    "gemma3_text": _gemma,
    "exaone4": _exaone4,
    "olmo2": _olmo,
    "olmo3": _olmo,
    "gpt_oss": _gpt_oss,
    "mimo_v2_flash": _mimo,
    "llama4_text": _llama4,
    "internlm": _internlm,
    "internlm2": _internlm,
    "chatglm": _chatglm,
    "stablelm": _stablelm,
    "starcoder2": _starcoder2,
    "jamba": _no_bias,
    "gpt2": _gpt2,
    "gpt_neox": _gpt_neox,
    "gptj": _gptj,
    "codegen": _gptj,
    "gpt_neo": _gpt_neo,
    "bloom": _bloom,
    "falcon": _falcon,
    "RefinedWeb": _falcon,
    "RefinedWebModel": _falcon,
    "phi": _phi,
    "opt": _opt,
    "mpt": _mpt,
}


#: Activations of plain (two-matrix) MLPs; any other hidden_act is taken as a gated (three-matrix) MLP.
PLAIN_MLP_ACTIVATIONS = frozenset({"relu", "relu2", "gelu", "gelu_new", "gelu_fast", "quick_gelu"})


def _fallback(c: _Config) -> DecoderSpec:
    """An unmodelled family, counted as a llama-style decoder (RMSNorms, attention_bias / mlp_bias if
    stated), with a plain MLP when hidden_act is one of PLAIN_MLP_ACTIVATIONS: an estimate."""
    bias = c.flag("attention_bias")
    act = c.f.data.get("hidden_act", c.f.data.get("activation_function"))
    gated = not (isinstance(act, str) and act in PLAIN_MLP_ACTIVATIONS)
    return DecoderSpec(
        _dense_width(c, "ffn_hidden_size", "n_inner"),
        qkv_bias=bias,
        o_bias=bias,
        mlp_bias=c.flag("mlp_bias"),
        gated_mlp=gated,
        exact=False,
        notes=(
            f"family {c.family!r} is not modelled in detail; counted as a llama-style decoder with a "
            f"{'gated' if gated else 'plain'} MLP (an estimate)",
        ),
    )


def _attention(t: _Tensors, c: _Config, spec: DecoderSpec, layer: LayerSpec) -> None:
    """q, k, v, o (with their biases), q/k norms and sinks of one softmax-attention layer."""
    shared = layer.kind is LayerKind.SHARED
    if shared and layer.shares_with is not None:
        # Gemma 3n: a KV-sharing layer has q_proj, q_norm and o_proj of the producer's shape, and no k_proj,
        # v_proj or k_norm (Gemma3nTextAttention: only when not is_kv_shared_layer).
        layer = c.layout.layers[layer.shares_with]
    h = c.hidden
    q = layer.q_heads * layer.k_head_dim
    k = layer.k_heads * layer.k_head_dim
    v = layer.v_heads * layer.v_head_dim
    o_in = layer.q_heads * layer.v_head_dim
    if c.family == "stablelm":
        o_in = h  # StableLmAttention: o_proj is hidden x hidden
    g = layer.k_heads
    t.linear(Part.ATTENTION, "q_proj", q * 2 if spec.gated_q else q, h, bias=spec.qkv_bias)
    if not shared:
        t.linear(Part.ATTENTION, "k_proj", k, h, bias=spec.qkv_bias, kv=g)
        t.linear(Part.ATTENTION, "v_proj", v, h, bias=spec.qkv_bias, kv=g)
    t.linear(Part.ATTENTION, "o_proj", h, o_in, bias=spec.o_bias)
    if spec.qk_norm is QkNorm.HEAD:
        t.norm("q_norm", layer.k_head_dim)
        if not shared:
            t.norm("k_norm", layer.k_head_dim)
    elif spec.qk_norm is QkNorm.FULL:
        t.norm("q_norm", q)
        t.norm("k_norm", k, kv=g)
    if layer.kind in spec.sinks:
        t.vector(Part.ATTENTION, "sinks", (layer.q_heads,))


def dense_decoder(c: _Config) -> _Counted:
    """Rule dense_decoder: embedding, N x (norms, attention or a mixer, MLP or MoE), final norm, LM head."""
    maker = DECODER_FAMILIES.get(c.family, _fallback)
    spec = maker(c)
    layers = c.layout.layers
    ffns = _ffn_plan(c, spec.intermediate, len(layers))
    t = _Tensors()
    tied = _tied(c)
    notes = list(spec.notes)
    exact = spec.exact
    if c.family not in DECODER_FAMILIES and c.f.data.get("tie_word_embeddings") is None:
        notes.append("tie_word_embeddings not stated; assumed untied")
    _embedding_and_head(
        t,
        c,
        tied=tied,
        positions=spec.positions,
        embed_norm_bias=spec.embed_norm_bias,
        lm_head_bias=spec.lm_head_bias,
    )
    unmodelled = 0
    for layer, ffn in zip(layers, ffns, strict=True):
        t.norm("layer_norms", c.hidden, bias=spec.norm_bias, count=spec.layer_norms)
        if layer.kind is LayerKind.STATE:
            unmodelled += not _state_mixer(t, c)
        elif layer.kind is not LayerKind.NONE:
            _attention(t, c, spec, layer)
        _ffn(t, c.hidden, ffn, gated=spec.gated_mlp, bias=spec.mlp_bias)
    if spec.final_norm:
        t.norm("norm", c.hidden, bias=spec.norm_bias)
    if unmodelled:
        exact = False
        notes.append(f"{c.family}: the mixers of {unmodelled} linear-attention / SSM layers are not counted")
    rule = "dense decoder" if c.family in DECODER_FAMILIES else "dense decoder (fallback)"
    if any(isinstance(ffn, Moe) for ffn in ffns):
        rule = rule.replace("dense decoder", "MoE decoder")
    if any(layer.kind is LayerKind.STATE for layer in layers):
        rule = rule.replace("decoder", "hybrid decoder")
    return _Counted(rule, t.freeze(), tied, exact, tuple(notes), _qwen_mtp(c, spec))


def _qwen_mtp(c: _Config, spec: DecoderSpec) -> int:
    """Qwen3.5's mtp_num_hidden_layers: each one full-attention decoder layer (gated attention, the
    model's MLP) plus a 2h -> h fc and three norms; it shares the embedding and LM head (an estimate)."""
    count = c.optional(("mtp_num_hidden_layers",), minimum=0)
    template = next((layer for layer in c.layout.layers if layer.kind is LayerKind.FULL), None)
    if not count or template is None:
        return 0
    t = _Tensors()
    _attention(t, c, spec, template)
    _ffn(t, c.hidden, _ffn_plan(c, spec.intermediate, 1)[0], gated=True, bias=False)
    t.norm("norms", c.hidden, count=2 + 3)
    t.linear(Part.OTHER, "mtp.fc", c.hidden, 2 * c.hidden)
    return count * t.params


# ----------------------------------------------------------------------------------------------------------
# State mixers of hybrid models (Part.OTHER)


def _state_mixer(t: _Tensors, c: _Config) -> bool:
    """The linear-attention / SSM mixer of one state layer; False when the family is not modelled."""
    if c.family in ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"):
        _gated_delta_net(t, c)
    elif c.family == "jamba":
        _mamba1(t, c, jamba=True)
    else:
        return False
    return True


def _gated_delta_net(t: _Tensors, c: _Config) -> None:
    # Qwen3NextGatedDeltaNet / Qwen3_5GatedDeltaNet: in-projections for q, k, v, z (the output gate) and
    # the per-value-head b and a; a depthwise conv over q, k, v without bias; dt_bias and A_log per value
    # head; a gated RMSNorm over the value head dim; out_proj.
    kh = c.integer("linear_num_key_heads", ("linear_num_key_heads",))
    vh = c.integer("linear_num_value_heads", ("linear_num_value_heads",))
    kd = c.integer("linear_key_head_dim", ("linear_key_head_dim",))
    vd = c.integer("linear_value_head_dim", ("linear_value_head_dim",))
    kernel = c.integer("linear_conv_kernel_dim", ("linear_conv_kernel_dim",))
    h = c.hidden
    key, value = kh * kd, vh * vd
    t.linear(Part.OTHER, "linear_attn.in_proj_qkv", 2 * key + value, h)
    t.linear(Part.OTHER, "linear_attn.in_proj_z", value, h)
    t.linear(Part.OTHER, "linear_attn.in_proj_ba", 2 * vh, h)
    t.vector(Part.OTHER, "linear_attn.conv1d.weight", (2 * key + value, 1, kernel))
    t.vector(Part.OTHER, "linear_attn.dt_bias", (vh,))
    t.vector(Part.OTHER, "linear_attn.A_log", (vh,))
    t.norm("linear_attn.norm", vd)
    t.linear(Part.OTHER, "linear_attn.out_proj", h, value)


def _mamba1(t: _Tensors, c: _Config, *, jamba: bool = False) -> None:
    # MambaMixer / FalconMambaMixer / JambaMambaMixer: in_proj (x and z), a depthwise conv, x_proj to
    # dt_rank + 2 x d_state, dt_proj (with bias), A_log (d_inner x d_state), D, out_proj. Jamba adds RMSNorms
    # over dt, B and C. dt_rank "auto" = ceil(hidden / 16).
    h = c.hidden
    if jamba:
        state = c.integer("mamba_d_state", ("mamba_d_state",))
        kernel = c.integer("mamba_d_conv", ("mamba_d_conv",))
        inner = c.integer("mamba_expand", ("mamba_expand",)) * h
        rank_key, conv_key, bias_key = "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias"
    else:
        state = c.integer("state_size", ("state_size", "d_state"))
        kernel = c.integer("conv_kernel", ("conv_kernel", "d_conv"))
        inner = c.optional(("intermediate_size",)) or c.integer("expand", ("expand",)) * h
        rank_key, conv_key, bias_key = "time_step_rank", "use_conv_bias", "use_bias"
    raw_rank = c.f.data.get(rank_key, "auto")
    rank = raw_rank if isinstance(raw_rank, int) and not isinstance(raw_rank, bool) else _cdiv(h, 16)
    bias = c.flag(bias_key)
    t.linear(Part.OTHER, "mixer.in_proj", 2 * inner, h, bias=bias)
    t.vector(Part.OTHER, "mixer.conv1d.weight", (inner, 1, kernel))
    if c.flag(conv_key, True):
        t.vector(Part.OTHER, "mixer.conv1d.bias", (inner,))
    t.linear(Part.OTHER, "mixer.x_proj", rank + 2 * state, inner)
    t.linear(Part.OTHER, "mixer.dt_proj", inner, rank, bias=True)
    t.vector(Part.OTHER, "mixer.A_log", (inner, state))
    t.vector(Part.OTHER, "mixer.D", (inner,))
    t.linear(Part.OTHER, "mixer.out_proj", h, inner, bias=bias)
    if jamba:
        t.norm("mixer.dt_layernorm", rank)
        t.norm("mixer.b_layernorm", state)
        t.norm("mixer.c_layernorm", state)


def _mamba2(t: _Tensors, c: _Config, *, heads: int, head_dim: int) -> None:
    # Mamba2Mixer / NemotronHMamba2Mixer: in_proj to x, z, B, C and dt (2 x d_inner + 2 x groups x state
    # + heads), a depthwise conv over x, B, C, dt_bias / A_log / D per head, a gated RMSNorm over d_inner,
    # out_proj.
    h = c.hidden
    inner = heads * head_dim
    groups = c.integer("n_groups", ("n_groups",))
    state = c.integer("ssm_state_size", ("ssm_state_size", "state_size"))
    kernel = c.integer("conv_kernel", ("conv_kernel",))
    conv = inner + 2 * groups * state
    bias = c.flag("use_bias")
    t.linear(Part.OTHER, "mixer.in_proj", inner + conv + heads, h, bias=bias)
    t.vector(Part.OTHER, "mixer.conv1d.weight", (conv, 1, kernel))
    if c.flag("use_conv_bias", True):
        t.vector(Part.OTHER, "mixer.conv1d.bias", (conv,))
    for name in ("dt_bias", "A_log", "D"):
        t.vector(Part.OTHER, f"mixer.{name}", (heads,))
    t.norm("mixer.norm", inner)
    t.linear(Part.OTHER, "mixer.out_proj", h, inner, bias=bias)


# ----------------------------------------------------------------------------------------------------------
# Other family rules


def meta_params(c: _Config) -> _Counted:
    """Rule meta_params: Meta's reference Transformer (llama/model.py) from params.json: tok_embeddings,
    per layer wq/wk/wv/wo, a SwiGLU feed-forward, two RMSNorms, then norm and a separate output layer.

    The feed-forward width is params.json's hidden_dim (Mistral) or, as the reference computes it,
    int(2 x 4 x dim / 3), times ffn_dim_multiplier, rounded up to multiple_of. The reference model never ties
    the output to the embedding; note that the Hugging Face conversions of Llama 3.2 1B/3B do.
    """
    notes: list[str] = []
    dim = c.hidden
    width = c.optional(("hidden_dim",))
    if width is None:
        multiple = c.integer("multiple_of", ("multiple_of",))
        width = int(2 * 4 * dim / 3)
        if c.f.data.get("ffn_dim_multiplier") is not None:
            width = int(c.number("ffn_dim_multiplier", "ffn_dim_multiplier") * width)
        width = multiple * ((width + multiple - 1) // multiple)
    if c.f.data.get("vocab_size") == -1:
        # Rule meta_vocab_minus_one: Llama 1/2 params.json say vocab_size -1 (taken from the tokenizer at
        # load time); their SentencePiece tokenizer has 32,000 pieces.
        vocab = 32_000
        notes.append("vocab_size -1 in params.json: the Llama 1/2 tokenizer's 32,000")
    else:
        vocab = _vocab(c)
    notes.append(
        "params.json does not say whether the output layer is tied to the embedding; counted untied as Meta's "
        "reference model holds it (the Hugging Face configs of Llama 3.2 1B/3B tie it: vocab x dim fewer)"
    )
    t = _Tensors()
    _embedding_and_head(t, c, tied=False, vocab=vocab)
    spec = DecoderSpec(width)
    for layer in c.layout.layers:
        t.norm("layer_norms", dim, count=2)
        _attention(t, c, spec, layer)
        _ffn(t, dim, width, gated=True, bias=False)
    t.norm("norm", dim)
    return _Counted("meta params.json", t.freeze(), False, True, tuple(notes))


def _decilm_ffn_width(ffn_mult: float, hidden: int) -> int:
    # modeling_decilm.py _ffn_mult_to_intermediate_size: int(2 * ffn_mult * n_embd / 3) rounded up to a
    # multiple of 256 (float arithmetic, as the reference does it).
    width = int(2 * ffn_mult * hidden / 3)
    return _cdiv(width, 256) * 256


def nemotron_nas(c: _Config) -> _Counted:
    """Rule nemotron_nas_block_configs: Llama-Nemotron Super/Ultra (remote modeling_decilm.py). Each layer's
    attention is GQA (n_heads_in_group), a single hidden x hidden linear (replace_with_linear) or absent
    (no_op); its FFN likewise, with a SwiGLU of ffn_mult. A layer has input_layernorm only with attention
    and post_attention_layernorm only with an FFN."""
    blocks = c.f.sequence("block_configs", "block_configs", c.layout.num_layers) or []
    h = c.hidden
    t = _Tensors()
    tied = _tied(c)
    _embedding_and_head(t, c, tied=tied)
    bias = c.flag("attention_bias")
    mlp_bias = c.flag("mlp_bias")
    for layer, block in zip(c.layout.layers, blocks, strict=True):
        attn = block.get("attention", {}) if isinstance(block, Mapping) else {}
        ffn = block.get("ffn", {}) if isinstance(block, Mapping) else {}
        if not attn.get("no_op"):
            t.norm("input_layernorm", h)
            if attn.get("replace_with_linear"):
                t.linear(Part.ATTENTION, "linear_attn", h, h)
            else:
                _attention(t, c, DecoderSpec(0, qkv_bias=bias, o_bias=bias), layer)
        if not ffn.get("no_op"):
            t.norm("post_attention_layernorm", h)
            if ffn.get("replace_with_linear"):
                t.linear(Part.MLP, "linear_mlp", h, h)
            else:
                mult = ffn.get("ffn_mult")
                if isinstance(mult, bool) or not isinstance(mult, int | float):
                    raise ConfigError(c.f.model, f"layer {layer.index} ffn_mult", ("block_configs",), "missing")
                _ffn(t, h, _decilm_ffn_width(float(mult), h), gated=True, bias=mlp_bias)
    t.norm("norm", h)
    return _Counted("Nemotron-NAS block_configs", t.freeze(), tied)


def mla_decoder(c: _Config) -> _Counted:
    """Rule mla_decoder: DeepSeek-V2/V3/R1/V3.2 and Kimi-K2 (DeepseekV3Attention): q through a low-rank
    q_a_proj -> q_a_layernorm -> q_b_proj (or one q_proj when q_lora_rank is null, V2-Lite),
    kv_a_proj_with_mqa to kv_lora_rank + qk_rope_head_dim, kv_a_layernorm, kv_b_proj to heads x
    (qk_nope_head_dim + v_head_dim), o_proj from heads x v_head_dim; attention_bias on q_a, kv_a and o.
    V3.2 adds the DSA indexer (wq_b, wk, a LayerNorm k_norm, weights_proj). FFNs by _moe_flags."""
    h = c.hidden
    q_lora = c.optional(("q_lora_rank",))
    kv_lora = c.integer("kv_lora_rank", ("kv_lora_rank",))
    nope = c.integer("qk_nope_head_dim", ("qk_nope_head_dim",))
    rope = c.integer("qk_rope_head_dim", ("qk_rope_head_dim",))
    v_dim = c.integer("v_head_dim", ("v_head_dim",))
    bias = c.flag("attention_bias")
    index_heads = c.optional(("index_n_heads",))
    index_dim = c.optional(("index_head_dim",))
    layers = c.layout.layers
    ffns = _ffn_plan(c, c.integer("intermediate size", ("intermediate_size",)), len(layers))

    def layer_tensors(t: _Tensors, heads: int, ffn: Ffn) -> None:
        t.norm("layer_norms", h, count=2)
        if q_lora:
            t.linear(Part.ATTENTION, "q_a_proj", q_lora, h, bias=bias)
            t.norm("q_a_layernorm", q_lora)
            t.linear(Part.ATTENTION, "q_b_proj", heads * (nope + rope), q_lora)
        else:
            t.linear(Part.ATTENTION, "q_proj", heads * (nope + rope), h)
        t.linear(Part.ATTENTION, "kv_a_proj_with_mqa", kv_lora + rope, h, bias=bias)
        t.norm("kv_a_layernorm", kv_lora)
        t.linear(Part.ATTENTION, "kv_b_proj", heads * (nope + v_dim), kv_lora)
        t.linear(Part.ATTENTION, "o_proj", h, heads * v_dim, bias=bias)
        if index_heads and index_dim and q_lora:
            t.linear(Part.ATTENTION, "indexer.wq_b", index_heads * index_dim, q_lora)
            t.linear(Part.ATTENTION, "indexer.wk", index_dim, h)
            t.norm("indexer.k_norm", index_dim, bias=True)
            t.linear(Part.ATTENTION, "indexer.weights_proj", index_heads, h, role=Role.ROUTER)
        _ffn(t, h, ffn, gated=True, bias=False)

    t = _Tensors()
    tied = _tied(c)
    _embedding_and_head(t, c, tied=tied)
    for layer, ffn in zip(layers, ffns, strict=True):
        layer_tensors(t, layer.q_heads, ffn)
    t.norm("norm", h)
    # Rule deepseek_mtp: num_nextn_predict_layers MTP layers, as DeepSeek's checkpoints store each: one
    # decoder layer like the last, enorm + hnorm + shared_head.norm, eh_proj (2h -> h), and their own copies
    # of the embedding and the head.
    mtp = 0
    count = c.optional(("num_nextn_predict_layers",), minimum=0)
    if count and layers:
        m = _Tensors()
        layer_tensors(m, layers[-1].q_heads, ffns[-1])
        m.norm("mtp_norms", h, count=3)
        m.linear(Part.OTHER, "eh_proj", h, 2 * h)
        m.add(Part.EMBEDDING, Role.TABLE, "embed_tokens.weight", (_vocab(c), h), count=2)
        mtp = count * m.params
    notes = (
        ["DeepSeek-V3's router e_score_correction_bias (one fp32 per expert per MoE layer) is a buffer, not counted"]
        if c.family in ("deepseek_v3", "deepseek_v32", "kimi_k2")
        else []
    )
    return _Counted("MLA decoder", t.freeze(), tied, True, tuple(notes), mtp)


def nemotron_h(c: _Config) -> _Counted:
    """Rule nemotron_h_pattern (NemotronHForCausalLM): one RMSNorm and one mixer per block, the mixer by
    hybrid_override_pattern: M = Mamba2, * = attention (q, k, v, o; attention_bias), - = a plain relu2
    MLP (up, down; mlp_bias), E = MoE (non-gated experts, router, shared expert, optional latent)."""
    pattern = str(c.f.data.get("hybrid_override_pattern", ""))
    h = c.hidden
    t = _Tensors()
    tied = _tied(c)
    _embedding_and_head(t, c, tied=tied)
    heads = c.integer("mamba heads", ("mamba_num_heads",))
    head_dim = c.integer("mamba head_dim", ("mamba_head_dim",))
    bias = c.flag("attention_bias")
    mlp_bias = c.flag("mlp_bias")
    experts = c.optional(("n_routed_experts",))
    width = c.optional(("intermediate_size",)) or 0
    for layer, kind in zip(c.layout.layers, pattern, strict=True):
        t.norm("norm", h)
        if kind == "M":
            _mamba2(t, c, heads=heads, head_dim=head_dim)
        elif kind == "*":
            _attention(t, c, DecoderSpec(0, qkv_bias=bias, o_bias=bias), layer)
        elif kind == "-":
            _mlp(t, Part.MLP, "mlp", h, width, gated=False, bias=mlp_bias, role=Role.MATRIX)
        elif kind == "E":
            if not experts:
                raise ConfigError(c.f.model, "experts", ("n_routed_experts",), "pattern has E blocks but no experts")
            _moe(t, h, _moe_block(c, experts))
    t.norm("norm_f", h)
    return _Counted("Nemotron-H hybrid", t.freeze(), tied)


def gemma3n(c: _Config) -> _Counted:
    """Rule gemma3n (Gemma3nForCausalLM): a Gemma 3 decoder (4 norms, head-dim q/k norms, per-layer MLP
    widths, tied head) whose KV-sharing layers have no k/v projections, plus in every layer AltUp
    (n = altup_num_inputs streams: prediction n^2 x n, correction n x n, a router n x hidden with its norm, an
    output scale), LAuReL (a rank laurel_rank low-rank residual with its norm) and the per-layer input (gate,
    projection, norm); and once: the per-layer embedding (vocab_size_per_layer_input x layers x
    hidden_size_per_layer_input), its projection from hidden and norm, and n - 1 AltUp projections in and out.
    Defaults from Gemma3nTextConfig."""
    h = c.hidden
    layers = c.layout.layers
    n = c.optional(("altup_num_inputs",)) or 4
    rank = c.optional(("laurel_rank",)) or 64
    per_layer = c.optional(("hidden_size_per_layer_input",)) or 256
    per_layer_vocab = c.optional(("vocab_size_per_layer_input",)) or 262_144
    widths = c.f.data.get("intermediate_size")
    if isinstance(widths, list):
        widths = c.f.sequence("intermediate size", "intermediate_size", len(layers))
    else:
        widths = [c.integer("intermediate size", ("intermediate_size",))] * len(layers)
    spec = DecoderSpec(0, qk_norm=QkNorm.HEAD, layer_norms=4)
    t = _Tensors()
    tied = _tied(c)
    _embedding_and_head(t, c, tied=tied)
    for layer, width in zip(layers, widths or [], strict=True):
        if isinstance(width, bool) or not isinstance(width, int):
            raise ConfigError(c.f.model, "intermediate size", ("intermediate_size",), f"{width!r} is not a width")
        t.norm("layer_norms", h, count=spec.layer_norms)
        _attention(t, c, spec, layer)
        _ffn(t, h, width, gated=True, bias=False)
        t.vector(Part.OTHER, "altup.correct_output_scale", (h,))
        t.linear(Part.OTHER, "altup.correction_coefs", n, n)
        t.linear(Part.OTHER, "altup.prediction_coefs", n * n, n)
        t.linear(Part.OTHER, "altup.modality_router", n, h)
        t.norm("altup.router_norm", h)
        t.linear(Part.OTHER, "laurel.linear_left", rank, h)
        t.linear(Part.OTHER, "laurel.linear_right", h, rank)
        t.norm("laurel.post_laurel_norm", h)
        t.linear(Part.OTHER, "per_layer_input_gate", per_layer, h)
        t.linear(Part.OTHER, "per_layer_projection", h, per_layer)
        t.norm("post_per_layer_input_norm", h)
    t.norm("norm", h)
    t.add(Part.EMBEDDING, Role.TABLE, "embed_tokens_per_layer.weight", (per_layer_vocab, len(layers) * per_layer))
    t.linear(Part.OTHER, "per_layer_model_projection", len(layers) * per_layer, h)
    t.norm("per_layer_projection_norm", per_layer)
    t.linear(Part.OTHER, "altup_projections", h, h, count=n - 1)
    t.linear(Part.OTHER, "altup_unembed_projections", h, h, count=n - 1)
    return _Counted("Gemma 3n decoder", t.freeze(), tied)


def pure_ssm(c: _Config) -> _Counted:
    """Rule pure_ssm: Mamba / Falcon-Mamba (MambaMixer) and Mamba2: embedding, per layer one RMSNorm and a
    mixer, norm_f; the LM head tied by default for Mamba and Falcon-Mamba, not for Mamba2."""
    t = _Tensors()
    tied = _tied(c)
    _embedding_and_head(t, c, tied=tied)
    for _ in c.layout.layers:
        t.norm("norm", c.hidden)
        if c.family == "mamba2":
            _mamba2(t, c, heads=c.integer("heads", ("num_heads",)), head_dim=c.integer("head_dim", ("head_dim",)))
        else:
            _mamba1(t, c)
    t.norm("norm_f", c.hidden)
    return _Counted(f"{c.family} SSM", t.freeze(), tied)


# ----------------------------------------------------------------------------------------------------------
# Entry point


def _rule_for(c: _Config) -> Callable[[_Config], _Counted]:
    """The first family rule that claims the config."""
    if c.family == "meta_params":
        return meta_params
    if isinstance(c.f.data.get("block_configs"), list):
        return nemotron_nas
    if any(layer.kind is LayerKind.MLA for layer in c.layout.layers):
        return mla_decoder
    if c.family == "nemotron_h":
        return nemotron_h
    if c.family in ("mamba", "falcon_mamba", "mamba2"):
        return pure_ssm
    if c.family == "gemma3n_text":
        return gemma3n
    return dense_decoder


def count_parameters(layout: CacheLayout, kv_heads: int | None = None) -> ParamCount:
    """The model's parameter count from its config, tensor by tensor.

    ``kv_heads`` is the GQA what-if: every attention layer's K and V projections (and their biases, and
    OLMo's k_norm) are sized for that many KV heads instead of the config's. It must divide the query heads;
    MLA and attention-free models have no KV heads to change (:class:`~kvplan.errors.OptionError`).
    """
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    defaults = WEIGHT_DEFAULTS.get(layout.family, {})
    c = _Config(layout, Fields(layout.model, layout.raw, defaults))
    counted = _rule_for(c)(c)
    notes = list(counted.notes)
    if any(rule.startswith("text config from") for rule in layout.rules):
        notes.append("text decoder only: the vision tower and projector are not counted (they hold no KV cache)")
    if counted.mtp:
        notes.append(f"multi-token-prediction layers ({counted.mtp:,} parameters) not in the total")
    return ParamCount(
        model=layout.model,
        family=layout.family,
        rule=counted.rule,
        tensors=counted.tensors,
        exact=counted.exact,
        tied_embeddings=counted.tied,
        kv_heads=kv_heads,
        mtp=counted.mtp,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------------------------------------
# Weight storage


class Scheme(StrEnum):
    """How converted weight matrices are stored."""

    PLAIN = "plain"  # every value the same whole number of bytes
    FP8_TENSOR = "fp8_tensor"  # 1 B + one fp32 scale per matrix (+ one static input scale)
    FP8_BLOCK = "fp8_block"  # 1 B + one fp32 scale per block (DeepSeek: 128 x 128)
    INT8_CHANNEL = "int8_channel"  # 1 B + one fp32 scale per output channel
    INT4_GROUP = "int4_group"  # 4 bit + one fp16 scale per group of input values (symmetric)
    AWQ = "awq"  # AutoAWQ GEMM: packed int32 qweight, fp16 scales, packed qzeros per group
    GPTQ = "gptq"  # AutoGPTQ: packed int32 qweight, fp16 scales, packed qzeros per group, int32 g_idx
    MXFP4 = "mxfp4"  # 4 bit + one E8M0 scale per 32 values: 17 B per 32
    NVFP4 = "nvfp4"  # 4 bit + one fp8 scale per 16 values (9 B per 16) + one fp32 global scale per matrix


@dataclass(frozen=True)
class WeightFormat:
    """A storage format: what converted matrices cost, and what everything else costs."""

    scheme: Scheme
    label: str
    #: Bytes per value of the tensors the format does not convert (and of all tensors for PLAIN).
    base_bytes: int
    bits: int = 16
    #: Values per scale group along the input dim (0: one group per output channel).
    group: int = 0
    block: tuple[int, int] = (0, 0)
    static_input_scale: bool = False
    #: Parts whose matrices stay at base_bytes (from modules_to_not_convert).
    keep_parts: frozenset[Part] = frozenset()
    keep_experts: bool = False
    exact: bool = True
    notes: tuple[str, ...] = ()

    def converts(self, tensor: WeightTensor) -> bool:
        if self.scheme is Scheme.PLAIN or tensor.role not in (Role.MATRIX, Role.EXPERT):
            return False
        if tensor.role is Role.EXPERT:
            return not self.keep_experts
        return tensor.part not in self.keep_parts

    def groups(self, cols: int) -> int:
        """Scale groups along one row of ``cols`` input values."""
        return _cdiv(cols, self.group) if self.group > 0 else 1

    def matrix_bytes(self, rows: int, cols: int) -> int:
        """Bytes of one converted (rows = out features) x (cols = in features) matrix, scales included."""
        values = rows * cols
        groups = self.groups(cols)
        match self.scheme:
            case Scheme.FP8_TENSOR:
                return values + 4 + (4 if self.static_input_scale else 0)
            case Scheme.FP8_BLOCK:
                return values + _cdiv(rows, self.block[0]) * _cdiv(cols, self.block[1]) * 4
            case Scheme.INT8_CHANNEL:
                return values + rows * 4
            case Scheme.INT4_GROUP:
                return _cdiv(values, 2) + rows * groups * 2
            case Scheme.AWQ:
                # qweight (in, out x bits / 32) int32; qzeros (in / group, out x bits / 32) int32;
                # scales (in / group, out) fp16.
                packed_out = _cdiv(rows * self.bits, 32) * 4
                return cols * packed_out + groups * packed_out + groups * rows * 2
            case Scheme.GPTQ:
                # qweight (in x bits / 32, out) int32; qzeros (in / group, out x bits / 32) int32;
                # scales (in / group, out) fp16; g_idx (in,) int32.
                return (
                    _cdiv(cols * self.bits, 32) * 4 * rows
                    + groups * _cdiv(rows * self.bits, 32) * 4
                    + (groups * rows * 2 + cols * 4)
                )
            case Scheme.MXFP4:
                return rows * groups * 17
            case Scheme.NVFP4:
                return rows * groups * 9 + 4
            case Scheme.PLAIN:
                return values * self.base_bytes
        raise AssertionError(self.scheme)  # pragma: no cover

    def tensor_bytes(self, tensor: WeightTensor) -> int:
        if self.converts(tensor):
            rows, cols = tensor.shape[0], prod(tensor.shape[1:])
            return tensor.count * self.matrix_bytes(rows, cols)
        return tensor.params * self.base_bytes


def _plain(name: str, size: int) -> WeightFormat:
    return WeightFormat(Scheme.PLAIN, f"{name} ({size} B per parameter)", size)


#: Explicit weight dtypes. Quantized ones convert the decoder's weight matrices (attention, MLP, experts)
#: and keep embeddings, the LM head, norms, biases and routers at 2 bytes, as quantized checkpoints do.
EXPLICIT_FORMATS: dict[str, WeightFormat] = {
    "float32": _plain("float32", 4),
    "float16": _plain("float16", 2),
    "bfloat16": _plain("bfloat16", 2),
    "fp8": WeightFormat(Scheme.FP8_TENSOR, "fp8 (1 B per value + one fp32 scale per matrix)", 2, bits=8),
    "int8": WeightFormat(Scheme.INT8_CHANNEL, "int8 (1 B per value + one fp32 scale per output channel)", 2, bits=8),
    "int4": WeightFormat(
        Scheme.INT4_GROUP, "int4 (4 bit + one fp16 scale per group of 128 input values: 66 B per 128)", 2, 4, 128
    ),
    "mxfp4": WeightFormat(Scheme.MXFP4, "mxfp4 (4 bit + one 8-bit scale per 32 values: 17 B per 32)", 2, 4, 32),
    "nvfp4": WeightFormat(
        Scheme.NVFP4, "nvfp4 (4 bit + one fp8 scale per 16 values: 9 B per 16, + fp32 global scale)", 2, 4, 16
    ),
}

WEIGHT_DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp8_e4m3": "fp8",
    "float8_e4m3fn": "fp8",
    "w8a16": "int8",
    "w4a16": "int4",
}

WEIGHT_DTYPE_OPTION = "--weight-dtype"


def weight_format(name: str) -> WeightFormat:
    """The storage format for an explicit weight dtype name."""
    key = name.strip().lower()
    key = WEIGHT_DTYPE_ALIASES.get(key, key)
    if key not in EXPLICIT_FORMATS:
        raise UnknownDtypeError(WEIGHT_DTYPE_OPTION, name, [*EXPLICIT_FORMATS, *WEIGHT_DTYPE_ALIASES])
    return EXPLICIT_FORMATS[key]


def _keep_rules(entries: object) -> tuple[frozenset[Part], bool, list[str], bool]:
    """Map modules_to_not_convert entries to parts kept 16-bit; (parts, keep experts, notes, understood)."""
    parts: set[Part] = set()
    experts = False
    notes: list[str] = []
    understood = True
    for entry in entries if isinstance(entries, list) else []:
        text = str(entry)
        if any(k in text for k in ("vision", "visual", "multi_modal", "mm_projector")):
            continue  # not part of the text decoder
        if any(k in text for k in ("embed", "lm_head", "wte")) or text.endswith(("router", "mlp.gate")):
            continue  # tables and routers are never converted
        if "expert" in text:
            experts = True
        elif "attn" in text or "attention" in text:
            parts.add(Part.ATTENTION)
        elif "mlp" in text:
            parts.add(Part.MLP)
        else:
            understood = False
            notes.append(f"modules_to_not_convert entry {text!r} not understood; assumed converted")
    return frozenset(parts), experts, notes, understood


def config_format(layout: CacheLayout) -> WeightFormat | None:
    """Rule quantization_config: the checkpoint's own storage, or None when it has no quantization_config.

    fp8 with weight_block_size [a, b] (DeepSeek-V3/R1/V3.2, Kimi-K2, MiMo-V2-Flash): 1 B per value + one
    fp32 weight_scale_inv per a x b block, counted per matrix (experts one by one) with ceil at the edges;
    fp8 with weight_block_size null (Devstral 2): one fp32 weight_scale per matrix, and one fp32
    input_scale when activation_scheme is static. awq / gptq: bits with group_size groups, packed as AutoAWQ
    (GEMM) / AutoGPTQ store them. mxfp4 (gpt-oss): 17 B per 32 values for every matrix not in
    modules_to_not_convert, which keeps attention, routers, embeddings and the head bf16: experts only.
    """
    raw = layout.raw.get("quantization_config")
    if not isinstance(raw, Mapping):
        return None
    base = 2
    method = str(raw.get("quant_method", "")).lower()
    keep_parts, keep_experts, notes, understood = _keep_rules(raw.get("modules_to_not_convert"))
    common: dict[str, Any] = {"keep_parts": keep_parts, "keep_experts": keep_experts, "exact": understood}
    if method == "fp8":
        block = raw.get("weight_block_size")
        if isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block):
            label = f"fp8 + one fp32 scale per {block[0]}x{block[1]} block (quantization_config)"
            return WeightFormat(
                Scheme.FP8_BLOCK, label, base, 8, block=(block[0], block[1]), notes=tuple(notes), **common
            )
        static = raw.get("activation_scheme") == "static"
        label = "fp8 + fp32 weight scale per matrix" + (" + static input scale" if static else "")
        return WeightFormat(
            Scheme.FP8_TENSOR,
            f"{label} (quantization_config)",
            base,
            8,
            static_input_scale=static,
            notes=tuple(notes),
            **common,
        )
    if method in ("awq", "gptq"):
        bits = raw.get("bits", raw.get("w_bit", 4))
        group = raw.get("group_size", raw.get("q_group_size", 128))
        if not isinstance(bits, int) or not isinstance(group, int) or bits <= 0:
            raise ConfigError(layout.model, "quantization bits", ("quantization_config.bits",), f"{bits!r}")
        scheme = Scheme.AWQ if method == "awq" else Scheme.GPTQ
        group = max(group, 0)  # group_size -1: one group per output channel (per-channel scales)
        shown = f"group {group}" if group else "per channel"
        label = f"{method} int{bits}, {shown}, fp16 scales + packed zeros (quantization_config)"
        return WeightFormat(scheme, label, base, bits, group, notes=tuple(notes), **common)
    if method == "mxfp4":
        label = "mxfp4 (17 B per 32 values) except modules_to_not_convert (quantization_config)"
        return WeightFormat(Scheme.MXFP4, label, base, 4, 32, notes=tuple(notes), **common)
    return WeightFormat(
        Scheme.PLAIN,
        f"16-bit (quantization_config quant_method {method!r} not modelled)",
        base,
        exact=False,
        notes=(f"quant_method {method!r} is not modelled: weights counted at 2 B (an overestimate)",),
    )


@dataclass(frozen=True)
class WeightEstimate:
    """Weight bytes for one model and storage format."""

    params: ParamCount
    bytes_total: int
    #: The storage, in words ("bfloat16 (2 B per parameter)", "fp8 + one fp32 scale per 128x128 block ...").
    dtype: str
    exact: bool
    #: Bytes per part, in Part order.
    parts: tuple[tuple[Part, int], ...]
    #: Bytes every tensor-parallel rank holds whole: the norms (RMSNorm / LayerNorm weights are replicated).
    replicated_bytes: int
    #: K/V projection bytes per KV-head count G (a rank keeps whole heads, so TP > G replicates them).
    kv_bytes: tuple[tuple[int, int], ...]
    notes: tuple[str, ...] = ()

    def bytes_per_gpu(self, tp: int) -> int:
        """Weight bytes on each of ``tp`` tensor-parallel GPUs.

        Norms are replicated on every rank; K/V projections split over at most G ranks (each rank keeps
        whole KV heads, as vLLM's QKVParallelLinear replicates heads when TP > G); everything else is
        split evenly, rounded up. Not modelled, all small: vocabulary padding of the embedding / head, the
        biases of row-parallel layers, MoE routers and MLA's q_a / kv_a projections (replicated in vLLM).
        So this is exact for the norms and K/V and a slight underestimate otherwise.
        """
        check_positive("--tp", tp)
        kv_total = sum(b for _, b in self.kv_bytes)
        kv = sum(_cdiv(b, min(tp, g)) for g, b in self.kv_bytes)
        rest = self.bytes_total - self.replicated_bytes - kv_total
        return self.replicated_bytes + kv + _cdiv(rest, tp)


def weight_bytes(layout: CacheLayout, *, dtype: str | None = None, kv_heads: int | None = None) -> WeightEstimate:
    """Weight bytes: parameters x their storage.

    ``dtype`` names the storage of every weight (float32, float16, bfloat16) or of the decoder's weight
    matrices (fp8, int8, int4, mxfp4, nvfp4; the rest stays 16-bit); None or ``auto`` means the checkpoint's
    quantization_config when it has one, else the 16-bit serving dtype (as :func:`kvplan.formula.serving_dtype`:
    fp32 checkpoints are served in 16 bits).
    """
    params = count_parameters(layout, kv_heads)
    notes = list(params.notes)
    fmt: WeightFormat | None
    if dtype is None or dtype.strip().lower() == "auto":
        fmt = config_format(layout)
        if fmt is None:
            name, why = serving_dtype(layout)
            fmt = replace(_plain(name, 2), label=f"{name} (2 B per parameter: {why})")
    else:
        fmt = weight_format(dtype)
    notes.extend(fmt.notes)
    per_tensor = [(t, fmt.tensor_bytes(t)) for t in params.tensors]
    parts = tuple((p, sum(b for t, b in per_tensor if t.part is p)) for p in Part)
    replicated = sum(b for t, b in per_tensor if t.part is Part.NORMS and not t.kv_heads)
    kv: dict[int, int] = {}
    for t, b in per_tensor:
        if t.kv_heads:
            kv[t.kv_heads] = kv.get(t.kv_heads, 0) + b
    return WeightEstimate(
        params=params,
        bytes_total=sum(b for _, b in per_tensor),
        dtype=fmt.label,
        exact=params.exact and fmt.exact,
        parts=parts,
        replicated_bytes=replicated,
        kv_bytes=tuple(sorted(kv.items())),
        notes=tuple(notes),
    )

"""Rule dense_decoder: llama-like and GPT-style decoders, one trait set per family."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from kvplan.families import FALCON_FAMILIES
from kvplan.layout import LayerKind, LayerSpec
from kvplan.weights.defaults import _embedding_and_head, _tied
from kvplan.weights.ffn import Moe, _ffn, _ffn_plan
from kvplan.weights.mixers import _state_mixer
from kvplan.weights.result import Part
from kvplan.weights.tensors import _Config, _Counted, _Tensors


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
    if not c.flag("parallel_attn"):
        norms = 2
    elif c.layout.falcon_new_decoder:
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
    **dict.fromkeys(FALCON_FAMILIES, _falcon),
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
    act = c.f.peek("hidden_act", c.f.peek("activation_function"))
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
    if c.family not in DECODER_FAMILIES and c.f.peek("tie_word_embeddings") is None:
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

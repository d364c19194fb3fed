"""Other family rules: Meta params.json, Nemotron-NAS, MLA decoders, Nemotron-H, Gemma-3n, pure SSMs."""

from __future__ import annotations

from collections.abc import Mapping

from kvplan.errors import ConfigError
from kvplan.weights.decoder import DecoderSpec, QkNorm, _attention
from kvplan.weights.defaults import _embedding_and_head, _tied, _vocab
from kvplan.weights.ffn import Ffn, _ffn, _ffn_plan, _mlp, _moe, _moe_block
from kvplan.weights.mixers import _mamba1, _mamba2
from kvplan.weights.result import Part, Role
from kvplan.weights.tensors import _cdiv, _Config, _Counted, _Tensors


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
        if c.f.peek("ffn_dim_multiplier") is not None:
            width = int(c.number("ffn_dim_multiplier", "ffn_dim_multiplier") * width)
        width = multiple * ((width + multiple - 1) // multiple)
    if c.f.peek("vocab_size") == -1:
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
    pattern = _nemotron_h_pattern(c)
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


#: NemotronHConfig._list_to_pattern (transformers configuration_nemotron_h.py), with the legacy names that
#: remap_legacy_layer_types (configuration_utils.py) turns into them.
_NEMOTRON_H_BLOCKS = {
    "linear_attention": "M",
    "mamba": "M",
    "full_attention": "*",
    "attention": "*",
    "mlp": "-",
    "moe": "E",
}


def _nemotron_h_pattern(c: _Config) -> str:
    """hybrid_override_pattern, or the same letters from layers_block_type (Nemotron-3 states only the list);
    one letter per layer, else a ConfigError naming the key."""
    pattern = str(c.f.peek("hybrid_override_pattern", ""))
    key = "hybrid_override_pattern"
    blocks = c.f.peek("layers_block_type", None)
    if not pattern and isinstance(blocks, list):
        key = "layers_block_type"
        unknown = [b for b in blocks if not isinstance(b, str) or b not in _NEMOTRON_H_BLOCKS]
        if unknown:
            raise ConfigError(c.f.model, "layer pattern", (key,), f"unknown block types {unknown[:3]!r}")
        pattern = "".join(_NEMOTRON_H_BLOCKS[b] for b in blocks)
    if len(pattern) != len(c.layout.layers):
        raise ConfigError(
            c.f.model, "layer pattern", (key,), f"has {len(pattern)} entries for {len(c.layout.layers)} layers"
        )
    return pattern


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
    widths = c.f.peek("intermediate_size")
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

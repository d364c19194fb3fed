"""Family defaults (transformers' configuration_<family>.py, v5.23), for keys a config may omit."""

from __future__ import annotations

from typing import Any

from kvplan.families import FALCON_FAMILIES
from kvplan.weights.result import Part, Role
from kvplan.weights.tensors import _Config, _Tensors

#: tie_word_embeddings defaults: True in these families' config classes (GPT2Config, BloomConfig,
#: FalconConfig, GemmaConfig, Gemma2Config, Gemma3TextConfig, GPTNeoConfig, OPTConfig, MptConfig,
#: MambaConfig, FalconMambaConfig, Starcoder2Config, CohereConfig, XGLMConfig) and False in every other
#: family we model (LlamaConfig, MistralConfig, Qwen2Config ... DeepseekV3Config, NemotronHConfig).
#: tiiuae's remote-code RWConfig (RefinedWeb / RefinedWebModel) ties them too (Falcon-7B's 6.92B).
TIED_BY_DEFAULT = frozenset(
    {
        "gpt2",
        "bloom",
        *FALCON_FAMILIES,
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
    **{family: {"parallel_attn": True, "bias": False} for family in FALCON_FAMILIES},
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
    if c.f.get("tie_word_embeddings") is not None:
        return c.f.flag("tie_word_embeddings")
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

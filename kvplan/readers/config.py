"""Hugging Face config.json and Meta params.json -> :class:`~kvplan.layout.CacheLayout`.

Configs are read leniently (unknown keys ignored) and converted to the small frozen layout. Every family quirk
is a named rule below with a comment saying which family needs it and why; where transformers' config class
supplies a default the file omits, the default is cited. A missing or invalid value raises
:class:`~kvplan.errors.ConfigError` naming the model, the quantity and the keys tried.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from kvplan.dtypes import model_dtype_name
from kvplan.errors import ConfigError, ConfigFileError, NotUnderstoodError, OptionError, Param
from kvplan.families import FALCON_FAMILIES, PURE_SSM_FAMILIES, falcon_new_decoder
from kvplan.layout import (
    DEFAULT_IMAGES,
    CacheLayout,
    ConfigWarning,
    LayerKind,
    LayerSpec,
    StateTensor,
    WarningKind,
    attention_layer,
    mla_layer,
)
from kvplan.limits import MAX_COUNT, MAX_HEADS, MAX_LAYERS
from kvplan.readers.context import read_rope_limit
from kvplan.readers.model import ModelConfig, ReadModel

Raw = Mapping[str, Any]

LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
HEAD_KEYS = ("num_attention_heads", "n_head", "n_heads")
# BLOOM spells its width n_embed (sic); GPT-2 n_embd; T5-style d_model; Meta params.json dim.
HIDDEN_KEYS = ("hidden_size", "n_embd", "n_embed", "d_model", "dim")
# kv_channels: ChatGLM's per-head width; attention_head_dim: Nemotron-H.
HEAD_DIM_KEYS = ("head_dim", "kv_channels", "attention_head_dim")
KV_HEAD_KEYS = ("num_key_value_heads", "num_kv_heads", "n_head_kv", "n_kv_heads")
DTYPE_KEYS = ("torch_dtype", "dtype")
# n_positions: GPT-2; seq_length: ChatGLM; model_max_length: Baichuan; max_seq_len: Meta params.json.
CONTEXT_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "seq_length",
    "model_max_length",
    "max_sequence_length",
    "max_seq_len",
)
NESTED_KEYS = ("text_config", "language_config", "llm_config")

#: Families whose config classes make the KV-head count equal to the query-head count when the file omits
#: it, because the architecture is multi-head (or, for llama, because LLaMA-1 / Llama-2-7B/13B configs
#: predate the key and LlamaConfig falls back to num_attention_heads). Anything else must state it.
MHA_FAMILIES = frozenset(
    {
        "gpt2",
        "gpt_neox",
        "gptj",
        "gpt_neo",
        "bloom",
        "baichuan",
        "opt",
        "codegen",
        "phi",
        "llama",
        "internlm",
        "stablelm",
        "mpt",
        *FALCON_FAMILIES,
        "xglm",
        "persimmon",
    }
)

#: Of those, families whose architecture allows fewer KV heads than query heads: their config classes only
#: default to multi-head, so a config without the count gets a warning saying what was assumed.
GQA_CAPABLE_MHA_DEFAULT = frozenset({"llama", "internlm", "stablelm", "phi", "mpt", "persimmon"})

#: Values transformers' config classes supply when a file omits them, for families whose real configs rely
#: on that. Gemma3TextConfig (transformers/models/gemma3/configuration_gemma3.py): google/gemma-3-4b-it's
#: text_config omits the head counts and head_dim. FalconConfig: max_position_embeddings 2048.
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131_072,
        "sliding_window": 4096,
    },
    # Gemma4TextConfig (transformers/models/gemma4/configuration_gemma4.py) class defaults.
    "gemma4_text": {
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "max_position_embeddings": 131_072,
        "sliding_window": 512,
    },
    **{family: {"max_position_embeddings": 2048} for family in FALCON_FAMILIES},
    "gpt2": {"n_positions": 1024},
    # NemotronHConfig: mamba_ssm_cache_dtype defaults to float32 (vLLM's Nemotron-H config hook reads it too).
    "nemotron_h": {"mamba_ssm_cache_dtype": "float32"},
}

#: LFM2 and its MoE / vision-language variants (their text configs say lfm2 / lfm2_moe).
LFM2_FAMILIES = frozenset({"lfm2", "lfm2_moe"})

#: Families whose config classes interleave sliding and full layers when the file has no layer_types: layer i is
#: full when (i + 1) % n == 0, with n from the named key or the class default (transformers configuration_*.py:
#: Gemma2Config 2, GptOssConfig 2, Olmo3Config 4, Exaone4Config sliding_window_pattern 4, Gemma3TextConfig
#: sliding_window_pattern 6, Gemma3nTextConfig 5).
DEFAULT_INTERLEAVE: dict[str, tuple[str | None, int]] = {
    "gemma2": (None, 2),
    "gpt_oss": (None, 2),
    "olmo3": (None, 4),
    "exaone4": ("sliding_window_pattern", 4),
    "gemma3_text": ("sliding_window_pattern", 6),
    "gemma3n_text": (None, 5),
    "gemma4_text": (None, 6),
}

#: Families with a use_sliding_window switch that defaults to False (Qwen2Config and its descendants).
SLIDING_SWITCH_FAMILIES = frozenset({"qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen2_vl", "qwen2_5_vl", "smollm3"})

#: Keys from which config classes derive layer_types when a file has none: with layer_types stated, they
#: are redundant (consumed, not reported).
DERIVED_PATTERN_KEYS = (
    "sliding_window_pattern",
    "full_attention_interval",
    "hybrid_layer_pattern",
    "no_rope_layer_interval",
    "attn_layer_period",
    "attn_layer_offset",
)

#: A multimodal wrapper whose nested text config lacks model_type -> the text family.
NESTED_FAMILY = {
    "gemma3": "gemma3_text",
    "llama4": "llama4_text",
    "qwen3_5": "qwen3_5_text",
    "mistral3": "mistral",
    "gemma4": "gemma4_text",
    "lfm2_vl": "lfm2",
}


#: Families whose configs the rules above read with the standard keys, known to be plain decoders (or
#: handled by a named rule): any other model_type is still read as a plain decoder, with a warning.
PLAIN_DECODER_FAMILIES = frozenset(
    {
        "mistral",
        "mixtral",
        "ministral",
        "ministral3",
        "qwen2_moe",
        "qwen3_next",
        "qwen3_5_text",
        "qwen3_5_moe_text",
        "phi3",
        "phimoe",
        "gemma",
        "gemma3n_text",
        "olmo",
        "olmo2",
        "olmoe",
        "cohere",
        "cohere2",
        "starcoder2",
        "granite",
        "granitemoe",
        "exaone",
        "internlm2",
        "chatglm",
        "glm",
        "glm4",
        "glm4_moe",
        "deepseek_v2",
        "deepseek_v3",
        "deepseek_v32",
        "kimi_k2",
        "llama4_text",
        "mimo_v2_flash",
        "minimax_m2",
        "nemotron",
        "nemotron_h",
        "nemotron-nas",
        "jamba",
        "hunyuan_v1_dense",
        "hunyuan_v1_moe",
        "seed_oss",
        "arcee",
        "apertus",
        "ernie4_5",
        "ernie4_5_moe",
        "bailing_moe",
        "dots1",
        "exaone4_5",
        "deepseek_v4",
        "gemma4_text",
        "lfm2",
        "lfm2_moe",
        "mllama_text_model",
        "mllama",
    }
)


def known_family(family: str) -> bool:
    return family in (
        PLAIN_DECODER_FAMILIES
        | MHA_FAMILIES
        | PURE_SSM_FAMILIES
        | SLIDING_SWITCH_FAMILIES
        | set(DEFAULT_INTERLEAVE)
        | set(FAMILY_DEFAULTS)
        | set(NESTED_FAMILY.values())
    )


# ----------------------------------------------------------------------------------------------------------
# Value validation and key accounting
#
# The one place that decides whether a config value is usable: every count or size a rule reads goes through
# Fields.integer / optional_integer, every switch through Fields.flag, every list through Fields.sequence.
# A value of the wrong type (string, bool, float, NaN, +-Infinity), zero or negative where that is impossible,
# or null where the config class gives null no meaning, is a ConfigError naming the model and the key: never
# a silent default. Every key a rule reads is recorded in a KeyLedger, so that keys_unread() can name the
# cache-shaping keys no rule read.

#: Keys whose null means "not used" in their config classes, so that null reads as absent. Anywhere else a
#: null on a key a rule reads is an error (DeepSeek kv_lora_rank: null must not turn MLA into MHA).
#: sliding_window: Mistral-7B-v0.3, Qwen2 (no window); q_lora_rank: DeepSeek-V2-Lite (no query compression);
#: num_key_value_heads / intermediate_size: Nemotron-NAS (per layer in block_configs); the context keys:
#: configs that state no limit. Not head_dim: some classes derive it from hidden / heads when None, others
#: (Gemma 3) cannot build the model, so a null head_dim is refused rather than guessed. A null the file states
#: is the file's word: no family default replaces it.
NULL_MEANS_ABSENT = frozenset(
    {
        "sliding_window",
        "q_lora_rank",
        "num_key_value_heads",
        "intermediate_size",
        "attention_chunk_size",
        "layer_types",
        "n_inner",
        "n_shared_experts",
        "num_kv_shared_layers",
        "window_length",
        # Routed-expert counts: None is a dense model in DeepseekV2Config / Qwen2MoeConfig.
        "n_routed_experts",
        "num_local_experts",
        "num_experts",
        *CONTEXT_KEYS,
    }
)


@dataclass
class KeyLedger:
    """The config keys the rules consumed (the reader's and the weight counter's alike)."""

    read: set[str] = field(default_factory=set)

    def mark(self, *keys: str) -> None:
        self.read.update(keys)


def describe_value(value: object) -> str:
    """A config value as a message shows it: short, and escaped (config text is untrusted)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True)
class Fields:
    """Typed lookups in one config dict; every failure is a ConfigError naming model, quantity and keys."""

    model: str
    data: Raw
    defaults: Raw
    ledger: KeyLedger = field(default_factory=KeyLedger, compare=False)

    def get(self, key: str, default: Any = None) -> Any:
        """The raw value of ``key`` (file, then family default), recorded as read. For rules that inspect a
        value's shape themselves (a pattern string, a nested object)."""
        if key in self.data:
            self.ledger.mark(key)
            return self.data[key]
        return self.defaults.get(key, default)

    def peek(self, key: str, default: Any = None) -> Any:
        """The file's own value of ``key`` (no family default), recorded as read."""
        if key in self.data:
            self.ledger.mark(key)
        return self.data.get(key, default)

    def has(self, key: str) -> bool:
        """Whether the file states ``key`` (with any value, null included); not recorded as read."""
        return key in self.data

    def consume(self, *keys: str) -> None:
        """Record keys a rule looked at and decided do not apply (use_sliding_window false: the window and
        max_window_layers are read, and ignored on purpose)."""
        self.ledger.mark(*(k for k in keys if k in self.data))

    def find(self, keys: Sequence[str], quantity: str = "") -> tuple[str, Any] | None:
        """The first key present with a usable value (the file first, then the family defaults).

        A null is skipped only on keys whose config classes give it a meaning (NULL_MEANS_ABSENT); on any
        other key it is an error. Aliases the file also states with the same value are recorded as read.
        """
        nulled = set()
        for key in keys:
            if key not in self.data:
                continue
            value = self.data[key]
            self.ledger.mark(key)
            if value is None:
                if key in NULL_MEANS_ABSENT:
                    nulled.add(key)
                    continue
                raise ConfigError(self.model, quantity or key, keys, f"{key} is null")
            self.ledger.mark(*(k for k in keys if k in self.data and self.data[k] == value))
            return key, value
        for key in keys:
            if key not in nulled and self.defaults.get(key) is not None:
                return key, self.defaults[key]
        return None

    def integer(self, quantity: str, keys: Sequence[str], *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
        found = self.find(keys, quantity)
        if found is None:
            raise ConfigError(self.model, quantity, keys, "missing")
        return self._check_int(quantity, keys, found, minimum, maximum)

    def optional_integer(
        self, quantity: str, keys: Sequence[str], *, minimum: int = 1, maximum: int = MAX_COUNT
    ) -> int | None:
        found = self.find(keys, quantity)
        return None if found is None else self._check_int(quantity, keys, found, minimum, maximum)

    def _check_int(
        self, quantity: str, keys: Sequence[str], found: tuple[str, Any], minimum: int, maximum: int = MAX_COUNT
    ) -> int:
        key, value = found
        return check_count(self.model, quantity, keys, key, value, minimum, maximum)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.model, key, (key,), f"{describe_value(value)} is not true or false")
        return value

    def sequence(self, quantity: str, key: str, length: int | None = None) -> list[Any] | None:
        value = self.get(key)
        if value is None:
            if key in self.data and key not in NULL_MEANS_ABSENT:
                raise ConfigError(self.model, quantity, (key,), f"{key} is null")
            return None
        if not isinstance(value, list):
            raise ConfigError(self.model, quantity, (key,), f"expected a list, got {type(value).__name__}")
        if length is not None and len(value) != length:
            raise ConfigError(self.model, quantity, (key,), f"has {len(value)} entries for {length} layers")
        return value

    def integers(self, quantity: str, key: str, length: int | None = None, *, minimum: int = 1) -> list[int] | None:
        """A list of counts (DeepSeek-V4 compress_ratios, Llama 3.2 Vision cross_attention_layers), each
        checked like a single count."""
        values = self.sequence(quantity, key, length)
        if values is None:
            return None
        return [check_count(self.model, f"{quantity}[{i}]", (key,), key, v, minimum) for i, v in enumerate(values)]

    def nested(self, key: str) -> Fields | None:
        """A nested object (attn_config, vision_config) as Fields of its own, recorded as read."""
        value = self.get(key)
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(self.model, key, (key,), f"expected an object, got {type(value).__name__}")
        return Fields(self.model, value, {})


def check_count(
    model: str, quantity: str, keys: Sequence[str], key: str, value: object, minimum: int, maximum: int = MAX_COUNT
) -> int:
    """A count or size from a config: a whole number (not bool, float, string, NaN or infinity), at least
    ``minimum``. JSON's 4096.0 is a float and refused like "4096": no config class writes counts that way.
    At most ``maximum`` (2^63 - 1, or a stated limit such as MAX_LAYERS), so that work stays bounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            model,
            quantity,
            keys,
            f"{key} = {describe_value(value)} ({type(value).__name__}), expected a whole number",
        )
    if value < minimum:
        raise ConfigError(model, quantity, keys, f"{key} = {value}, must be at least {minimum}")
    if value > maximum:
        shown = f"{value:,}" if value < 10**30 else f"a {len(str(value)):,}-digit number"
        raise ConfigError(model, quantity, keys, f"{key} = {shown}, more than the {maximum:,} kvplan plans for")
    return value


# ----------------------------------------------------------------------------------------------------------
# The classifier: which unread keys can shape the cache or the weights

#: Keys that shape neither the cache nor the weights in any family: routing and training knobs, rope,
#: numerics, token ids, bookkeeping. (max_position_embeddings and friends are read as the context limit.)
HARMLESS_KEYS = frozenset(
    {
        "architectures",
        "auto_map",
        "model_type",
        "transformers_version",
        "_name_or_path",
        "_from_model_config",
        "torch_dtype",
        "dtype",
        "quantization_config",
        "use_cache",
        "cache_implementation",
        "num_experts_per_tok",
        "experts_per_token",
        "num_experts_per_token",
        "norm_topk_prob",
        "scoring_func",
        "topk_method",
        "n_group",
        "topk_group",
        "routed_scaling_factor",
        "seq_aux",
        "ep_size",
        "index_topk",
        "num_logits_to_keep",
        "tokenizer_class",
        "task_specific_params",
        "transformers.js_config",
        "n_ctx",
        "initial_context_length",
        "original_max_position_embeddings",
        "chunk_size",
        "time_step_limit",
        "time_step_floor",
        "time_step_min",
        "time_step_max",
        "use_mamba_kernels",
        "mamba_hidden_act",
        "attention_softmax_in_fp32",
        "apply_query_key_layer_scaling",
        "query_pre_attn_scalar",
        "attn_logit_softcapping",
        "final_logit_softcapping",
        "attention_value_scale",
        "scale_attn_weights",
        "scale_attn_by_inverse_layer_idx",
        "reorder_and_upcast_attn",
        "slow_but_exact",
        "is_llama_config",
        "gradient_checkpointing",
        "attn_implementation",
        "pretraining_tp",
        "summary_type",
        "summary_use_proj",
        "summary_proj_to_labels",
        "summary_activation",
        "summary_first_dropout",
        "masked_softmax_fusion",
        "bias_dropout_fusion",
        "apply_residual_connection_post_layernorm",
        "fp32_residual_connection",
        "residual_in_fp32",
        "rescale_prenorm_residual",
        "use_parallel_residual",
        "parallel_attn",
        "alibi",
        "rmsnorm",
        "swiglu_limit",
        "decoder_sparse_step",
        "mtp_use_dedicated_embeddings",
        "use_qk_norm",
        "attn_output_gate",
        "post_layer_norm",
        "original_rope",
        "rope_interleaved",
        "mamba_ssm_dtype",
        "max_window_layers",
    }
)
#: Name fragments of keys that never shape the cache or the weights (numerics, rope, ids, dropout, routing).
HARMLESS_PATTERN = re.compile(
    r"(^|_)(eps|epsilon|dropout|pdrop|token_id|token_ids|rope|rotary|theta|softcap|init|initializer|range|aux|"
    r"loss|jitter|act|activation|hidden_act|fusion|version|router_logits|multiplier|logit)($|_)"
)
#: Name fragments of keys that can shape the cache: heads and head dims, layer counts / lists / patterns,
#: windows and chunks, latent / compressed KV, cross-attention, conv / SSM state, KV sharing, indexers.
CACHE_PATTERN = re.compile(
    r"head|layer|window|chunk|kv|latent|compress|cross_attention|conv|state|ssm|mamba|shar|pattern|block|"
    r"interval|period|index|expand|hidden_size|d_model|n_embd|n_embed|(^|_)dim($|_)|sparse|attention|attn|"
    r"(^|_)(k|v|qk)_|query"
)
#: Name fragments that mark a key as cache-shaping even where a weights fragment also matches (kv_lora_rank).
STRONG_CACHE_PATTERN = re.compile(
    r"kv_lora|(^|_)kv_|_kv($|_)|head_dim|key_value|window|compress|cross_attention|conv|ssm_state|layer_types|"
    r"kv_shared|sharing"
)
#: Name fragments of keys that can shape the weights only (experts, MLP widths, vocabulary, biases).
WEIGHTS_PATTERN = re.compile(
    r"expert|intermediate|vocab|ffn|mlp|moe|inner|multiple_of|lora|group|dense|bias|tie_|router|embed|width|"
    r"dt_rank|time_step_rank|per_layer_input"
)

#: Per family, keys the cache pattern would flag that are known not to shape this family's cache, with the
#: domain they do shape ("weights") or none ("harmless").
FAMILY_KEYS: dict[str, dict[str, str]] = {
    "gemma3n_text": {"hidden_size_per_layer_input": "weights", "vocab_size_per_layer_input": "weights"},
    # Gemma 4: per-layer input embeddings, the double-wide MLP of shared-KV layers and the MoE block size
    # weights only (Gemma4TextDecoderLayer).
    "gemma4_text": {
        "hidden_size_per_layer_input": "weights",
        "vocab_size_per_layer_input": "weights",
        "use_double_wide_mlp": "weights",
        "enable_moe_block": "weights",
        "top_k_experts": "harmless",
    },
    # LFM2: the block_* keys size the MLP (Lfm2MLP); block_dim and conv_dim_out repeat hidden_size in the Hub
    # configs and transformers never reads them.
    **{
        family: {
            "block_multiple_of": "weights",
            "block_ffn_dim_multiplier": "weights",
            "block_auto_adjust_ff_dim": "weights",
            "block_ff_dim": "weights",
            "block_dim": "harmless",
            "conv_dim_out": "harmless",
            "num_dense_layers": "weights",
        }
        for family in ("lfm2", "lfm2_moe")
    },
    # DeepSeek-V4: the query / output low-rank projections, the indexer's query heads, hyper-connections,
    # hash-routed MoE layers size weights only (DeepseekV4Attention, DeepseekV4Indexer, the mHC blocks);
    # qk_rope_head_dim is the rotated part of head_dim and index_topk how many entries a query reads.
    "deepseek_v4": {
        "q_lora_rank": "weights",
        "o_lora_rank": "weights",
        "o_groups": "weights",
        "index_n_heads": "weights",
        "hc_mult": "weights",
        "hc_sinkhorn_iters": "harmless",
        "num_hash_layers": "weights",
        "mlp_layer_types": "weights",
        "qk_rope_head_dim": "harmless",
    },
    # Mamba2 mixers project dt inside in_proj: time_step_rank sizes no tensor (Mamba2Mixer only stores it;
    # NemotronHMamba2Mixer never reads it).
    "mamba2": {"time_step_rank": "harmless"},
    "nemotron_h": {"time_step_rank": "harmless"},
    # MLA: num_key_value_heads is nominal (the latent is shared by every head); the nope / v head dims and
    # the query rank size projections only (DeepseekV3Attention); index_n_heads are the indexer's query heads.
    **{
        family: {
            "num_key_value_heads": "harmless",
            "qk_nope_head_dim": "weights",
            "v_head_dim": "weights",
            "q_lora_rank": "weights",
            "index_n_heads": "weights",
            "first_k_dense_replace": "weights",
            "moe_layer_freq": "weights",
            "head_dim": "harmless",
        }
        for family in ("deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2")
    },
}


def classify_key(family: str, key: str) -> str | None:
    """What an unread key can shape: "cache", "weights", or None (harmless)."""
    known = FAMILY_KEYS.get(family, {}).get(key)
    if known is not None:
        return None if known == "harmless" else known
    if key in HARMLESS_KEYS or HARMLESS_PATTERN.search(key):
        return None
    if key.endswith("bias"):
        return "weights"
    if STRONG_CACHE_PATTERN.search(key) or (CACHE_PATTERN.search(key) and not WEIGHTS_PATTERN.search(key)):
        return "cache"
    if WEIGHTS_PATTERN.search(key) or CACHE_PATTERN.search(key):
        return "weights"
    return None


def unread_key_warnings(
    model: str, family: str, data: Raw, read: set[str] | frozenset[str], shapes: str
) -> tuple[ConfigWarning, ...]:
    """One warning per key of ``data`` that can shape ``shapes`` ("cache" or "weights") and no rule read."""
    out = []
    for key in data:
        if key in read or not isinstance(key, str) or data[key] is None:
            continue  # a null states nothing
        if data[key] is False or data[key] == [] or data[key] == {}:
            continue  # a switch that is off, or an empty list, adds nothing
        if classify_key(family, key) == shapes:
            message = f"{model}: config key {key!r} can shape the {shapes} but no rule read it: the figure may be wrong"
            out.append(ConfigWarning(WarningKind.UNREAD_KEY, key, message, shapes))
    return tuple(out)


def refuse_not_understood(model: str, warnings: Sequence[ConfigWarning]) -> None:
    """Strict reading: any warning is an error (NotUnderstoodError lists them all)."""
    if warnings:
        raise NotUnderstoodError(model, [w.message for w in warnings])


def read_checked(
    raw: object, model: str, source: str = "", *, images: int | None = None, strict: bool = False
) -> ReadModel:
    """read_model_config, then, under ``strict``, refuse a config the reader did not fully understand."""
    read = read_model_config(raw, model, source, images=images)
    if strict:
        refuse_not_understood(model, read.layout.warnings)
    return read


# ----------------------------------------------------------------------------------------------------------
# Entry points


def read_config(raw: object, model: str, source: str = "", *, images: int | None = None) -> CacheLayout:
    """Convert a parsed config.json or params.json into a layout (:func:`read_model_config`'s layout)."""
    return read_model_config(raw, model, source, images=images).layout


def read_model_config(raw: object, model: str, source: str = "", *, images: int | None = None) -> ReadModel:
    """Convert a parsed config.json or params.json into a layout, and the config its weights are counted from.

    ``images``: how many images each sequence carries, for models with cross-attention layers (None: the
    default, DEFAULT_IMAGES); a model without such layers must be given None or 0.
    """
    if not isinstance(raw, Mapping):
        raise ConfigFileError(source or model, f"expected a JSON object, got {type(raw).__name__}")
    if is_meta_params(raw):
        return read_meta_params(raw, model, source)
    text, nested = select_text_config(raw, model)
    family = text_family(text, raw)
    f = Fields(model, text, FAMILY_DEFAULTS.get(family, {}))
    rules: list[str] = [f"text config from {nested}"] if nested else []
    notes: list[ConfigWarning] = []
    shape = read_shape(f, family, rules, notes)
    layers, mtp = build_layers(f, family, shape, rules)
    layers = cross_attention_layers(f, family, raw, layers, rules, images)
    max_context = f.optional_integer("context length", CONTEXT_KEYS)
    f.consume("model_type")
    if not known_family(family):
        message = (
            f"{model}: model_type {family!r} is not a family kvplan knows: read as a plain decoder from its "
            "standard keys; the figure may be wrong"
        )
        notes.append(ConfigWarning(WarningKind.UNKNOWN_FAMILY, "model_type", message))
    notes += unread_key_warnings(model, family, text, f.ledger.read, "cache")
    layout = CacheLayout(
        model=model,
        family=family,
        layers=layers,
        hidden_size=shape.hidden,
        dtype=read_dtype(text, raw),
        max_context=max_context,
        rope_limit=read_rope_limit(model, text, family, max_context),
        mtp_layers=mtp,
        rules=tuple(rules),
        source=source,
        warnings=tuple(notes),
        # (read_kv_heads has read the flag of every Falcon config already)
        falcon_new_decoder=family in FALCON_FAMILIES and falcon_new_decoder(family, f.flag("new_decoder_architecture")),
    )
    return ReadModel(layout, ModelConfig(raw_for_weights(text, raw), frozenset(f.ledger.read)))


def raw_for_weights(text: Raw, raw: Raw) -> dict[str, Any]:
    """The text config, plus what a multimodal wrapper keeps at its top level that applies to the decoder too
    (Mistral 3 / Devstral-Small keep quantization_config beside text_config)."""
    out = dict(text)
    for key in ("quantization_config", "tie_word_embeddings", "torch_dtype", "dtype"):
        if key not in out and key in raw:
            out[key] = raw[key]
    return out


def is_meta_params(raw: Raw) -> bool:
    """Meta's original-format params.json: dim / n_layers / n_heads and no model_type."""
    return "model_type" not in raw and "dim" in raw and "n_layers" in raw and "n_heads" in raw


def read_meta_params(raw: Raw, model: str, source: str = "") -> ReadModel:
    """Rule meta_params: Llama / Mistral params.json (dim, n_layers, n_heads, n_kv_heads, head_dim).

    Llama 2 7B/13B params.json omit n_kv_heads (they are MHA); Mistral's adds an explicit head_dim.
    """
    f = Fields(model, raw, {})
    layers = f.integer("layers", ("n_layers",), maximum=MAX_LAYERS)
    heads = f.integer("query heads", ("n_heads",), maximum=MAX_HEADS)
    dim = f.integer("hidden size", ("dim",))
    kv = f.optional_integer("KV heads", ("n_kv_heads",)) or heads
    head_dim = f.optional_integer("head_dim", ("head_dim",)) or _divide(model, dim, heads)
    _check_divides(model, heads, kv)
    max_context = f.optional_integer("context length", ("max_seq_len",))
    layout = CacheLayout(
        model=model,
        family="meta_params",
        layers=tuple(attention_layer(i, heads, kv, head_dim) for i in range(layers)),
        hidden_size=dim,
        dtype=None,
        max_context=max_context,
        rope_limit=read_rope_limit(model, raw, "meta_params", max_context),
        rules=("meta params.json",),
        source=source,
    )
    # The cache rules' reads are not carried on here: the weight counter reads every key itself.
    return ReadModel(layout, ModelConfig(dict(raw)))


def select_text_config(raw: Raw, model: str) -> tuple[Raw, str | None]:
    """Rule nested_text_config: multimodal models keep the decoder under text_config (Gemma 3, Llama 4,
    Mistral 3, Qwen3.5), language_config (DeepSeek-VL) or llm_config (InternVL)."""
    for key in NESTED_KEYS:
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ConfigError(model, "text config", (key,), f"expected an object, got {type(value).__name__}")
        return value, key
    return raw, None


def text_family(text: Raw, raw: Raw) -> str:
    family = text.get("model_type")
    if isinstance(family, str) and family:
        return family
    top = raw.get("model_type")
    if isinstance(top, str):
        return NESTED_FAMILY.get(top, top)
    return "unknown"


def read_dtype(text: Raw, raw: Raw) -> str | None:
    """The config's own dtype: torch_dtype (transformers 4) or dtype (5), nested first, then top level."""
    for source in (text, raw):
        for key in DTYPE_KEYS:
            name = model_dtype_name(source.get(key))
            if name is not None:
                return name
    return None


# ----------------------------------------------------------------------------------------------------------
# The model's shape


@dataclass(frozen=True)
class Shape:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int


def _divide(model: str, hidden: int, heads: int) -> int:
    if hidden % heads:
        raise ConfigError(
            model,
            "head_dim",
            HEAD_DIM_KEYS,
            f"not stated, and hidden size {hidden} is not divisible by {heads} heads",
        )
    return hidden // heads


def _check_divides(model: str, heads: int, kv_heads: int) -> None:
    if heads % kv_heads:
        raise ConfigError(
            model, "KV heads", KV_HEAD_KEYS, f"{kv_heads} KV heads do not divide {heads} query heads evenly"
        )


def read_layer_count(f: Fields, family: str, rules: list[str]) -> int:
    # Rule nemotron_h_block_list: NemotronHConfig.num_hidden_layers is len(layers_block_type) (the key is
    # deprecated and ignored when the list is given): Nemotron-3 Ultra states only the list.
    if family == "nemotron_h" and f.find(LAYER_KEYS) is None:
        blocks = f.sequence("layer types", "layers_block_type")
        if blocks:
            rules.append(f"{len(blocks)} layers: the length of layers_block_type (Nemotron-3)")
            return check_count(
                f.model, "layers", ("layers_block_type",), "layers_block_type", len(blocks), 1, MAX_LAYERS
            )
    return f.integer("layers", LAYER_KEYS, maximum=MAX_LAYERS)


def read_shape(f: Fields, family: str, rules: list[str], notes: list[ConfigWarning]) -> Shape:
    layers = read_layer_count(f, family, rules)
    if family in PURE_SSM_FAMILIES:
        # Mamba / Mamba2 checkpoints have no attention: their head keys (Mamba2 num_heads, head_dim) are SSM dims.
        return Shape(layers, 0, 0, 0, f.integer("hidden size", HIDDEN_KEYS))
    heads = f.integer("query heads", HEAD_KEYS, maximum=MAX_HEADS)
    hidden = f.integer("hidden size", HIDDEN_KEYS)
    head_dim = read_head_dim(f, hidden, heads, rules)
    kv_heads = read_kv_heads(f, family, heads, rules, notes)
    if kv_heads is not None:
        _check_divides(f.model, heads, kv_heads)
    return Shape(layers, heads, kv_heads or 0, head_dim, hidden)


def read_head_dim(f: Fields, hidden: int, heads: int, rules: list[str]) -> int:
    """Rule explicit_head_dim: an explicit head_dim wins over hidden / heads (Gemma: 256 != 3584/16;
    Qwen3: 128 != 4096/32; Mistral Small 3: 128 != 5120/32). ChatGLM calls it kv_channels."""
    found = f.find(HEAD_DIM_KEYS)
    if found is not None:
        value = f.integer("head_dim", HEAD_DIM_KEYS)
        if value * heads != hidden:
            rules.append(f"explicit {found[0]} {value} (hidden / heads would be {hidden / heads:g})")
        return value
    return _divide(f.model, hidden, heads)


def read_kv_heads(f: Fields, family: str, heads: int, rules: list[str], notes: list[ConfigWarning]) -> int | None:
    """The KV-head count G, by the first rule that applies. None: the layers state it (Nemotron-NAS)."""
    # Rule falcon_multi_query: Falcon-7B (RefinedWebModel, or falcon without new_decoder_architecture) sets
    # multi_query: one K/V head for 71 query heads, whatever num_kv_heads says (FalconConfig). Falcon-40B
    # (RefinedWeb = the new decoder architecture) states n_head_kv instead.
    new_arch = falcon_new_decoder(family, f.flag("new_decoder_architecture"))
    if f.flag("multi_query") and not new_arch:
        rules.append("multi_query: one KV head (Falcon)")
        return 1
    found = f.find(KV_HEAD_KEYS)
    if found is not None:
        return f.integer("KV heads", KV_HEAD_KEYS)
    # Rule chatglm_multi_query_group_num: ChatGLM2/3 and GLM-4 use multi_query_group_num KV heads when
    # multi_query_attention is on (chatglm3-6b: 2 KV heads for 32 query heads).
    if f.flag("multi_query_attention") and f.find(("multi_query_group_num",)) is not None:
        rules.append("KV heads from multi_query_group_num (ChatGLM)")
        return f.integer("KV heads", ("multi_query_group_num",))
    # Rule mpt_attn_config: MPT keeps attention options in attn_config (attn_type, kv_n_heads).
    attn = f.nested("attn_config")
    if attn is not None:
        kind = attn.get("attn_type", "multihead_attention")
        if kind == "multiquery_attention":
            rules.append("attn_config multiquery_attention: one KV head (MPT)")
            return 1
        if kind == "grouped_query_attention":
            rules.append("attn_config kv_n_heads (MPT)")
            return attn.integer("KV heads", ("kv_n_heads",))
    # Rule nemotron_nas_block_configs: DeciLM / Nemotron-NAS state KV heads per layer (block_configs).
    if isinstance(f.get("block_configs"), list):
        return None
    if family in MHA_FAMILIES:
        rules.append(f"{family}: multi-head attention (KV heads = query heads)")
        if family in GQA_CAPABLE_MHA_DEFAULT:
            message = (
                f"{f.model}: no KV-head count (num_key_value_heads): assumed {heads} = num_attention_heads, "
                f"as the {family} config class does"
            )
            notes.append(ConfigWarning(WarningKind.ASSUMED, "num_key_value_heads", message))
        return heads
    raise ConfigError(
        f.model,
        "KV heads",
        (*KV_HEAD_KEYS, "multi_query_group_num", "multi_query", "attn_config.kv_n_heads"),
        f"missing, and family {family!r} is not known to be multi-head attention",
    )


# ----------------------------------------------------------------------------------------------------------
# Layers


LayerBuilder = Callable[[Fields, str, Shape, list[str]], "tuple[LayerSpec, ...] | None"]


def build_layers(
    f: Fields, family: str, shape: Shape, rules: list[str]
) -> tuple[tuple[LayerSpec, ...], tuple[LayerSpec, ...]]:
    """The per-layer specs, by the first family rule that claims the config, and any MTP layers."""
    for builder in LAYER_BUILDERS:
        layers = builder(f, family, shape, rules)
        if layers is not None:
            break
    else:  # pragma: no cover - plain_layers always claims
        raise AssertionError("no layer rule applied")
    return layers, mtp_layers(f, shape, layers, rules)


def nemotron_nas_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...] | None:
    """Rule nemotron_nas_block_configs: Llama-Nemotron Super/Ultra (DeciLM) search each layer's attention:
    block_configs[i].attention has n_heads_in_group (KV heads = heads / n_heads_in_group), or no_op /
    replace_with_linear (no attention, so no cache), and an optional window_length."""
    blocks = f.sequence("block_configs", "block_configs", shape.layers)
    if blocks is None:
        return None
    layers = []
    for i, block in enumerate(blocks):
        attn = block.get("attention") if isinstance(block, Mapping) else None
        if not isinstance(attn, Mapping):
            raise ConfigError(f.model, f"layer {i} attention", ("block_configs",), "missing attention block")
        bf = Fields(f.model, attn, {})
        if bf.flag("no_op") or bf.flag("replace_with_linear"):
            layers.append(LayerSpec(index=i, kind=LayerKind.NONE, q_heads=shape.heads))
            continue
        group = bf.integer(f"layer {i} n_heads_in_group", ("n_heads_in_group",))
        if shape.heads % group:
            raise ConfigError(
                f.model,
                f"layer {i} KV heads",
                ("n_heads_in_group",),
                f"{group} does not divide {shape.heads} query heads",
            )
        window = bf.optional_integer(f"layer {i} window", ("window_length",))
        kind = LayerKind.SLIDING if window else LayerKind.FULL
        layers.append(attention_layer(i, shape.heads, shape.heads // group, shape.head_dim, kind=kind, window=window))
    rules.append("per-layer heads from block_configs (Nemotron-NAS)")
    return tuple(layers)


#: DeepSeek-V4 layer types and the compress_ratios value that names each (DeepseekV4Config:
#: _COMPRESS_RATIO_TO_LAYER_TYPE); the rate of each compressed type is compress_rates[type].
V4_RATIO_TYPES = {0: "sliding_attention", 4: "compressed_sparse_attention", 128: "heavily_compressed_attention"}
V4_DEFAULT_RATES = {"compressed_sparse_attention": 4, "heavily_compressed_attention": 128}


def _v4_layer_types(f: Fields, shape: Shape, rules: list[str]) -> list[str]:
    # The Hub configs list compress_ratios, one per layer plus a trailing entry for the MTP layer
    # (DeepSeek-V4-Flash: 44 entries for 43 layers); DeepseekV4Config maps each through
    # _COMPRESS_RATIO_TO_LAYER_TYPE and keeps the first num_hidden_layers. Without either list the class
    # default is two HCA layers, then CSA and HCA alternating.
    types = f.sequence("layer types", "layer_types")
    if types is not None:
        f.consume("compress_ratios")
        return [str(t) for t in types[: shape.layers]]
    ratios = f.integers("compress_ratios", "compress_ratios", minimum=0)
    if ratios is not None:
        if len(ratios) < shape.layers:
            raise ConfigError(
                f.model, "compress_ratios", ("compress_ratios",), f"has {len(ratios)} entries for {shape.layers} layers"
            )
        unknown = sorted({r for r in ratios if r not in V4_RATIO_TYPES})
        if unknown:
            raise ConfigError(
                f.model,
                "compress_ratios",
                ("compress_ratios",),
                f"ratio(s) {unknown} are not ones DeepseekV4Config knows ({sorted(V4_RATIO_TYPES)})",
            )
        rules.append("compress_ratios: 0 sliding only, 4 CSA, 128 HCA (one per layer; the trailing MTP entry dropped)")
        return [V4_RATIO_TYPES[r] for r in ratios[: shape.layers]]
    rules.append("no compress_ratios: two HCA layers, then CSA and HCA alternating (DeepseekV4Config default)")
    n = shape.layers
    return ["heavily_compressed_attention"] * min(n, 2) + [
        "compressed_sparse_attention" if i % 2 else "heavily_compressed_attention" for i in range(max(n - 2, 0))
    ]


def _v4_rates(f: Fields) -> dict[str, int]:
    rates = dict(V4_DEFAULT_RATES)
    table = f.nested("compress_rates")
    if table is not None:
        for name in V4_DEFAULT_RATES:
            value = table.optional_integer(f"compress_rates.{name}", (name,))
            if value is not None:
                rates[name] = value
    for name, key in (
        ("compressed_sparse_attention", "compress_rate_csa"),
        ("heavily_compressed_attention", "compress_rate_hca"),
    ):
        value = f.optional_integer(key, (key,))
        if value is not None:
            rates[name] = value
    return rates


def deepseek_v4_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...] | None:
    """Rule deepseek_v4_compressed: DeepSeek-V4 (Flash, Pro) attention is single-KV-head MQA with K = V stored
    once, over a sliding window on every layer (sliding_window 128), and on CSA / HCA layers one compressed
    entry of head_dim values per compress rate (4 / 128) tokens of the whole context, plus, on CSA layers, a
    compressed indexer key of index_head_dim per entry (transformers models/deepseek_v4/modeling_deepseek_v4.py:
    DeepseekV4HCACache / DeepseekV4CSACache hold keys = values, compressed_kv["compressor"] and, for CSA,
    compressed_kv["indexer"]; the CSA / HCA compressors emit one entry per closed window of compress_rate)."""
    if family != "deepseek_v4":
        return None
    if shape.kv_heads != 1:
        raise ConfigError(
            f.model, "KV heads", KV_HEAD_KEYS, f"{shape.kv_heads}: DeepSeek-V4 attention has one shared KV head"
        )
    window = f.integer("sliding window", ("sliding_window",))
    index_dim = f.integer("index_head_dim", ("index_head_dim",))
    rates = _v4_rates(f)
    layers = []
    for i, name in enumerate(_v4_layer_types(f, shape, rules)):
        single = LayerSpec(
            index=i, kind=LayerKind.SLIDING, q_heads=shape.heads, k_heads=1, k_head_dim=shape.head_dim, window=window
        )
        if name == "sliding_attention":
            layers.append(single)
        elif name in rates:
            csa = name == "compressed_sparse_attention"
            layers.append(
                replace(
                    single,
                    kind=LayerKind.COMPRESSED,
                    compress_ratio=rates[name],
                    indexer_head_dim=index_dim if csa else 0,
                )
            )
        else:
            raise ConfigError(f.model, f"layer {i} type", ("layer_types",), f"unknown layer type {name!r}")
    rules.append(
        f"DeepSeek-V4: K = V once, window {window}; CSA 1 entry per {rates['compressed_sparse_attention']} tokens "
        f"(+ indexer key {index_dim}), HCA 1 per {rates['heavily_compressed_attention']}"
    )
    return tuple(layers)


def mla_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...] | None:
    """Rule mla_latent: DeepSeek-V2/V3/R1/V3.2 and Kimi-K2 cache one latent per token per layer,
    kv_lora_rank + qk_rope_head_dim values (512 + 64), shared by all heads: no factor 2, no per-head K/V
    (num_key_value_heads in these configs is nominal). V3.2's DSA indexer adds one index_head_dim key."""
    if f.find(("kv_lora_rank",)) is None:
        return None
    rank = f.integer("kv_lora_rank", ("kv_lora_rank",))
    rope = f.integer("qk_rope_head_dim", ("qk_rope_head_dim",))
    indexer = f.optional_integer("index_head_dim", ("index_head_dim",)) or 0
    rules.append(f"MLA latent {rank} + {rope}" + (f", indexer key {indexer}" if indexer else ""))
    return tuple(mla_layer(i, shape.heads, rank, rope, indexer) for i in range(shape.layers))


def _gated_delta_net_state(f: Fields) -> tuple[StateTensor, ...]:
    # Qwen3-Next / Qwen3.5 Gated DeltaNet: a causal conv over q, k and v (conv_dim = 2 x key heads x key dim
    # + value heads x value dim) keeps its last kernel - 1 inputs, and the recurrent state is one
    # key_dim x value_dim matrix per value head. mamba_ssm_dtype (Qwen3.5: float32) sets the state dtype.
    k_heads = f.integer("linear_num_key_heads", ("linear_num_key_heads",))
    v_heads = f.integer("linear_num_value_heads", ("linear_num_value_heads",))
    k_dim = f.integer("linear_key_head_dim", ("linear_key_head_dim",))
    v_dim = f.integer("linear_value_head_dim", ("linear_value_head_dim",))
    kernel = f.integer("linear_conv_kernel_dim", ("linear_conv_kernel_dim",), minimum=2)
    conv_dim = 2 * k_heads * k_dim + v_heads * v_dim
    return (
        StateTensor("conv", (conv_dim, kernel - 1)),
        StateTensor("recurrent", (v_heads, k_dim, v_dim), _state_dtype(f)),
    )


def _mamba2_state(f: Fields, prefix: str = "") -> tuple[StateTensor, ...]:
    # Mamba2 (Nemotron-H, pure Mamba2): conv over x, B and C (conv_dim = heads x head_dim + 2 x n_groups x
    # state) keeps kernel - 1 inputs; the SSM state is heads x head_dim x state per sequence.
    heads = f.integer("mamba heads", (f"{prefix}num_heads", "mamba_num_heads", "num_heads"))
    head_dim = f.integer("mamba head_dim", (f"{prefix}head_dim", "mamba_head_dim", "head_dim"))
    groups = f.integer("n_groups", ("n_groups", "mamba_n_groups"))
    state = f.integer("ssm_state_size", ("ssm_state_size", "state_size", "mamba_d_state"))
    kernel = f.integer("conv_kernel", ("conv_kernel", "mamba_d_conv"), minimum=2)
    conv_dim = heads * head_dim + 2 * groups * state
    # expand x hidden = heads x head_dim in these configs (MambaMixer2's intermediate size): redundant.
    f.consume("expand", "mamba_expand")
    return (
        StateTensor("conv", (conv_dim, kernel - 1)),
        StateTensor("ssm", (heads, head_dim, state), _state_dtype(f)),
    )


def _mamba1_state(f: Fields, family: str, hidden: int) -> tuple[StateTensor, ...]:
    # Mamba (v1) and Jamba: d_inner = expand x hidden; conv keeps kernel - 1 inputs of d_inner channels; the
    # SSM state is d_inner x d_state.
    # Rule mamba1_intermediate_size: a Mamba / Falcon-Mamba file's intermediate_size is d_inner and wins over
    # expand x hidden (MambaConfig / FalconMambaConfig.__post_init__ derive it from expand, then the file's
    # keys overwrite it: falcon-mamba-7b states expand 16 but intermediate_size 8192 = 2 x 4096). Jamba's
    # intermediate_size is its MLP width: its mixer is always mamba_expand x hidden (JambaMambaMixer).
    pure = family in PURE_SSM_FAMILIES
    keys = ("intermediate_size", "mamba_intermediate_size") if pure else ("mamba_intermediate_size",)
    inner = f.optional_integer("mamba d_inner", keys)
    if inner is not None:
        f.consume("expand", "mamba_expand")
    else:
        expand = f.integer("mamba expand", ("mamba_expand", "expand"))
        inner = expand * hidden
    state = f.integer("mamba d_state", ("mamba_d_state", "state_size"))
    kernel = f.integer("mamba d_conv", ("mamba_d_conv", "conv_kernel"), minimum=2)
    return (StateTensor("conv", (inner, kernel - 1)), StateTensor("ssm", (inner, state), _state_dtype(f)))


def _short_conv_state(f: Fields, hidden: int) -> tuple[StateTensor, ...]:
    # Rule lfm2_short_conv: LFM2's short-convolution layers are a depthwise Conv1d over hidden_size channels
    # with kernel conv_L_cache (Lfm2ShortConv); decoding keeps its last kernel - 1 inputs per sequence and no
    # other state. conv_dim, where a file states it, equals hidden_size (transformers ignores it).
    kernel = f.integer("conv_L_cache", ("conv_L_cache",), minimum=2)
    if f.get("conv_dim") == hidden:
        f.consume("conv_dim")
    return (StateTensor("conv", (hidden, kernel - 1)),)


def _state_dtype(f: Fields) -> str | None:
    found = f.find(("mamba_ssm_dtype", "mamba_ssm_cache_dtype", "ssm_dtype"))
    return None if found is None else model_dtype_name(found[1])


def _state_layer(index: int, state: tuple[StateTensor, ...]) -> LayerSpec:
    return LayerSpec(index=index, kind=LayerKind.STATE, state=state)


def hybrid_state_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...] | None:
    """Rules for models mixing attention with linear-attention / SSM layers (fixed state per sequence)."""
    kinds = _hybrid_kinds(f, family, shape, rules)
    if kinds is None:
        return None
    full = {"full_attention", "attention", "*"}
    if family in ("nemotron_h",):
        state = _mamba2_state(f, "mamba_")
    elif family in ("jamba",):
        state = _mamba1_state(f, family, shape.hidden)
    elif family in LFM2_FAMILIES:
        state = _short_conv_state(f, shape.hidden)
    else:
        state = _gated_delta_net_state(f)
    layers = []
    for i, kind in enumerate(kinds):
        if kind in full:
            layers.append(attention_layer(i, shape.heads, shape.kv_heads, shape.head_dim))
        elif kind in ("linear_attention", "mamba", "M", "conv"):
            layers.append(_state_layer(i, state))
        elif kind in ("-", "E", "mlp", "moe"):  # Nemotron-H MLP / MoE blocks: no attention, no cache
            layers.append(LayerSpec(index=i, kind=LayerKind.NONE))
        else:
            raise ConfigError(
                f.model, f"layer {i} type", ("layer_types", "hybrid_override_pattern"), f"unknown layer type {kind!r}"
            )
    return tuple(layers)


def _hybrid_kinds(f: Fields, family: str, shape: Shape, rules: list[str]) -> list[str] | None:
    # Rule nemotron_h_pattern: Nemotron-H writes one character per block: M = Mamba2, * = attention,
    # - = MLP, E = MoE (transformers NemotronHConfig._pattern_to_list).
    pattern = f.get("hybrid_override_pattern")
    if isinstance(pattern, str):
        if len(pattern) != shape.layers:
            raise ConfigError(
                f.model,
                "layer pattern",
                ("hybrid_override_pattern",),
                f"has {len(pattern)} characters for {shape.layers} layers",
            )
        rules.append("hybrid_override_pattern (Nemotron-H): M Mamba2, * attention, - MLP, E MoE")
        return list(pattern)
    layer_types = f.sequence("layer types", "layer_types", shape.layers) or f.sequence(
        "layer types", "layers_block_type", shape.layers
    )
    # Rule lfm2_full_attn_idxs: LFM2 configs without layer_types list their attention layers in
    # full_attn_idxs and every other layer is a short convolution (Lfm2Config.__post_init__).
    if layer_types is None and family in LFM2_FAMILIES:
        idxs = f.integers("full_attn_idxs", "full_attn_idxs", minimum=0)
        if idxs is not None:
            rules.append("LFM2: attention at full_attn_idxs, short convolution elsewhere")
            return ["full_attention" if i in idxs else "conv" for i in range(shape.layers)]
    if layer_types and family in LFM2_FAMILIES:
        f.consume("full_attn_idxs")
    if layer_types and any(t in ("linear_attention", "mamba", "conv") for t in layer_types):
        rules.append("layer_types with linear-attention / SSM layers")
        f.consume(*DERIVED_PATTERN_KEYS)
        return [str(t) for t in layer_types]
    # Rule qwen3_next_interval: Qwen3-Next without layer_types: every full_attention_interval-th layer is
    # full attention, the rest Gated DeltaNet (Qwen3NextConfig: (i + 1) % interval == 0 -> full).
    interval = f.optional_integer("full_attention_interval", ("full_attention_interval",))
    if interval is not None and f.find(("linear_num_value_heads",)) is not None:
        rules.append(f"full_attention_interval {interval}: one full-attention layer in {interval}")
        return ["full_attention" if (i + 1) % interval == 0 else "linear_attention" for i in range(shape.layers)]
    # Rule jamba_period: Jamba puts attention at layers with i % attn_layer_period == attn_layer_offset and
    # Mamba everywhere else (JambaConfig.layers_block_type).
    if family == "jamba":
        period = f.integer("attn_layer_period", ("attn_layer_period",))
        offset = f.integer("attn_layer_offset", ("attn_layer_offset",), minimum=0)
        rules.append(f"Jamba: attention where i % {period} == {offset}, Mamba elsewhere")
        return ["attention" if i % period == offset else "mamba" for i in range(shape.layers)]
    return None


def pure_ssm_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...] | None:
    """Rule pure_ssm: Mamba / Falcon-Mamba (v1) and Mamba2 checkpoints: every layer is a fixed state."""
    if family in ("mamba", "falcon_mamba"):
        state = _mamba1_state(f, family, shape.hidden)
    elif family == "mamba2":
        state = _mamba2_state(f)
    else:
        return None
    rules.append(f"{family}: every layer keeps a fixed SSM state")
    return tuple(_state_layer(i, state) for i in range(shape.layers))


def _attention_types(f: Fields, family: str, shape: Shape, rules: list[str]) -> list[str] | None:
    """Which layers slide / chunk, for pure-attention models; None when every layer is full."""
    layer_types = f.sequence("layer types", "layer_types", shape.layers)
    if layer_types is not None:
        rules.append("layer_types from the config")
        f.consume(*DERIVED_PATTERN_KEYS)
        return [str(t) for t in layer_types]
    window = read_window(f, family, [])
    # Rule exaone_pattern: EXAONE 4 may spell its interleave as a string ("LLLG": local x3, global).
    pattern_text = f.get("sliding_window_pattern")
    if isinstance(pattern_text, str) and pattern_text and set(pattern_text) <= {"L", "G"} and window:
        rules.append(f"sliding_window_pattern {pattern_text!r}")
        n = len(pattern_text)
        return ["sliding_attention" if pattern_text[i % n] == "L" else "full_attention" for i in range(shape.layers)]
    # Rule family_interleave: Gemma 2 / 3 / 3n, gpt-oss, OLMo 3 and EXAONE 4 without layer_types interleave as
    # their config classes do (DEFAULT_INTERLEAVE): one full layer in n, the rest sliding.
    if family in DEFAULT_INTERLEAVE and window:
        key, n = DEFAULT_INTERLEAVE[family]
        n = (f.optional_integer(key, (key,)) if key else None) or n
        rules.append(f"{family}: one full layer in {n}, the rest sliding (config class default)")
        return ["sliding_attention" if (i + 1) % n else "full_attention" for i in range(shape.layers)]
    # Rule mimo_hybrid_pattern: MiMo-V2-Flash lists hybrid_layer_pattern, 0 = full, 1 = sliding (the same
    # layers MiMoV2FlashConfig derives: layer 0 and every 6th full).
    hybrid = f.sequence("hybrid_layer_pattern", "hybrid_layer_pattern", shape.layers)
    if hybrid is not None and window:
        rules.append("hybrid_layer_pattern (MiMo): 0 full, 1 sliding")
        return ["sliding_attention" if v else "full_attention" for v in hybrid]
    # Rule llama4_chunked: Llama 4 local layers attend within chunks of attention_chunk_size; one layer in
    # no_rope_layer_interval (default 4) is a global NoPE layer (Llama4TextConfig.no_rope_layers; 1 = rope
    # = chunked local, 0 = NoPE = full).
    chunk = f.optional_integer("attention_chunk_size", ("attention_chunk_size",))
    if family == "llama4_text" and chunk:
        no_rope = f.sequence("no_rope_layers", "no_rope_layers", shape.layers)
        if not no_rope:
            interval = f.optional_integer("no_rope_layer_interval", ("no_rope_layer_interval",)) or 4
            no_rope = [int((i + 1) % interval != 0) for i in range(shape.layers)]
        rules.append(f"Llama 4: chunked local attention ({chunk} tokens), NoPE layers full")
        return ["chunked_attention" if v else "full_attention" for v in no_rope]
    if not window:
        f.consume("use_sliding_window", "max_window_layers")  # a switch for a window the config lacks
        return None
    # Rule qwen2_use_sliding_window: Qwen2/Qwen3 configs carry a sliding_window that is off unless
    # use_sliding_window is true, and then only layers i >= max_window_layers slide (Qwen2Config).
    if f.has("use_sliding_window") or family in SLIDING_SWITCH_FAMILIES:
        if not f.flag("use_sliding_window"):
            f.consume("sliding_window", "max_window_layers")
            rules.append("use_sliding_window false: sliding_window ignored (Qwen2-style)")
            return None
        first = f.integer("max_window_layers", ("max_window_layers",), minimum=0)
        rules.append(f"use_sliding_window: layers {first}.. slide")
        return ["sliding_attention" if i >= first else "full_attention" for i in range(shape.layers)]
    # Rule all_layers_sliding: a sliding_window with no layer_types windows every layer (Mistral-7B-v0.1 at
    # 4096; Phi-3-mini-4k at 2047); transformers' cache does the same when layer_types is absent.
    rules.append(f"sliding_window {window} on every layer")
    return ["sliding_attention"] * shape.layers


def attention_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...]:
    """Pure softmax-attention models: full, sliding, chunked and shared-KV layers."""
    types = _attention_types(f, family, shape, rules) or ["full_attention"] * shape.layers
    # Rule gemma4_last_layer_full: Gemma4TextConfig forces the last layer to full attention.
    if family == "gemma4_text" and types[-1] != "full_attention":
        types = [*types[:-1], "full_attention"]
        rules.append("Gemma 4: the last layer is full attention whatever layer_types says")
    window = read_window(f, family, rules)
    chunk = f.optional_integer("attention_chunk_size", ("attention_chunk_size",))
    v_head_dim = f.optional_integer("v_head_dim", ("v_head_dim",))
    swa = _swa_heads(f, shape, rules)
    full_kv, full_dim = _global_heads(f, family, shape, rules) or (shape.kv_heads, shape.head_dim)
    layers = []
    for i, name in enumerate(types):
        if name in ("sliding_attention", "sliding"):
            if window is None:
                raise ConfigError(f.model, "sliding window", ("sliding_window",), f"layer {i} slides but no window")
            kv, dim, vdim = swa if swa else (shape.kv_heads, shape.head_dim, v_head_dim)
            layers.append(
                attention_layer(i, shape.heads, kv, dim, v_head_dim=vdim, kind=LayerKind.SLIDING, window=window)
            )
        elif name == "chunked_attention":
            if chunk is None:
                raise ConfigError(f.model, "chunk size", ("attention_chunk_size",), f"layer {i} is chunked")
            layers.append(
                attention_layer(
                    i,
                    shape.heads,
                    shape.kv_heads,
                    shape.head_dim,
                    v_head_dim=v_head_dim,
                    kind=LayerKind.CHUNKED,
                    window=chunk,
                )
            )
        elif name in ("full_attention", "attention", "global"):
            layers.append(attention_layer(i, shape.heads, full_kv, full_dim, v_head_dim=v_head_dim))
        else:
            raise ConfigError(f.model, f"layer {i} type", ("layer_types",), f"unknown layer type {name!r}")
    return apply_kv_sharing(f, tuple(layers), rules)


def read_window(f: Fields, family: str, rules: list[str]) -> int | None:
    """The sliding window in transformers' convention: the tokens a query sees, itself included."""
    # Rule mimo_window_size: MiMo-V2-Flash's sliding_window_size counts the previous tokens a query attends to,
    # without the query itself; transformers' MiMoV2FlashConfig sets sliding_window = sliding_window_size + 1
    # ("the reference SGLang implementation attends to sliding_window_size previous tokens plus the query").
    if family == "mimo_v2_flash":
        size = f.optional_integer("sliding_window_size", ("sliding_window_size",))
        if size is not None:
            f.consume("sliding_window")  # MiMoV2FlashConfig overwrites it from sliding_window_size
            rules.append(f"sliding_window_size {size} previous tokens + the query: window {size + 1}")
            return size + 1
    # Rule gemma4_bidirectional_window: with use_bidirectional_attention "all", Gemma4TextConfig halves the
    # window: sliding_window // 2 + 1.
    if family == "gemma4_text" and f.get("use_bidirectional_attention") == "all":
        full = f.optional_integer("sliding window", ("sliding_window",))
        if full is not None:
            rules.append(f"bidirectional attention: window {full} // 2 + 1")
            return full // 2 + 1
    # Gemma 2 configs repeat the window as sliding_window_size (read as an alias: equal values are consumed,
    # a different one is left unread and reported).
    return f.optional_integer("sliding window", ("sliding_window", "sliding_window_size"))


def _global_heads(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[int, int] | None:
    """Rule gemma4_global_layers: Gemma 4's full-attention layers have their own head dim, global_head_dim
    (512 when the file omits it), and, when attention_k_eq_v is set, their own KV heads,
    num_global_key_value_heads (Gemma4TextConfig.__post_init__ builds per_layer_config this way; with
    attention_k_eq_v the layer has no v_proj and V is K before its norm, but the cache still holds both:
    Gemma4TextAttention.forward passes separate key and value states to past_key_values.update)."""
    if family != "gemma4_text":
        return None
    dim = f.optional_integer("global_head_dim", ("global_head_dim",)) or 512
    kv = shape.kv_heads
    if f.flag("attention_k_eq_v"):
        kv = f.optional_integer("global KV heads", ("num_global_key_value_heads",)) or kv
        _check_divides(f.model, shape.heads, kv)
    else:
        f.consume("num_global_key_value_heads")  # ignored by the config class without attention_k_eq_v
    rules.append(f"Gemma 4 full-attention layers: {kv} KV heads, head_dim {dim}")
    return kv, dim


def _swa_heads(f: Fields, shape: Shape, rules: list[str]) -> tuple[int, int, int | None] | None:
    # Rule swa_own_heads: MiMo-V2-Flash gives its sliding layers their own K/V heads and dims
    # (swa_num_key_value_heads 8 vs 4 for full layers; transformers MiMoV2FlashAttention doubles
    # num_key_value_heads for SWA layers, which is the same number).
    kv = f.optional_integer("swa KV heads", ("swa_num_key_value_heads",))
    if kv is None:
        return None
    if f.peek("swa_num_attention_heads") == shape.heads:
        f.consume("swa_num_attention_heads")  # the sliding layers' query heads, the same as the full layers'
    dim = f.optional_integer("swa head_dim", ("swa_head_dim",)) or shape.head_dim
    vdim = f.optional_integer("swa v_head_dim", ("swa_v_head_dim", "v_head_dim"))
    rules.append(f"sliding layers: {kv} KV heads, head_dim {dim}" + (f", v_head_dim {vdim}" if vdim else ""))
    return kv, dim, vdim


def apply_kv_sharing(f: Fields, layers: tuple[LayerSpec, ...], rules: list[str]) -> tuple[LayerSpec, ...]:
    """Rule gemma3n_kv_sharing: Gemma 3n's last num_kv_shared_layers layers reuse the cache of the last
    earlier layer of the same type and store nothing (Gemma3nTextConfig.kv_sharing_modes)."""
    shared = f.optional_integer("num_kv_shared_layers", ("num_kv_shared_layers",), minimum=0) or 0
    if not shared:
        return layers
    first = len(layers) - shared
    if first < 1:
        raise ConfigError(
            f.model,
            "shared KV layers",
            ("num_kv_shared_layers",),
            f"{shared} shared layers leave no layer to produce a cache",
        )
    out = list(layers)
    for i in range(first, len(layers)):
        producers = [p for p in layers[:first] if p.kind is layers[i].kind]
        if not producers:
            raise ConfigError(
                f.model,
                "shared KV layers",
                ("num_kv_shared_layers",),
                f"layer {i} ({layers[i].kind.value}) has no earlier layer of its type to share",
            )
        out[i] = LayerSpec(index=i, kind=LayerKind.SHARED, q_heads=layers[i].q_heads, shares_with=producers[-1].index)
    rules.append(f"last {shared} layers share earlier layers' KV (Gemma 3n)")
    return tuple(out)


def plain_layers(f: Fields, family: str, shape: Shape, rules: list[str]) -> tuple[LayerSpec, ...]:
    if shape.kv_heads == 0:
        raise ConfigError(f.model, "KV heads", KV_HEAD_KEYS, "missing")
    return attention_layers(f, family, shape, rules)


LAYER_BUILDERS: tuple[LayerBuilder, ...] = (
    nemotron_nas_layers,
    deepseek_v4_layers,
    mla_layers,
    hybrid_state_layers,
    pure_ssm_layers,
    plain_layers,
)


#: MllamaVisionConfig defaults (transformers/models/mllama/configuration_mllama.py) for a wrapper whose
#: vision_config omits them, and MllamaTextConfig's default cross_attention_layers.
MLLAMA_VISION_DEFAULTS = {"image_size": 448, "patch_size": 14, "max_num_tiles": 4}
MLLAMA_CROSS_LAYERS = (3, 8, 13, 18, 23, 28, 33, 38)


def mllama_tokens_per_image(model: str, raw: Raw, rules: list[str]) -> int:
    """The vision tokens one image brings: max_num_tiles x ((image_size // patch_size)^2 + 1), the patches of
    every tile plus its class token (MllamaVisionModel.num_patches; the vision output is reshaped to
    tiles x num_patches tokens before the cross-attention K/V projections)."""
    vision = Fields(model, raw.get("vision_config") or {}, MLLAMA_VISION_DEFAULTS)
    size = vision.integer("vision image_size", ("image_size",))
    patch = vision.integer("vision patch_size", ("patch_size",))
    tiles = vision.integer("vision max_num_tiles", ("max_num_tiles",))
    per_tile = (size // patch) ** 2 + 1
    rules.append(f"cross-attention: {tiles} tiles x ({size} // {patch})^2 + 1 = {tiles * per_tile:,} tokens per image")
    return tiles * per_tile


def cross_attention_layers(
    f: Fields, family: str, raw: Raw, layers: tuple[LayerSpec, ...], rules: list[str], images: int | None = None
) -> tuple[LayerSpec, ...]:
    """Rule mllama_cross_attention: Llama 3.2 Vision's cross_attention_layers attend to the image tokens, not
    to the text: they cache K and V of each image's vision tokens (MllamaTextCrossAttention: k_proj / v_proj
    of cross_attention_states), a fixed cost per sequence whatever the context, and nothing for a text-only
    sequence (MllamaTextModel skips them when there are no cross-attention states). Each sequence carries
    DEFAULT_IMAGES images unless the plan says otherwise (CacheLayout.with_images)."""
    if images is not None and (isinstance(images, bool) or not isinstance(images, int) or images < 0):
        raise OptionError(Param.IMAGES, f"must be a whole number of images, 0 or more, got {images!r}")
    if family not in ("mllama_text_model", "mllama"):
        if images:
            raise OptionError(Param.IMAGES, f"{f.model} has no cross-attention layers: images do not change its cache")
        return layers
    found = f.integers("cross_attention_layers", "cross_attention_layers", minimum=0)
    indices = MLLAMA_CROSS_LAYERS if found is None else tuple(found)
    bad = [i for i in indices if i >= len(layers)]
    if bad:
        raise ConfigError(
            f.model, "cross_attention_layers", ("cross_attention_layers",), f"{bad} past the {len(layers)} layers"
        )
    per_image = mllama_tokens_per_image(f.model, raw, rules)
    count = DEFAULT_IMAGES if images is None else images
    out = list(layers)
    for i in indices:
        out[i] = replace(layers[i], kind=LayerKind.CROSS, tokens_per_image=per_image, images=count)
    rules.append(f"{len(indices)} cross-attention layers hold image tokens, not the text context")
    default = " (the default for vision models; 0 = text only)" if images is None else ""
    rules.append(f"each sequence carries {count} image(s){default}")
    return tuple(out)


def mtp_layers(f: Fields, shape: Shape, layers: tuple[LayerSpec, ...], rules: list[str]) -> tuple[LayerSpec, ...]:
    """Rule mtp_layers: DeepSeek-V3/R1/V3.2 (num_nextn_predict_layers) and Qwen3.5 (mtp_num_hidden_layers)
    ship multi-token-prediction layers that cache like a main layer when used for speculative decoding."""
    count = f.optional_integer(
        "MTP layers", ("num_nextn_predict_layers", "mtp_num_hidden_layers"), minimum=0, maximum=MAX_LAYERS
    )
    if not count:
        return ()
    template = next((layer for layer in layers if layer.kind in (LayerKind.MLA, LayerKind.FULL)), None)
    if template is None:
        return ()
    rules.append(f"{count} multi-token-prediction layer(s), reported separately")
    n = len(layers)
    return tuple(LayerSpec(**{**template.__dict__, "index": n + i}) for i in range(count))

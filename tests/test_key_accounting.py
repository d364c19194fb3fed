"""Key accounting and value validation in the config reader: an unread cache-shaping key is named, a value of
the wrong type is a ConfigError naming the key and the model, on every bundled config."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from kvplan import errors
from kvplan.layout import WarningKind
from kvplan.readers.config import classify_key, read_config, read_model_config

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "configs" / "models"
BUNDLED = sorted(MODELS.glob("*/*/config.json"))


def bundled(model_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / model_id / "config.json").read_text())
    return data


LLAMA = {
    "model_type": "llama",
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "hidden_size": 512,
    "max_position_embeddings": 4096,
}


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_no_bundled_config_has_an_unread_cache_shaping_key(path: Path) -> None:
    layout = read_config(json.loads(path.read_text()), path.parent.name)
    unread = [w.key for w in layout.warnings if w.kind is WarningKind.UNREAD_KEY]
    assert unread == [], f"a rule must read these keys, or FAMILY_KEYS / HARMLESS_KEYS must declare them: {unread}"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("compress_ratios", [4, 128, 4, 128]),
        ("global_head_dim", 512),
        ("cross_attention_layers", [1]),
        ("num_global_key_value_heads", 4),
        ("attention_k_eq_v", True),
        ("conv_L_cache", 3),
    ],
)
def test_an_injected_cache_shaping_key_is_named(key: str, value: object) -> None:
    layout = read_config({**LLAMA, key: value}, "my/model")
    warning = next(w for w in layout.warnings if w.kind is WarningKind.UNREAD_KEY)
    assert warning.key == key
    assert warning.shapes == "cache"
    assert key in warning.message and "my/model" in warning.message and "may be wrong" in warning.message


def test_harmless_keys_are_not_named() -> None:
    extra = {"rope_theta": 1e6, "rms_norm_eps": 1e-5, "bos_token_id": 1, "attention_dropout": 0.0, "use_cache": True}
    assert read_config({**LLAMA, **extra}, "m").warnings == ()


@pytest.mark.parametrize(
    ("family", "key", "shapes"),
    [
        ("llama", "kv_lora_rank", "cache"),
        ("llama", "q_lora_rank", "weights"),
        ("llama", "n_routed_experts", "weights"),
        ("llama", "sliding_window", "cache"),
        ("llama", "rope_theta", None),
        ("deepseek_v3", "num_key_value_heads", None),
        ("deepseek_v3", "qk_nope_head_dim", "weights"),
        ("jamba", "mamba_dt_rank", "weights"),
        ("llama", "use_conv_bias", "weights"),
    ],
)
def test_classifier(family: str, key: str, shapes: str | None) -> None:
    assert classify_key(family, key) == shapes


def test_unknown_family_is_read_as_a_plain_decoder_and_says_so() -> None:
    layout = read_config({**LLAMA, "model_type": "brand_new_lm"}, "x/y")
    kinds = [w.kind for w in layout.warnings]
    assert kinds == [WarningKind.UNKNOWN_FAMILY]
    assert "brand_new_lm" in layout.warnings[0].message and "plain decoder" in layout.warnings[0].message


def test_a_missing_kv_head_count_says_what_was_assumed() -> None:
    cfg = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}
    layout = read_config(cfg, "x/y")
    assert layout.kv_heads == 8
    (warning,) = layout.warnings
    assert warning.kind is WarningKind.ASSUMED and "assumed 8" in warning.message


def test_multi_head_by_architecture_needs_no_warning() -> None:
    cfg = {"model_type": "gpt2", "n_layer": 2, "n_head": 4, "n_embd": 256, "n_positions": 512}
    assert read_config(cfg, "gpt2").warnings == ()


BAD_VALUES: list[tuple[str, object]] = [
    ("string", "256"),
    ("null", None),
    ("bool", True),
    ("float", 512.0),
    ("nan", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("zero", 0),
    ("negative", -8),
]


@pytest.mark.parametrize(("what", "bad"), BAD_VALUES, ids=[w for w, _ in BAD_VALUES])
@pytest.mark.parametrize(
    ("model_id", "key"),
    [
        ("deepseek-ai/DeepSeek-V3", "kv_lora_rank"),
        ("deepseek-ai/DeepSeek-V3", "qk_rope_head_dim"),
        ("deepseek-ai/DeepSeek-V3", "num_hidden_layers"),
        ("meta-llama/Meta-Llama-3.1-8B", "num_key_value_heads"),
        ("meta-llama/Meta-Llama-3.1-8B", "num_attention_heads"),
        ("meta-llama/Meta-Llama-3.1-8B", "head_dim"),
        ("mistralai/Mistral-7B-v0.1", "sliding_window"),
        ("Qwen/Qwen3-Next-80B-A3B", "linear_num_value_heads"),
        ("nvidia/Nemotron-H-56B-Base-8K", "ssm_state_size"),
    ],
)
def test_a_wrong_value_on_a_count_is_an_error_naming_key_and_model(
    model_id: str, key: str, what: str, bad: object
) -> None:
    raw = bundled(model_id)
    if what == "null" and key in ("sliding_window", "num_key_value_heads"):
        pytest.skip(f"{key}: null means 'not used' in its config class")
    with pytest.raises(errors.ConfigError) as info:
        read_config({**raw, key: bad}, model_id)
    assert key in str(info.value) and model_id in str(info.value)


def test_null_kv_lora_rank_does_not_turn_mla_into_mha() -> None:
    with pytest.raises(errors.ConfigError, match="kv_lora_rank is null"):
        read_config({**bundled("deepseek-ai/DeepSeek-V3"), "kv_lora_rank": None}, "deepseek-ai/DeepSeek-V3")


def test_a_wrong_type_in_a_nested_block_is_an_error() -> None:
    raw = {k: v for k, v in LLAMA.items() if k != "num_key_value_heads"}
    raw |= {"model_type": "mpt", "attn_config": {"attn_type": "grouped_query_attention", "kv_n_heads": "2"}}
    with pytest.raises(errors.ConfigError, match="kv_n_heads"):
        read_config(raw, "mpt")


def test_a_non_boolean_switch_is_an_error() -> None:
    raw = {**bundled("Qwen/Qwen2.5-7B-Instruct"), "use_sliding_window": "false"}
    with pytest.raises(errors.ConfigError, match="use_sliding_window"):
        read_config(raw, "q")


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_no_bundled_config_has_an_unread_weight_shaping_key(path: Path) -> None:
    from kvplan.weights import count_parameters

    read = read_model_config(json.loads(path.read_text()), path.parent.name)
    unread = [w.key for w in count_parameters(read).warnings]
    assert unread == [], f"a weight rule must read these keys, or FAMILY_KEYS must declare them: {unread}"


def test_an_unread_weight_key_is_named_by_the_weight_count() -> None:
    from kvplan.weights import count_parameters

    raw = {**bundled("meta-llama/Meta-Llama-3.1-8B"), "moe_shared_expert_intermediate_size": 4096}
    (warning,) = count_parameters(read_model_config(raw, "m")).warnings
    assert (warning.key, warning.shapes) == ("moe_shared_expert_intermediate_size", "weights")

"""Config reader: every fixture folder is a case (expect.json says what it must read or which error)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvplan import errors
from kvplan.formula import estimate, resolve_types
from kvplan.readers.config import read_config
from kvplan.resolve import load_model

from .conftest import FIXTURES, fixture_cases, load_expect


def read_fixture(case: str):  # type: ignore[no-untyped-def]
    folder = FIXTURES / case
    path = next(folder / name for name in ("config.json", "params.json") if (folder / name).exists())
    return read_config(json.loads(path.read_text()), case, str(path))


@pytest.mark.parametrize("case", fixture_cases())
def test_fixture_case(case: str) -> None:
    expect = load_expect(case)
    if "error" in expect:
        error_cls = getattr(errors, str(expect["error"]))
        with pytest.raises(error_cls) as info:
            read_fixture(case)
        for fragment in expect["contains"]:  # type: ignore[attr-defined]
            assert fragment in str(info.value), (fragment, str(info.value))
        assert case in str(info.value), "the message names the model"
        return
    layout = read_fixture(case)
    assert layout.num_layers == expect["layers"]
    assert layout.query_heads == expect["query_heads"]
    assert layout.kv_heads == expect["kv_heads"]
    assert layout.head_dim == expect["head_dim"]
    assert layout.max_context == expect["max_context"]
    assert layout.dtype == expect["dtype"]
    assert [k.value for k in layout.kinds] == expect["kinds"]
    types = resolve_types(layout, "float16")
    assert estimate(layout, 1, 1, types).bytes_per_token == expect["bytes_per_token_fp16"]
    for point in expect.get("totals_fp16", []):  # type: ignore[attr-defined]
        got = estimate(layout, point["ctx"], point["batch"], types).total_bytes
        assert got == point["total_bytes"], (point, got)
    if "rules" in expect:
        for fragment in expect["rules"]:  # type: ignore[attr-defined]
            assert any(fragment in rule for rule in layout.rules), (fragment, layout.rules)


def test_fixture_folder_resolves_as_path() -> None:
    layout = load_model(str(FIXTURES / "gqa"))
    assert layout.kv_heads == 4
    assert "gqa" in layout.source


def test_params_json_file_resolves_as_path() -> None:
    layout = load_model(str(FIXTURES / "params" / "params.json"))
    assert layout.family == "meta_params"


@pytest.mark.parametrize(
    ("model", "h", "g", "d", "layers"),
    [
        ("meta-llama/Llama-2-7b-hf", 32, 32, 128, 32),
        ("meta-llama/Llama-2-70b-chat-hf", 64, 8, 128, 80),
        ("tiiuae/falcon-7b", 71, 1, 64, 32),  # multi_query
        ("tiiuae/falcon-40b", 128, 8, 64, 60),  # n_head_kv
        ("THUDM/chatglm3-6b", 32, 2, 128, 28),  # multi_query_group_num, kv_channels
        ("bigscience/bloom", 112, 112, 128, 70),  # n_embed / n_layer, MHA family
        ("openai-community/gpt2", 12, 12, 64, 12),
        ("google/gemma-2-9b-it", 16, 8, 256, 42),  # explicit head_dim 256 != 3584/16
        ("google/gemma-3-4b-it", 8, 4, 256, 34),  # Gemma3TextConfig defaults fill the omitted keys
        ("google/gemma-3-27b-it", 32, 16, 128, 62),  # nested text_config
        ("Qwen/Qwen3-32B", 64, 8, 128, 64),  # head_dim 128 != 5120/64
        ("mistralai/Devstral-Small-2-24B-Instruct", 32, 8, 128, 40),  # text_config, head_dim 128 != 160
        ("meta-llama/Llama-3.2-1B", 32, 8, 64, 16),
    ],
)
def test_real_config_shapes(model: str, h: int, g: int, d: int, layers: int) -> None:
    layout = load_model(model)
    assert (layout.query_heads, layout.kv_heads, layout.head_dim, layout.num_layers) == (h, g, d, layers)


def test_meta_params_match_hf_config() -> None:
    """The params.json and config.json of the same model describe the same cache."""
    root = Path(__file__).parent.parent / "configs" / "models" / "meta-llama"
    for name in ("Llama-3.2-1B", "Meta-Llama-3-8B"):
        params = read_config(json.loads((root / name / "params.json").read_text()), name)
        hf = read_config(json.loads((root / name / "config.json").read_text()), name)
        fp16 = resolve_types(hf, "float16")
        assert estimate(params, 4096, 1, fp16).total_bytes == estimate(hf, 4096, 1, fp16).total_bytes


def test_missing_context_is_none_not_invented() -> None:
    assert load_model("bigscience/bloom").max_context is None


def test_config_error_names_model_quantity_and_keys() -> None:
    with pytest.raises(errors.ConfigError) as info:
        read_config({"model_type": "llama", "num_attention_heads": 8, "hidden_size": 64}, "my/model")
    message = str(info.value)
    assert message.startswith("my/model: layers: missing")
    for key in ("num_hidden_layers", "n_layer", "num_layers", "n_layers"):
        assert key in message


def test_non_object_config_is_a_file_error() -> None:
    with pytest.raises(errors.ConfigFileError):
        read_config([1, 2, 3], "x")


def test_head_dim_must_divide_when_not_explicit() -> None:
    with pytest.raises(errors.ConfigError, match="not divisible"):
        read_config(
            {
                "model_type": "llama",
                "num_hidden_layers": 1,
                "num_attention_heads": 7,
                "num_key_value_heads": 7,
                "hidden_size": 100,
            },
            "x",
        )

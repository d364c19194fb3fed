"""The model's context limit: max_position_embeddings, extended by RoPE scaling as vLLM's _get_and_verify_max_len
derives max_model_len (vllm/config/model.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvplan import catalog
from kvplan.errors import ConfigError
from kvplan.readers.config import read_config
from kvplan.readers.context import context_limit

MODELS = Path(__file__).parent.parent / "configs" / "models"
BASE: dict[str, Any] = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "hidden_size": 512,
    "max_position_embeddings": 4096,
}


def limit_of(**extra: Any) -> tuple[int, str] | None:
    found = context_limit(read_config({**BASE, **extra}, "acme/test"))
    return None if found is None else (found.tokens, found.describe())


def test_plain_max_position_embeddings() -> None:
    assert limit_of() == (4096, "max_position_embeddings 4,096")


def test_qwen3_with_yarn_as_its_model_card_enables_it() -> None:
    """Qwen3-8B's card: rope_scaling yarn, factor 4.0, original_max_position_embeddings 32768 -> 131,072 tokens,
    while the config's max_position_embeddings stays 40,960."""
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert limit_of(model_type="qwen3", max_position_embeddings=40960, rope_scaling=yarn) == (
        131072,
        "context limit 131,072 (yarn RoPE scaling: original_max_position_embeddings 32,768 x factor 4)",
    )


@pytest.mark.parametrize("rope_type", ["linear", "dynamic"])
def test_linear_and_dynamic_scale_max_position_embeddings(rope_type: str) -> None:
    assert limit_of(rope_scaling={"rope_type": rope_type, "factor": 2.0}) == (
        8192,
        f"context limit 8,192 ({rope_type} RoPE scaling: max_position_embeddings 4,096 x factor 2)",
    )


def test_old_spelling_type_and_rope_parameters() -> None:
    assert limit_of(rope_scaling={"type": "linear", "factor": 3})[0] == 3 * 4096  # type: ignore[index]
    assert limit_of(rope_parameters={"rope_type": "linear", "factor": 1.5, "rope_theta": 1e6})[0] == 6144  # type: ignore[index]


@pytest.mark.parametrize(
    "scaling",
    [
        # Llama 3.1: max_position_embeddings 131,072 already is 8,192 x 8
        {"rope_type": "llama3", "factor": 8.0, "original_max_position_embeddings": 8192},
        # Phi-3 long rope: the config states the long length
        {"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]},
        {"rope_type": "default", "rope_theta": 10000},
    ],
)
def test_scalings_whose_config_states_the_length(scaling: dict[str, Any]) -> None:
    assert limit_of(rope_scaling=scaling) == (4096, "max_position_embeddings 4,096")


def test_gemma3_is_already_scaled() -> None:
    """google/gemma-3-27b-it: linear factor 8 on a 131,072 max_position_embeddings that already includes it."""
    layout = read_config(json.loads((MODELS / "google" / "gemma-3-27b-it" / "config.json").read_text()), "g")
    found = context_limit(layout)
    assert found is not None
    assert (found.tokens, found.scaled) == (131072, False)


@pytest.mark.parametrize("factor", ["4", None, True, -2, 0, float("inf")])
def test_a_bad_factor_is_named(factor: object) -> None:
    with pytest.raises(ConfigError, match=r"rope_scaling\.factor"):
        limit_of(rope_scaling={"rope_type": "linear", "factor": factor})


def test_bundled_limits_are_their_max_position_embeddings() -> None:
    """Every bundled config's RoPE scaling agrees with its stated length (yarn: original x factor is exactly
    max_position_embeddings for gpt-oss, DeepSeek, Kimi, Olmo 3, Devstral), read from the JSON itself."""
    for entry in catalog.bundled_models().values():
        if entry.file_name != "config.json":
            continue
        raw = json.loads(entry.read_text())
        text = raw.get("text_config") or raw
        stated = text.get("max_position_embeddings", raw.get("max_position_embeddings"))
        if stated is None:
            continue
        layout = read_config(raw, entry.model_id)
        found = context_limit(layout)
        assert found is not None
        assert found.tokens == stated, entry.model_id


def qwen3_with_yarn(tmp_path: Path) -> Path:
    raw = json.loads((MODELS / "Qwen" / "Qwen3-8B" / "config.json").read_text())
    raw["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    path = tmp_path / "qwen3-yarn" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(raw))
    return path


def test_size_defaults_to_the_scaled_limit_and_notes_beyond_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvplan.cli import app

    path = qwen3_with_yarn(tmp_path)
    result = CliRunner().invoke(app, ["size", str(path), "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ctx"] == 131072
    assert data["total_bytes"] == 2 * 36 * 8 * 128 * 2 * 131072  # Qwen3-8B: 36 layers, 8 KV heads, bf16
    result = CliRunner().invoke(app, ["size", str(path), "--ctx", "200000"])
    assert result.exit_code == 0
    assert "ctx 200,000 is beyond the model's context limit 131,072 (yarn RoPE scaling" in " ".join(
        result.output.split()
    )


def test_a_bad_rope_factor_fails_before_any_output(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kvplan.cli import app

    path = tmp_path / "config.json"
    bad = {
        **BASE,
        "intermediate_size": 1024,
        "vocab_size": 1000,
        "rope_scaling": {"rope_type": "linear", "factor": "x"},
    }
    path.write_text(json.dumps(bad))
    for args in (["size", str(path), "--ctx", "8192"], ["fit", str(path), "--gpu", "h100", "--ctx", "8192"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert "rope_scaling.factor" in result.stderr

"""Fail closed through the CLI: an unread cache-shaping key is a warning in text and JSON on every command and
an exit 2 under --strict; a value of the wrong type is a user error naming the field and the model on every
command (the weights path too); a mutated config never gives exit 0 with a different total."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.readers.config import NULL_MEANS_ABSENT

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "configs" / "models"
runner = CliRunner()

#: One invocation per model command; {m} is the config path.
COMMANDS = {
    "size": ["size", "{m}", "--ctx", "4096"],
    "fit": ["fit", "{m}", "--gpu", "h100", "--ctx", "4096"],
    "pick-g": ["pick-g", "--model", "{m}", "--gpu", "h100", "--ctx", "4096", "--batch", "8"],
    "capacity": ["capacity", "{m}", "--kv-memory", "8GiB", "--max-model-len", "4096", "--engine", "ideal"],
}


def bundled(model_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / model_id / "config.json").read_text())
    return data


def write(tmp_path: Path, raw: dict[str, Any], name: str = "model") -> str:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(raw))
    return str(folder)


def invoke(command: str, model: str, *extra: str) -> tuple[int, str, str]:
    args = [a.format(m=model) for a in COMMANDS[command]] + list(extra)
    result = runner.invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_unread_key_warns_in_text_and_json_and_strict_refuses(tmp_path: Path, command: str) -> None:
    raw = {**bundled("meta-llama/Meta-Llama-3.1-8B"), "compress_ratios": [4] * 32}
    model = write(tmp_path, raw)
    code, out, err = invoke(command, model)
    assert code == 0, err
    assert "compress_ratios" in err and "may be wrong" in err and "warning" in err
    assert "compress_ratios" not in out
    code, out, err = invoke(command, model, "--json")
    assert code == 0, err
    warnings = json.loads(out)["warnings"]
    assert [(w["kind"], w["key"], w["shapes"]) for w in warnings] == [("unread_key", "compress_ratios", "cache")]
    code, out, err = invoke(command, model, "--strict")
    assert code == 2 and out == ""
    assert "compress_ratios" in err and "strict" in err and "Traceback" not in err


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_config_understood_in_full_passes_strict(command: str) -> None:
    code, out, err = invoke(command, "meta-llama/Meta-Llama-3.1-8B", "--strict", "--json")
    assert code == 0, err
    assert json.loads(out)["warnings"] == []


BAD = [
    ("string", "256"),
    ("null", None),
    ("bool", True),
    ("float", 8.0),
    ("nan", math.nan),
    ("inf", math.inf),
    ("-inf", -math.inf),
    ("zero", 0),
    ("negative", -4),
]


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("what", "bad"), BAD, ids=[w for w, _ in BAD])
@pytest.mark.parametrize(
    ("model_id", "key"),
    [("meta-llama/Meta-Llama-3.1-8B", "num_key_value_heads"), ("deepseek-ai/DeepSeek-V3", "kv_lora_rank")],
)
def test_a_wrong_value_is_a_user_error_on_every_command(
    tmp_path: Path, command: str, what: str, bad: object, model_id: str, key: str
) -> None:
    if what == "null" and key == "num_key_value_heads":
        pytest.skip("null KV heads reads as absent (the family's rule then applies)")
    model = write(tmp_path, {**bundled(model_id), key: bad}, "m")
    code, out, err = invoke(command, model)
    assert code == 2, (out, err)
    assert key in err and "m" in err and "Traceback" not in err and out == ""


@pytest.mark.parametrize("command", ["fit", "capacity"])
@pytest.mark.parametrize(("what", "bad"), [("string", "256"), ("float", 256.0), ("bool", True), ("negative", -1)])
def test_a_wrong_expert_count_is_an_error_not_a_dense_model(
    tmp_path: Path, command: str, what: str, bad: object
) -> None:
    """ "n_routed_experts": "256" once made DeepSeek-V3 dense (8.7 instead of 156 GiB per GPU on 8 x H200)."""
    model = write(tmp_path, {**bundled("deepseek-ai/DeepSeek-V3"), "n_routed_experts": bad}, "v3")
    place = ["--gpu", "h200"] + (["--num-gpus", "8"] if command != "capacity" else [])
    args = [a.format(m=model) for a in COMMANDS[command] if a not in ("--kv-memory", "8GiB")]
    args = [a for a in args if a not in ("--gpu", "h100")] + place
    result = runner.invoke(app, args)
    code, err = result.exit_code, result.stderr
    assert code == 2, (result.stdout, err)
    assert "n_routed_experts" in err and "v3" in err


@pytest.mark.parametrize("bad", [-4, 0, math.nan, math.inf, "4"])
def test_mpt_expansion_ratio_must_be_a_positive_number(tmp_path: Path, bad: object) -> None:
    raw = {
        "model_type": "mpt",
        "n_layers": 2,
        "n_heads": 4,
        "d_model": 256,
        "max_seq_len": 2048,
        "vocab_size": 1000,
        "expansion_ratio": bad,
    }
    model = write(tmp_path, raw, "mpt")
    result = runner.invoke(app, ["fit", model, "--gpu", "h100", "--ctx", "2048"])
    assert result.exit_code == 2, result.stdout
    assert "expansion_ratio" in result.stderr


def test_images_set_what_cross_attention_layers_hold() -> None:
    model = str(ROOT / "tests" / "fixtures" / "configs" / "llama32_vision_cross")
    totals = {}
    for images in (0, 1, 3):
        result = runner.invoke(app, ["size", model, "--ctx", "1000", "--images", str(images), "--json"])
        assert result.exit_code == 0, result.stderr
        totals[images] = json.loads(result.stdout)["total_bytes"]
    # 32 self layers x 4096 B x 1000 tokens; each image: 8 cross layers x 6,404 tokens x 4096 B.
    assert totals == {0: 131_072_000, 1: 131_072_000 + 209_846_272, 3: 131_072_000 + 3 * 209_846_272}
    text = runner.invoke(app, ["size", model, "--ctx", "1000"]).stdout
    assert "1 image(s)" in text and "0 = text only" in text


def test_images_on_a_model_without_cross_attention_is_an_error() -> None:
    result = runner.invoke(app, ["size", "meta-llama/Meta-Llama-3.1-8B", "--images", "1"])
    assert result.exit_code == 2 and "--images" in result.stderr and "cross-attention" in result.stderr


def test_serving_engines_refuse_layers_they_have_no_rule_for() -> None:
    model = str(ROOT / "tests" / "fixtures" / "configs" / "deepseek_v4_flash")
    for engine in ("vllm", "sglang", "llama.cpp", "trtllm"):
        result = runner.invoke(app, ["size", model, "--ctx", "4096", "--engine", engine])
        assert result.exit_code == 2, engine
        assert "compressed_attention" in result.stderr and "no rule" in result.stderr


# ---------------------------------------------------------------------------------------------------------
# Property: a valid config with one count mutated never gives exit 0 with a different total under --strict
# (without it, an assumption such as "no KV-head count: MHA" answers with a warning).

BASES = ["meta-llama/Meta-Llama-3.1-8B", "deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-Next-80B-A3B", "google/gemma-3-27b-it"]
MUTANTS = st.one_of(
    st.text(max_size=4),
    st.none(),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**20), max_value=0),
    st.integers(min_value=1, max_value=4096).map(str),
)


def _total(raw: dict[str, Any], tmp: Path, name: str) -> tuple[int, int | None]:
    folder = tmp / name
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(raw, allow_nan=True))
    result = runner.invoke(app, ["size", str(folder), "--ctx", "2048", "--json", "--strict"])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, json.loads(result.stdout)["total_bytes"] if result.exit_code == 0 else None


def _count_keys(raw: dict[str, Any]) -> list[str]:
    text = raw.get("text_config") or raw
    return sorted(k for k, v in text.items() if type(v) is int and v > 0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_mutated_count_never_gives_a_silent_different_total(tmp_path: Path, data: st.DataObject) -> None:
    model_id = data.draw(st.sampled_from(BASES))
    raw = bundled(model_id)
    key = data.draw(st.sampled_from(_count_keys(raw)))
    value = data.draw(MUTANTS)
    # A null where the config class gives null a meaning (sliding_window: no window) is a different valid
    # model, not a type change: those keys are mutated to everything but null.
    assume(not (value is None and key in NULL_MEANS_ABSENT))
    mutated = json.loads(json.dumps(raw))
    (mutated.get("text_config") or mutated)[key] = value
    _, base = _total(raw, tmp_path, "base")
    code, total = _total(mutated, tmp_path, "mutated")
    assert code in (0, 2)
    if code == 0:
        assert total == base, (model_id, key, value)


def test_verify_reads_the_model_the_same_way(tmp_path: Path) -> None:
    """verify --model refuses under --strict before any device work (torch is not needed to refuse)."""
    model = write(tmp_path, {**bundled("meta-llama/Meta-Llama-3.1-8B"), "global_head_dim": 256})
    result = runner.invoke(app, ["verify", "--model", model, "--ctx", "128", "--strict"])
    assert result.exit_code == 2
    assert "global_head_dim" in result.stderr and "strict" in result.stderr

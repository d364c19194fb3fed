"""The CLI through typer's CliRunner: exit codes, stdout vs stderr, no tracebacks, JSON schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.errors import ExitCode

from .conftest import FIXTURES

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_exit_codes_are_named_and_stable() -> None:
    assert (ExitCode.OK, ExitCode.REFUTED, ExitCode.USAGE) == (0, 1, 2)


def test_size_shows_bytes_arithmetic_and_spectrum() -> None:
    code, out, err = run("size", "meta-llama/Llama-2-70b", "--ctx", "4096")
    assert code == 0, err
    assert "327,680" in out
    assert "2 x 80 layers x 8 KV heads x 128 head_dim x 4,096 tokens x 1 seq x 2 B = 1,342,177,280 B (1.25 GiB)" in out
    assert "MHA" in out
    assert "MQA" in out
    assert "8x" in out
    assert err == ""


def test_size_default_ctx_is_stated() -> None:
    code, out, _ = run("size", "meta-llama/Llama-2-7b-hf")
    assert code == 0
    assert "ctx 4,096 tokens (the model's max_position_embeddings)" in out


def test_size_json_schema() -> None:
    code, out, err = run(
        "size", "meta-llama/Llama-2-7b-hf", "--ctx", "4096", "--batch", "10", "--json", "--kv-cache-dtype", "fp16"
    )
    assert code == 0
    assert err == ""
    data = json.loads(out)
    assert data["schema"] == "kvplan.size/1"
    assert data["model"] == "meta-llama/Llama-2-7b-hf"
    assert (data["ctx"], data["batch"], data["kv_cache_dtype"]) == (4096, 10, "float16")
    assert data["bytes_per_token"] == 2 * 32 * 32 * 128 * 2
    assert data["bytes_per_sequence"] == 2 * 32 * 32 * 128 * 2 * 4096
    assert data["total_bytes"] == 21_474_836_480
    (kind,) = data["breakdown"]
    assert kind["kind"] == "full_attention"
    assert kind["total_bytes"] == data["total_bytes"]
    for key in ("bytes_per_token", "bytes_per_sequence", "total_bytes"):
        assert isinstance(data[key], int)


def test_size_kv_heads_what_if() -> None:
    code, out, _ = run("size", "meta-llama/Llama-2-7b-hf", "--ctx", "4096", "--kv-heads", "8", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["bytes_per_token"] == 131_072
    assert data["total_bytes"] == 536_870_912
    assert data["kv_heads"] == 8
    marks = {p["kv_heads"]: (p["is_model"], p["is_what_if"]) for p in data["spectrum"]}
    assert marks[32] == (True, False)
    assert marks[8] == (False, True)


@pytest.mark.parametrize(("text", "tokens"), [("4k", 4000), ("4K", 4096), ("32768", 32768), ("1.5K", 1536)])
def test_ctx_suffixes_follow_vllm(text: str, tokens: int) -> None:
    code, out, _ = run("size", "meta-llama/Llama-2-7b-hf", "--max-model-len", text, "--json")
    assert code == 0
    assert json.loads(out)["ctx"] == tokens


def test_units_si() -> None:
    code, out, _ = run("size", "meta-llama/Llama-2-70b", "--ctx", "4096", "--units", "si")
    assert code == 0
    assert "1.34 GB" in out


def test_path_model(tmp_path: Path) -> None:
    code, out, _ = run("size", str(FIXTURES / "gqa"), "--json")
    assert code == 0
    assert json.loads(out)["ctx"] == 2048


def test_models_lists_every_bundled_model() -> None:
    code, out, _ = run("models", "--json")
    assert code == 0
    rows = {r["model_id"]: r for r in json.loads(out)["models"]}
    bundled = {
        f"{p.parent.parent.name}/{p.parent.name}"
        for p in (Path(__file__).parent.parent / "configs" / "models").glob("*/*/*.json")
    }
    assert set(rows) == bundled
    falcon = rows["tiiuae/falcon-7b"]
    assert (falcon["layers"], falcon["query_heads"], falcon["kv_heads"], falcon["bytes_per_token"]) == (
        32,
        71,
        "1",
        8192,
    )
    assert "tiiuae/falcon-7b-instruct" in falcon["aliases"]


def test_models_table() -> None:
    code, out, _ = run("models")
    assert code == 0
    assert "meta-llama/Llama-2-70b-chat-hf" in out


# ---- errors: one message on stderr, exit 2, never a traceback, the message names the field or flag


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["size", "acme/not-cached"], "HF_HUB_OFFLINE"),  # OfflineError
        (["size", "not a model"], "not a valid Hub id"),  # ModelNotFoundError
        (["size", "./missing/config.json"], "no such file"),  # ConfigFileError
        (["size", str(FIXTURES / "missing_key")], "KV heads"),  # ConfigError
        (["size", str(FIXTURES / "wrong_type")], "num_hidden_layers"),
        (["size", "meta-llama/Llama-2-7b-hf", "--kv-cache-dtype", "fp7"], "--kv-cache-dtype"),  # UnknownDtypeError
        (["size", "meta-llama/Llama-2-7b-hf", "--kv-heads", "5"], "--kv-heads"),  # OptionError
        (["size", "meta-llama/Llama-2-7b-hf", "--ctx", "lots"], "--ctx"),
        (["size", "meta-llama/Llama-2-7b-hf", "--batch", "0"], "--batch"),
        (["size", "bigscience/bloom"], "--ctx"),  # no context length in the config
        (["size", "deepseek-ai/DeepSeek-V3", "--kv-heads", "8"], "--kv-heads"),  # MLA has no KV heads
    ],
)
def test_user_errors(args: list[str], fragment: str) -> None:
    code, out, err = run(*args)
    assert code == ExitCode.USAGE
    assert out == ""
    assert fragment in err
    assert "Traceback" not in err
    assert err.count("kvplan: error:") == 1


def test_debug_env_shows_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KVPLAN_DEBUG", "1")
    code, _, err = run("size", "acme/not-cached")
    assert code == ExitCode.USAGE
    assert "Traceback" in err


def test_unknown_flag_is_usage_error() -> None:
    code, _, err = run("size", "meta-llama/Llama-2-7b-hf", "--nope")
    assert code == 2
    assert "--nope" in err


def test_python_dash_m(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "kvplan", "size", "tiiuae/falcon-7b", "--ctx", "1", "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bytes_per_token"] == 8192


def test_gpus_json_lists_the_catalog() -> None:
    code, out, _ = run("gpus", "--json")
    assert code == 0
    rows = {r["id"]: r for r in json.loads(out)["gpus"]}
    assert rows["a100-80g"]["usable_bytes"] == 81038 * 2**20  # torch total_memory, not nvidia-smi's 81920 MiB
    assert "NVIDIA A100-SXM4-80GB" in rows["a100-80g"]["aliases"]


def test_gpus_broken_user_file_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "gpus.yaml"
    bad.write_text("entries:\n  - id: my-gpu\n    name: Mine\n    usable_bytes: lots\n")
    code, out, err = run("gpus", "--gpu-file", str(bad))
    assert code == ExitCode.USAGE
    assert out == ""
    assert "usable_bytes" in err
    assert "Traceback" not in err

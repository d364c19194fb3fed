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
        [1],
        8192,
    )
    assert falcon["head_dim"] == [64]
    assert "tiiuae/falcon-7b-instruct" in falcon["aliases"]
    assert rows["deepseek-ai/DeepSeek-V3"]["kv_heads"] == []  # MLA: no per-head K/V
    assert rows["deepseek-ai/DeepSeek-V3"]["head_dim"] == [512 + 64]  # kv_lora_rank + qk_rope_head_dim


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


# ---- pick-g and fit


def test_pick_g_reference_scenario_table() -> None:
    code, out, err = run("pick-g", "--gpu", "a100-80g", "--ctx", "65536", "--batch", "32")
    assert code == ExitCode.OK, err
    assert err == ""
    assert "Reference scenario" in out
    assert "Llama-2-13B-shaped" in out
    assert "Recommended: G = 1" in out
    assert "42,949,672,960 B (40 GiB)" in out  # 2 x 40 layers x 1 x 128 x 65,536 x 32 x 2 B
    assert "usable x 0.90" in out  # the budget arithmetic
    assert "- 2 GiB reserve =" in out
    assert "To reach G = 40" in out
    assert "--tensor-parallel-size 5" in out  # the quality-safe G = 5 on five GPUs


def test_pick_g_json_schema() -> None:
    code, out, err = run("pick-g", "--json")
    assert code == ExitCode.OK
    assert err == ""
    data = json.loads(out)
    assert data["schema"] == "kvplan.pick-g/1"
    assert data["scenario"]["name"] == "reference"
    assert (data["ctx"], data["batch"], data["recommended_g"]) == (65536, 32, 1)
    assert [o["g"] for o in data["options"]] == [40, 20, 10, 8, 5, 4, 2, 1]
    by_g = {o["g"]: o for o in data["options"]}
    assert by_g[1]["kv_bytes"] == 2 * 40 * 1 * 128 * 65536 * 32 * 2
    assert by_g[1]["fits"] is True
    assert by_g[2]["fits"] is False
    for option in data["options"]:
        assert option["total_bytes"] == option["kv_bytes"] + option["weights_bytes"]
        for key in ("kv_bytes", "weights_bytes", "total_bytes"):
            assert isinstance(option[key], int)
    budget = data["budget"]
    assert budget["kv_bytes"] == budget["requested_bytes"] - budget["weights_bytes"] - budget["reserve_bytes"]
    assert budget["requested_bytes"] == -(-81038 * 2**20 * 9 // 10)


def test_pick_g_fp8_recommends_g2() -> None:
    code, out, _ = run("pick-g", "--gpu", "a100-80g", "--ctx", "65536", "--batch", "32", "--kv-cache-dtype", "fp8")
    assert code == ExitCode.OK
    assert "Recommended: G = 2" in out
    code, out, _ = run("pick-g", "--kv-cache-dtype", "fp8", "--json")
    assert json.loads(out)["recommended_g"] == 2


def test_pick_g_sweep_matrix_and_json() -> None:
    code, out, _ = run("pick-g", "--ctx", "4K,32K,128K", "--batch", "1,8,32")
    assert code == ExitCode.OK
    assert "Recommended G (the largest that fits) per context and batch" in out
    assert "131,072" in out
    code, out, _ = run("pick-g", "--ctx", "4K,32K,128K", "--batch", "1,8,32", "--json")
    data = json.loads(out)
    assert data["recommended_g"] is None
    assert data["options"] == []
    assert len(data["cells"]) == 9
    assert {(c["ctx"], c["batch"]) for c in data["cells"]} == {
        (c, b) for c in (4096, 32768, 131072) for b in (1, 8, 32)
    }


def test_pick_g_chart() -> None:
    code, out, _ = run("pick-g", "--chart")
    assert code == ExitCode.OK
    assert "Memory per GPU against context" in out
    assert "G = 1 (MQA): fits up to 79,936 tokens" in out
    assert "-----" in out  # the budget line


def test_pick_g_chart_says_where_memory_outreaches_the_model() -> None:
    """Llama-3.1-8B stops at 131,072 tokens (max_position_embeddings); at G = 1 an H100's budget would hold more.
    Budget: ceil(85,020,639,232 x 9/10) - 2 GiB reserve - weights at G = 1 (16,060,522,496 - 32 x 2 x 7 x 128 x
    4,096 x 2 B of K/V projections = 15,590,760,448); KV per token at G = 1, batch 8: 32 x 2 x 128 x 2 x 8 B."""
    code, out, _ = run(
        "pick-g", "--model", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h100", "--ctx", "32K", "--batch", "8", "--chart"
    )
    assert code == ExitCode.OK
    budget = -(-85_020_639_232 * 9 // 10) - 2 * 2**30 - (16_060_522_496 - 32 * 2 * 7 * 128 * 4096 * 2)
    tokens = budget // (32 * 2 * 128 * 2 * 8)
    assert f"G = 1 (MQA): fits up to {tokens:,} tokens by memory; the model's limit is 131,072" in out
    assert "G = 8 (GQA): fits up to 55,609 tokens\n" in out  # within the limit: no note


def test_pick_g_check_exits_1_when_nothing_fits() -> None:
    code, out, err = run("pick-g", "--ctx", "1M", "--batch", "64", "--check")
    assert code == ExitCode.REFUTED
    assert "No G fits" in out
    assert "does not fit" in err
    code, _, _ = run("pick-g", "--check")
    assert code == ExitCode.OK


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["pick-g", "--gpu", "a100-90g"], "unknown GPU"),
        (["pick-g", "--model", "meta-llama/Llama-2-7b-hf"], "--gpu"),
        (["pick-g", "-tp", "3"], "--tensor-parallel-size"),
        (["pick-g", "--gpu", "4xa100", "-tp", "2"], "--tensor-parallel-size"),
        (["pick-g", "--ctx", "4k,lots"], "--ctx"),
        (["pick-g", "--reserve", "2"], "--reserve"),
        (["pick-g", "--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization"),
        (["pick-g", "--model", "deepseek-ai/DeepSeek-V3", "--gpu", "h200"], "no per-head K/V"),
        (["fit", "meta-llama/Llama-2-70b"], "--gpu"),
        (["fit", "meta-llama/Llama-2-70b", "--gpu", "h100", "-tp", "3"], "--tensor-parallel-size"),
        (["fit", "meta-llama/Llama-2-70b", "--gpu", "nope-gpu"], "unknown GPU"),
    ],
)
def test_pick_g_and_fit_user_errors(args: list[str], fragment: str) -> None:
    code, out, err = run(*args)
    assert code == ExitCode.USAGE
    assert out == ""
    assert fragment in err
    assert "Traceback" not in err


def test_fit_answers_all_three_questions() -> None:
    code, out, err = run("fit", "meta-llama/Llama-2-70b", "--gpu", "h100", "--ctx", "32768")
    assert code == ExitCode.OK, err
    assert err == ""
    assert "Longest context at batch 1: does not fit" in out
    assert "Most sequences at ctx 32,768: does not fit" in out
    assert "Fewest GPUs for ctx 32,768 x batch 1: 2 x NVIDIA H100" in out
    assert "--tensor-parallel-size 2" in out
    assert "weights and reserve alone exceed" in out


def test_fit_json_and_check() -> None:
    code, out, _ = run("fit", "meta-llama/Llama-2-70b", "--gpu", "h100", "--ctx", "32768", "--json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data["schema"] == "kvplan.fit/1"
    assert data["fits"] is False
    assert data["max_ctx"][0]["ctx"] == 0
    assert data["max_ctx"][0]["missing_bytes"] == 2 * 80 * 8 * 128 * 2 - data["budget"]["kv_bytes"]
    assert data["max_batch"][0]["batch"] == 0
    assert data["min_gpus"][0]["tensor_parallel_size"] == 2
    code, out, err = run("fit", "meta-llama/Llama-2-70b", "--gpu", "h100", "--ctx", "32768", "--check")
    assert code == ExitCode.REFUTED
    assert "does not fit" in err
    code, _, _ = run("fit", "meta-llama/Llama-2-70b", "--gpu", "h100", "--ctx", "32768", "-tp", "4", "--check")
    assert code == ExitCode.OK


def test_fit_unbounded_context_is_null_in_json() -> None:
    code, out, _ = run("fit", str(FIXTURES / "mamba2"), "--gpu", "24GB", "--ctx", "4096", "--json")
    assert code == ExitCode.OK
    (answer,) = json.loads(out)["max_ctx"]
    assert answer["ctx"] is None
    assert answer["unbounded"] is True
    code, out, _ = run("fit", str(FIXTURES / "mamba2"), "--gpu", "24GB", "--ctx", "4096")
    assert "Longest context at batch 1: unbounded" in out


def test_fit_lists() -> None:
    code, out, _ = run(
        "fit", "meta-llama/Llama-2-7b-hf", "--gpu", "h100", "--ctx", "4K,32K", "--batch", "1,8", "--json"
    )
    assert code == ExitCode.OK
    data = json.loads(out)
    assert [a["batch"] for a in data["max_ctx"]] == [1, 8]
    assert [a["ctx"] for a in data["max_batch"]] == [4096, 32768]
    assert len(data["min_gpus"]) == len(data["checks"]) == 4


def test_pick_g_says_what_it_changed_of_the_scenario() -> None:
    code, out, _ = run("pick-g", "--gpu", "h100", "--num-gpus", "4", "--ctx", "4K", "--json")
    assert code == ExitCode.OK
    data = json.loads(out)
    assert data["tensor_parallel_size"] == 4
    assert data["gpu"]["count"] == 4
    assert data["scenario"]["changes"] == [
        "4 x NVIDIA H100 80GB SXM5 (h100-sxm-80g) instead of NVIDIA A100 80GB SXM4 (a100-80g)",
        "ctx 4,096 instead of 65,536",
    ]
    assert {s["g"] for s in data["skipped"]} == {10, 5}  # 4 neither divides 10 or 5 nor is divided by them
    code, out, _ = run("pick-g", "--json")
    assert json.loads(out)["scenario"]["changes"] == []


def test_capacity_json_vllm_blocks_tokens_concurrency() -> None:
    code, out, err = run("capacity", "meta-llama/Llama-3.1-8B", "--kv-memory", "10GiB", "--ctx", "8K", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["schema"] == "kvplan.capacity/1"
    assert data["engine"] == "vllm"
    assert data["num_blocks"] == 10 * 2**30 // (32 * 16 * 8 * 256 * 2)  # 2 MiB per block of 16 tokens
    assert data["kv_tokens"] == 81_920
    assert data["max_concurrency"] == 10.0


@pytest.mark.parametrize("engine", ["ideal", "sglang", "llama.cpp", "trtllm", "hf"])
def test_capacity_every_engine(engine: str) -> None:
    code, out, err = run(
        "capacity", "meta-llama/Llama-3.1-8B", "--kv-memory", "10GiB", "--ctx", "8K", "--engine", engine, "--json"
    )
    assert code == 0, err
    assert json.loads(out)["kv_tokens"] == 81_920  # 10 GiB // 131,072 B per token, whichever way it is counted


def test_capacity_from_a_gpu_budget() -> None:
    code, out, err = run("capacity", "meta-llama/Llama-3.1-8B", "--gpu", "h100", "--ctx", "8K", "--json")
    assert code == 0, err
    data = json.loads(out)
    usable = 81_082 * 2**20  # the catalog's torch total for h100-sxm-80g
    weights = 8_030_261_248 * 2  # Llama-3.1-8B parameters x 2 B
    # vLLM 0.33's terms (engines/vllm.py, calibrated on vLLM 0.19.0 logs): the sampler's peak over 1,024 rows of
    # the 128,256-entry vocabulary, 256 MiB non-torch at tp 1, CUDA graphs 320 MiB + 16 MiB x 32 layers
    activation = 8192 * 4096 * 2 + 15 * 1024 * 128_256
    non_torch, graphs = 256 * 2**20, (320 + 16 * 32) * 2**20
    assert data["kv_memory_bytes"] == -(-usable * 9 // 10) - weights - activation - non_torch - graphs
    reserved = run("capacity", "meta-llama/Llama-3.1-8B", "--gpu", "h100", "--ctx", "8K", "--reserve", "2GiB", "--json")
    assert json.loads(reserved[1])["kv_memory_bytes"] == -(-usable * 9 // 10) - weights - 2 * 2**30
    assert data["gpu"].startswith("NVIDIA H100")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["capacity", "meta-llama/Llama-3.1-8B"], "--kv-memory"),
        (["capacity", "meta-llama/Llama-3.1-8B", "--kv-memory", "10.5"], "--kv-memory"),  # a bare integer is bytes
        (["capacity", "meta-llama/Llama-2-70b", "--gpu", "l4"], "nothing is left"),
    ],
)
def test_capacity_errors(args: list[str], fragment: str) -> None:
    code, out, err = run(*args)
    assert code == ExitCode.USAGE
    assert out == ""
    assert fragment in err


# ---- verify (CPU, small shapes) --------------------------------------------------------------------------


def test_verify_model_plan_on_cpu() -> None:
    pytest.importorskip("torch")
    code, out, err = run(
        "verify",
        "--device",
        "cpu",
        "--model",
        str(FIXTURES / "gqa"),
        "--ctx",
        "256",
        "--batch",
        "2",
        "--kv-heads",
        "4,1",
        "--no-timing",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["schema"] == "kvplan.verify/1"
    assert data["ok"] is True
    cache = [c for c in data["checks"] if c["kind"] == "cache_bytes"]
    # 4 layers x K and V x G heads x 64 dims x 256 tokens x 2 seqs x 2 B (bf16), for G = 4 and G = 1
    assert [c["measured_bytes"] for c in cache] == [4 * 2 * g * 64 * 256 * 2 * 2 for g in (4, 1)]
    assert all(c["predicted_bytes"] == c["measured_bytes"] for c in cache)


def test_verify_self_check_under_a_cap() -> None:
    pytest.importorskip("torch")
    code, out, err = run("verify", "--device", "cpu", "--max-bytes", "80MiB", "--no-timing", "--json")
    assert code == 0, err
    assert json.loads(out)["ok"] is True


def test_verify_refuted_prediction_exits_1(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from kvplan import verify

    from .test_verify import perturb

    monkeypatch.setattr(verify.runner, "predict", perturb(+2))
    code, _, err = run(
        "verify", "--device", "cpu", "--model", str(FIXTURES / "gqa"), "--ctx", "64", "--no-timing", "--no-probe"
    )
    assert code == ExitCode.REFUTED
    assert "refuted:" in err
    assert "cache bytes" in err


def test_verify_device_unavailable_exits_2() -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, out, err = run("verify", "--device", "cuda", "--model", str(FIXTURES / "gqa"))
    assert code == ExitCode.USAGE
    assert out == ""
    assert "--device cuda" in err


def test_verify_without_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch", None)
    code, _, err = run("verify", "--device", "cpu")
    assert code == ExitCode.USAGE
    assert 'pip install ".[verify]"' in err
    assert "--index-url https://download.pytorch.org/whl/cpu" in err


def test_size_warns_beyond_the_models_context() -> None:
    code, out, _ = run("size", "Qwen/Qwen3-8B", "--ctx", "200000", "--json")
    assert code == 0
    notes = json.loads(out)["notes"]
    assert any("beyond the model's max_position_embeddings 40,960" in n for n in notes)
    _, plain, _ = run("size", "Qwen/Qwen3-8B", "--ctx", "40960", "--json")
    assert not any("beyond" in n for n in json.loads(plain)["notes"])


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        # 2 GPUs as tp 2 x pp 2 = 4 ranks, with each GPU's weights taken as half the model (tp only): wrong before.
        (["capacity", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "2xh100", "--engine", "vllm", "-pp", "2"], "--pipeline"),
        (["fit", "Qwen/Qwen2.5-Math-72B-Instruct", "--gpu", "2xh100", "--engine", "llama.cpp"], "--gpu"),
        (["pick-g", "--model", "Qwen/Qwen2.5-Math-72B-Instruct", "--gpu", "2xh100", "--engine", "llama.cpp"], "--gpu"),
    ],
)
def test_a_gpu_budget_split_into_pipeline_stages_is_refused(args: list[str], flag: str) -> None:
    """Each stage holds other weights and its own layers' KV (vLLM gives every worker the smallest stage's
    blocks): one per-GPU budget would be a wrong number, so it is refused until stages are planned one by one."""
    code, _, err = run(*args)
    assert code == ExitCode.USAGE
    assert err.startswith(f"kvplan: error: {flag}")
    assert "pipeline stages from a GPU budget are not planned yet" in err
    assert "--pipeline-parallel-size N --kv-memory BYTES" in err

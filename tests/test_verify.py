"""verify on the CPU with small shapes: exact tensor bytes per engine layout, refuted predictions, the
out-of-memory and probe paths under a --max-bytes cap, torch missing, devices that are not there, the self-check."""

from __future__ import annotations

import json
import subprocess
import sys
import weakref
from dataclasses import asdict, replace
from typing import Any

import pytest

from kvplan import verify
from kvplan.engines import EngineEstimate, EngineOptions, LayerCost
from kvplan.errors import DeviceUnavailableError, ExitCode, OptionError, TorchMissingError
from kvplan.gpus import load_catalog
from kvplan.layout import CacheLayout, LayerKind, attention_layer
from kvplan.verify import MiB, VerifyPlan, plan_for_model, run_verify
from kvplan.verify.device import open_device

from .conftest import FIXTURES

torch = pytest.importorskip("torch")


def fixture_plan(case: str, engine: str, dtype: str = "auto", *, ctx: int = 1000, batch: int = 3) -> VerifyPlan:
    return plan_for_model(
        str(FIXTURES / case), ctx=ctx, batch=batch, engine=engine, kv_cache_dtype=dtype, weights=False, probe=False
    )


def tiny_layout(layers: int = 2, kv_heads: int = 2, head_dim: int = 16) -> CacheLayout:
    """2 full-attention layers, 4 query heads, fp16: 2 x 2 x 2 x 16 x 2 B = 256 B per token."""
    specs = tuple(attention_layer(i, 4, kv_heads, head_dim) for i in range(layers))
    return CacheLayout(model="tiny", family="llama", layers=specs, hidden_size=64, dtype="float16", max_context=4096)


def run(*plans: VerifyPlan, **kwargs: Any) -> verify.VerifyReport:
    kwargs.setdefault("timing", False)
    kwargs.setdefault("max_bytes", 256 * MiB)
    return run_verify(list(plans), "cpu", **kwargs)


@pytest.fixture
def live_tensors(monkeypatch: pytest.MonkeyPatch) -> list[weakref.ref[Any]]:
    """Weak references to every tensor verify allocates, to show that it lets go of them all."""
    refs: list[weakref.ref[Any]] = []
    empty = torch.empty

    def tracked(*args: Any, **kwargs: Any) -> Any:
        tensor = empty(*args, **kwargs)
        refs.append(weakref.ref(tensor))
        return tensor

    monkeypatch.setattr(torch, "empty", tracked)
    return refs


def alive(refs: list[weakref.ref[Any]]) -> int:
    return sum(ref() is not None for ref in refs)


# ---- exact tensor bytes, layout by layout ----------------------------------------------------------------

LAYOUTS = [
    ("gqa", "hf", "auto"),
    ("gqa", "ideal", "auto"),
    ("gqa", "vllm", "auto"),
    ("gqa", "vllm", "fp8"),
    ("gqa", "vllm", "int8_per_token_head"),
    ("gqa", "vllm", "nvfp4"),
    ("gqa", "llama.cpp", "q8_0"),
    ("gqa", "llama.cpp", "q4_0"),
    ("gqa", "sglang", "auto"),
    ("gqa", "trtllm", "auto"),
    ("gqa", "hf", "fp8_e5m2"),
    ("gqa", "hf", "int8"),
    ("gemma2_alternating", "hf", "auto"),
    ("gemma2_alternating", "vllm", "auto"),
    ("gemma2_alternating", "llama.cpp", "auto"),
    ("hybrid_gdn_interval", "hf", "auto"),
    ("hybrid_gdn_interval", "vllm", "auto"),
    ("hybrid_gdn_interval", "llama.cpp", "auto"),
    ("hybrid_gdn_interval", "sglang", "auto"),
    ("mamba2", "vllm", "auto"),
    ("nemotron_h_pattern", "vllm", "auto"),
    ("mla_deepseek", "hf", "auto"),
    ("mla_deepseek", "ideal", "auto"),
    ("mla_deepseek", "vllm", "auto"),
    ("mla_deepseek", "llama.cpp", "auto"),
    ("mla_deepseek", "trtllm", "auto"),
    ("mla_indexer", "vllm", "fp8_ds_mla"),
    ("mla_indexer", "sglang", "auto"),
    ("gemma3n_shared", "hf", "auto"),
]


@pytest.mark.parametrize(("case", "engine", "dtype"), LAYOUTS, ids=["/".join(x) for x in LAYOUTS])
def test_tensor_bytes_equal_the_engine_estimate(case: str, engine: str, dtype: str) -> None:
    plan = fixture_plan(case, engine, dtype)
    report = run(plan)
    result = report.plans[0]
    assert result.fits
    assert result.measured is not None
    assert result.measured.cache_tensor_bytes == verify.predict(plan).per_gpu_bytes == result.predicted_bytes
    assert result.measured.storage_bytes == result.measured.cache_tensor_bytes
    assert all(layer.predicted_bytes == layer.measured_bytes for layer in result.layers)
    assert report.ok, [c.detail for c in report.refuted]


def test_vllm_padding_layers_of_several_groups_are_all_counted() -> None:
    plan = plan_for_model("xiaomimimo/mimo-v2-flash", ctx=256, engine="vllm", weights=False, probe=False)
    assert sum(layer.index == -1 for layer in verify.cache_tensors(plan)) == 5  # 5 groups with padding slots
    report = run(plan)
    assert report.ok, [c.detail for c in report.refuted]
    assert report.plans[0].measured is not None
    assert report.plans[0].measured.cache_tensor_bytes == report.plans[0].predicted_bytes


def shapes(plan: VerifyPlan) -> dict[tuple[int, str], tuple[tuple[int, ...], str]]:
    return {(layer.index, t.name): (t.shape, t.dtype) for layer in verify.cache_tensors(plan) for t in layer.tensors}


def test_transformers_layout_is_batch_heads_seq_dim() -> None:
    got = shapes(fixture_plan("gqa", "hf"))  # 4 layers, 4 KV heads, head_dim 64, bf16
    assert got[(0, "k")] == got[(0, "v")] == ((3, 4, 1000, 64), "bfloat16")
    assert len(got) == 8


def test_vllm_layout_is_flash_attention_pages() -> None:
    got = shapes(fixture_plan("gqa", "vllm"))
    blocks = 3 * -(-1000 // 16)  # cdiv(1000, 16) = 63 pages per request x 3 requests
    assert got[(0, "kv")] == ((2, blocks, 16, 4, 64), "bfloat16")


def test_llamacpp_q8_0_is_uint8_rows_of_ggml_row_size() -> None:
    got = shapes(fixture_plan("gqa", "llama.cpp", "q8_0"))
    cells = 3072  # pad256(1000 x 3 sequences) in one unified stream
    row = 4 * 64 // 32 * 34  # ggml_row_size(q8_0, 4 heads x 64) = 8 blocks x 34 B
    assert got[(0, "k")] == got[(0, "v")] == ((cells, row), "uint8")


def test_mla_keys_and_values_apart_under_transformers() -> None:
    got = shapes(fixture_plan("mla_deepseek", "hf"))  # kv_lora_rank 64, rope 16, bf16
    assert got[(0, "keys")] == ((3, 1, 1000, 64), "bfloat16")
    assert got[(0, "values")] == ((3, 1, 1000, 16), "bfloat16")
    vllm = shapes(fixture_plan("mla_deepseek", "vllm"))
    assert vllm[(0, "latent")] == ((3 * 63, 16, 80), "bfloat16")


def test_fp8_ds_mla_is_a_656_byte_row_per_token() -> None:
    plan = plan_for_model(
        "deepseek-ai/DeepSeek-V3.2", ctx=64, batch=1, engine="vllm", kv_cache_dtype="fp8_ds_mla", weights=False
    )
    got = shapes(plan)
    assert got[(0, "latent")] == ((4, 16, 656), "uint8")  # 512 + 512 / 128 x 4 + 64 x 2


def test_state_layers_keep_their_own_dtype() -> None:
    got = shapes(fixture_plan("hybrid_gdn_interval", "hf"))
    state = next(i for (i, name) in got if name == "recurrent")
    assert got[(state, "recurrent")] == ((3, 4, 16, 32), "float32")  # transformers keeps it in fp32
    assert got[(state, "conv")] == ((3, 192, 4), "bfloat16")  # the whole kernel


# ---- refuted predictions -----------------------------------------------------------------------------------


def perturb(delta: int) -> Any:
    """A predict() whose layer 1 is off by ``delta`` bytes per token slot."""
    real = verify.predict

    def wrong(plan: VerifyPlan, batch: int | None = None) -> EngineEstimate:
        est = real(plan, batch)
        stage = tuple(replace(c, slot_bytes=c.slot_bytes + delta) if c.spec.index == 1 else c for c in est.stages[0])
        return replace(est, stages=(stage, *est.stages[1:]))

    return wrong


def test_a_wrong_prediction_is_refuted_naming_the_check_and_the_difference(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = VerifyPlan("tiny", tiny_layout(), ctx=100, batch=2, engine="hf")
    monkeypatch.setattr(verify.runner, "predict", perturb(+2))
    report = run(plan)
    assert not report.ok
    (bad,) = report.refuted
    assert bad.name == "tiny: cache bytes"
    assert bad.kind == "cache_bytes"
    assert bad.predicted_bytes == 2 * 100 * 256 + 400  # 200 token slots in layer 1, each 2 B too many
    assert bad.difference_bytes == -400
    assert "-400 B" in bad.detail
    assert "layer 1 (full_attention)" in bad.detail
    assert report.refuted_checks == report.refuted


def test_a_plan_predicted_to_fit_that_does_not_is_refuted(monkeypatch: pytest.MonkeyPatch) -> None:
    plan = VerifyPlan("tiny", tiny_layout(), ctx=1000, batch=4, engine="hf")  # 1,024,000 B
    monkeypatch.setattr(verify.runner, "predict", perturb(-100))  # predicts 624,000 B
    report = run(plan, max_bytes=900_000)
    fit = next(c for c in report.checks if c.kind == "fits")
    assert not fit.ok
    assert "REFUTED" in fit.detail
    assert report.plans[0].predicted_fits
    assert not report.plans[0].fits


# ---- out of memory under the cap ---------------------------------------------------------------------------


def test_out_of_memory_names_the_layer_and_releases_everything(live_tensors: list[weakref.ref[Any]]) -> None:
    plan = VerifyPlan("tiny", tiny_layout(layers=4), ctx=1000, batch=1, engine="hf", weights_bytes=100_000)
    # weights 100,000 B, then each layer's K and V 64,000 B each: the cap lets weights + 2 layers + K of layer 2 in.
    report = run(plan, max_bytes=100_000 + 5 * 64_000 + 10)
    result = report.plans[0]
    assert not result.predicted_fits
    assert not result.fits
    oom = result.out_of_memory
    assert oom is not None
    assert (oom.layer, oom.tensor, oom.source) == (2, "v", "max_bytes")
    assert oom.allocated_bytes == 100_000 + 5 * 64_000
    assert oom.requested_bytes == 64_000
    assert "layer 2 (full_attention)" in oom.describe()
    assert report.ok  # predicted not to fit, and it did not: a confirmed prediction
    fit = next(c for c in report.checks if c.kind == "fits")
    assert "as predicted" in fit.detail
    bytes_check = next(c for c in report.checks if c.kind == "cache_bytes")
    assert bytes_check.ok
    assert bytes_check.measured_bytes == 4 * 128_000
    assert live_tensors
    assert alive(live_tensors) == 0


def test_weights_that_do_not_fit_are_reported_as_such() -> None:
    plan = VerifyPlan("tiny", tiny_layout(), ctx=10, batch=1, engine="hf", weights_bytes=2 * MiB)
    oom = run(plan, max_bytes=MiB).plans[0].out_of_memory
    assert oom is not None
    assert oom.layer is None
    assert "the weights" in oom.describe()


@pytest.mark.parametrize("phase", ["tiny", "tiny: timing"])
def test_ctrl_c_releases_the_memory(phase: str, live_tensors: list[weakref.ref[Any]]) -> None:
    def interrupt(task: str, done: int, total: int) -> None:
        if task == phase and done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(VerifyPlan("tiny", tiny_layout(layers=4), ctx=100, engine="hf"), on_progress=interrupt, timing=True)
    assert live_tensors
    assert alive(live_tensors) == 0


# ---- capacity probe ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["hf", "vllm"])
def test_probe_finds_the_predicted_max_batch(engine: str) -> None:
    plan = VerifyPlan("tiny", tiny_layout(), ctx=1024, batch=1, engine=engine, probe=True)
    per_seq = 1024 * 256  # 262,144 B a sequence (1024 is whole vLLM pages)
    report = run(plan, max_bytes=5 * per_seq + per_seq // 2)
    probe = report.plans[0].probe
    assert probe is not None
    assert probe.predicted_max_batch == probe.measured_max_batch == 5
    assert probe.measured_bytes == probe.predicted_bytes == 5 * per_seq
    assert probe.trials == ((1, True), (2, True), (4, True), (8, False), (6, False), (5, True))
    check = next(c for c in report.checks if c.kind == "max_batch")
    assert check.ok
    assert "probed: 5" in check.detail


def test_probe_leaves_room_for_the_weights() -> None:
    per_seq = 1024 * 256
    plan = VerifyPlan("tiny", tiny_layout(), ctx=1024, engine="hf", weights_bytes=per_seq, probe=True)
    probe = run(plan, max_bytes=5 * per_seq + 10).plans[0].probe
    assert probe is not None
    assert probe.predicted_max_batch == probe.measured_max_batch == 4


def test_probe_under_llamacpp_padding() -> None:
    """llama.cpp pads ctx x batch as a whole (not linear in batch); the probe still agrees."""
    plan = VerifyPlan("tiny", tiny_layout(), ctx=1000, engine="llama.cpp", probe=True)
    report = run(plan, max_bytes=3 * MiB)
    probe = report.plans[0].probe
    assert probe is not None
    assert probe.measured_max_batch == probe.predicted_max_batch > 1
    assert report.ok


# ---- timing and progress -----------------------------------------------------------------------------------


def test_decode_timing_reads_the_whole_cache() -> None:
    calls: list[tuple[str, int, int]] = []
    plan = VerifyPlan("tiny", tiny_layout(), ctx=256, batch=2, engine="hf")
    report = run(plan, timing=True, repeats=2, on_progress=lambda *a: calls.append(a))
    (timing,) = report.timings
    assert timing.layers == 2
    assert timing.tokens == 256
    assert timing.kv_heads == 2
    assert timing.cache_bytes_read == report.plans[0].predicted_bytes
    assert timing.median_seconds is not None
    assert timing.median_seconds > 0
    assert timing.repeats == 2
    assert timing.achieved_bytes_per_second is not None
    assert timing.catalog_bytes_per_second is None
    assert "CPU" in timing.note
    assert calls[:2] == [("tiny", 1, 2), ("tiny", 2, 2)]
    assert ("tiny: timing", 2, 2) in calls


def test_vllm_pages_are_timed_through_views() -> None:
    report = run(VerifyPlan("tiny", tiny_layout(), ctx=100, batch=2, engine="vllm"), timing=True, repeats=1)
    (timing,) = report.timings
    assert timing.layers == 2
    assert timing.tokens == 100
    assert timing.cache_bytes_read == 2 * 100 * 256  # K and V of the 100 tokens, not the rest of the last page


def test_out_of_memory_while_timing_is_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args: Any, **kwargs: Any) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", no_memory)
    report = run(VerifyPlan("tiny", tiny_layout(), ctx=64, engine="hf"), timing=True)
    (timing,) = report.timings
    assert timing.median_seconds is None
    assert "out of memory" in timing.note
    assert report.ok  # timing is a measurement, not a prediction


def test_the_report_is_plain_data() -> None:
    plan = VerifyPlan("tiny", tiny_layout(), ctx=1024, engine="hf", probe=True)
    report = run(plan, timing=True, repeats=1, max_bytes=MiB)
    data = json.loads(json.dumps(asdict(report)))
    assert data["checks"][0]["name"] == "tiny: cache bytes"
    assert data["plans"][0]["probe"]["measured_max_batch"] == 4


# ---- torch and devices -------------------------------------------------------------------------------------


def test_torch_missing_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(TorchMissingError, match=r'pip install "\.\[verify\]"') as err:
        run_verify([VerifyPlan("tiny", tiny_layout(), ctx=10)], "cpu")
    assert err.value.exit_code == ExitCode.USAGE
    with pytest.raises(TorchMissingError):
        verify.self_check("cpu")


def test_importing_verify_does_not_import_torch() -> None:
    code = "import sys; sys.modules['torch'] = None; import kvplan, kvplan.verify; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "ok"
    code = "import sys, kvplan.verify; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_unavailable(device: str) -> None:
    with pytest.raises(DeviceUnavailableError, match=f"^device {device}: ") as err:
        run_verify([VerifyPlan("tiny", tiny_layout(), ctx=10)], device)
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_unavailable() -> None:
    with pytest.raises(DeviceUnavailableError, match="MPS is not available"):
        verify.open_device("mps")


@pytest.mark.parametrize("device", ["tpu", "cpu:0", "cuda:x", ""])
def test_bad_device_names_are_usage_errors(device: str) -> None:
    with pytest.raises(OptionError, match=r"^device:"):
        verify.open_device(device)


def test_max_bytes_must_be_positive() -> None:
    with pytest.raises(OptionError, match=r"^max_bytes:"):
        verify.open_device("cpu", max_bytes=0)


def test_cpu_without_a_cap_caps_itself() -> None:
    info = verify.open_device("cpu")
    assert info.free_bytes is not None
    assert info.cap_bytes == info.free_bytes // 2
    assert "half of the available RAM" in info.cap_note
    assert info.catalog is None
    assert "not a catalog device" in info.catalog_note


def test_catalog_comparison_says_which_line_to_change() -> None:
    entry = load_catalog().lookup("NVIDIA H100 80GB HBM3")
    assert entry is not None
    assert entry.usable_bytes is not None
    same = verify.compare_catalog(entry, entry.usable_bytes)
    assert same.difference_bytes == 0
    assert same.suggestion == ""
    less = verify.compare_catalog(entry, entry.usable_bytes - 64 * MiB)
    assert less.difference_bytes == -64 * MiB
    assert f"torch_total_mib_min: {entry.usable_bytes // MiB - 64}" in less.suggestion
    assert entry.id in less.suggestion


# ---- the self-check ----------------------------------------------------------------------------------------


def test_self_check_plans_scale_the_pick_g_scenario() -> None:
    plans = verify.self_check_plans(3 * 2**30)
    assert [p.name for p in plans] == ["Llama-2-7B G=32", "Llama-2-7B G=8", "Llama-2-7B G=1", "pick-g Llama-2-13B G=1"]
    assert [verify.predict(p).per_gpu_bytes for p in plans[:3]] == [2 * 2**30, 512 * MiB, 64 * MiB]
    assert [p.nominal_bytes for p in plans[:3]] == [2 * 2**30, 512 * MiB, 64 * MiB]
    pick_g = plans[3]
    assert (pick_g.ctx, pick_g.batch, pick_g.kv_heads, pick_g.weights_bytes) == (65536, 2, 1, 0)
    assert "batch 32 -> 2" in pick_g.note
    assert "weights" in pick_g.note
    big = verify.self_check_plans(80 * 2**30)[3]
    assert (big.ctx, big.batch) == (65536, 32)
    assert big.weights_bytes > 0


def test_self_check_passes_on_cpu_within_a_small_cap(live_tensors: list[weakref.ref[Any]]) -> None:
    report = verify.self_check("cpu", max_bytes=80 * MiB, timing=False)
    assert report.ok, [c.detail for c in report.refuted]
    by_name = {p.name: p for p in report.plans}
    assert by_name["Llama-2-7B G=1"].fits  # 64 MiB
    assert not by_name["Llama-2-7B G=8"].fits
    assert not by_name["Llama-2-7B G=8"].predicted_fits
    assert not by_name["Llama-2-7B G=32"].fits
    pick_g = by_name["pick-g Llama-2-13B G=1"]
    assert pick_g.fits
    assert pick_g.batch == 1
    assert pick_g.ctx < 65536
    assert "ctx 65,536 ->" in pick_g.note
    assert pick_g.probe is not None
    assert pick_g.probe.measured_max_batch == pick_g.probe.predicted_max_batch
    kinds = [c.kind for c in report.checks]
    assert kinds.count("cache_bytes") == 4
    assert kinds.count("nominal_bytes") == 3
    assert kinds.count("max_batch") == 1
    assert alive(live_tensors) == 0


def test_engine_options_reach_the_layout() -> None:
    plan = replace(fixture_plan("gqa", "vllm"), opts=EngineOptions(block_size=32))
    assert shapes(plan)[(0, "kv")][0] == (2, 3 * 32, 32, 4, 64)
    assert run(plan).ok


def test_layer_cost_totals_are_what_is_compared() -> None:
    plan = fixture_plan("hybrid_gdn_interval", "vllm")
    est = verify.predict(plan)
    costs: tuple[LayerCost, ...] = est.largest_stage
    assert sum(c.total for c in costs) == est.per_gpu_bytes == sum(x.nbytes for x in verify.cache_tensors(plan))
    assert any(c.spec.kind is LayerKind.STATE for c in costs)


# ----------------------------------------------------------------------------------------------------------
# Issue 10: verify's inputs fail clean


def test_self_check_reads_the_bundled_catalog_not_the_current_folder(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kvplan.verify.plans import LLAMA2_7B, LLAMA2_13B, self_check_plans

    for model in (LLAMA2_7B, LLAMA2_13B):  # a folder of the same name holding another shape
        folder = tmp_path / model
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(
            json.dumps({"model_type": "llama", "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 8})
        )
    monkeypatch.chdir(tmp_path)
    plans = self_check_plans(2**40)
    assert [p.layout.num_layers for p in plans] == [32, 32, 32, 40]  # Llama-2-7B and -13B
    assert all(p.layout.source.startswith("kvplan:configs/models/meta-llama/") for p in plans)


def test_max_bytes_below_every_plan_says_nothing_was_allocated() -> None:
    from typer.testing import CliRunner

    from kvplan.cli import app

    result = CliRunner().invoke(app, ["verify", "--device", "cpu", "--max-bytes", "1KiB", "--no-timing"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "--max-bytes: 1,024 B (1 KiB) is below the smallest self-check plan (pick-g Llama-2-13B G=1: " in lines[0]
    assert "nothing would be allocated" in lines[0]
    assert "every prediction held" not in result.output


def test_max_bytes_above_the_machine_keeps_the_memory_guard() -> None:
    from kvplan.verify.device import open_device

    guarded = open_device("cpu")
    info = open_device("cpu", max_bytes=2**62)
    assert info.cap_bytes is not None and guarded.cap_bytes is not None
    assert info.cap_bytes <= guarded.cap_bytes * 1.1  # MemAvailable moves a little between the two reads
    assert info.cap_bytes < 2**62
    assert info.cap_note.startswith("max_bytes 4,611,686,018,427,387,904 B (4,194,304 TiB) is more than half of")


def test_torch_import_oserror_names_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins

    from kvplan.errors import TorchBrokenError

    real_import = builtins.__import__

    def broken(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "torch":
            raise OSError("libcudart.so.12: cannot open shared object file: No such file or directory")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(TorchBrokenError, match=r"cannot import torch \(libcudart\.so\.12: cannot open") as err:
        verify.self_check("cpu")
    assert err.value.exit_code == ExitCode.USAGE


def test_verify_extra_brings_numpy() -> None:
    """torch without numpy warns "Failed to initialize NumPy" on import; the verify extra installs both."""
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    extra = project["optional-dependencies"]["verify"]
    assert any(dep.startswith("torch") for dep in extra)
    assert any(dep.startswith("numpy") for dep in extra)


def test_decode_timing_is_off_by_default_on_a_cpu() -> None:
    from kvplan.verify.entry import default_timing

    info = open_device("cpu")
    assert default_timing(info) is False
    assert default_timing(replace(info, kind="cuda")) is True
    report = run_verify([VerifyPlan("tiny", tiny_layout(), ctx=64, engine="hf")], "cpu")
    assert report.timings == ()
    assert run_verify([VerifyPlan("tiny", tiny_layout(), ctx=64, engine="hf")], "cpu", timing=True).timings


def test_self_check_on_a_cpu_caps_itself() -> None:
    """At most 2.5 GiB without --max-bytes: the largest self-check plan (Llama-2-7B at G = 32: 2 x 32 layers x 32
    heads x 128 x 4,096 tokens x 2 B = 2 GiB) still fits in 90% of it."""
    from kvplan.verify.entry import SELF_CHECK_CPU_BYTES

    info = open_device("cpu", cpu_cap=SELF_CHECK_CPU_BYTES)
    assert info.cap_bytes == min(SELF_CHECK_CPU_BYTES, info.cap_bytes or 0) <= 5 * 2**29
    assert SELF_CHECK_CPU_BYTES * 9 // 10 >= 2 * 32 * 32 * 128 * 4096 * 2
    assert "the self-check allocates at most" in info.cap_note or info.cap_bytes < SELF_CHECK_CPU_BYTES

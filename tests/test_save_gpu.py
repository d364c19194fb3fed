"""``kvplan verify --save-gpu``: what a CUDA run measured becomes a ``measured`` entry of the user's GPU file,
later plans use it and ``kvplan gpus`` marks it. No GPU here: the measurement is built by hand (a fake CUDA
report), and everything from it on (the writer, the catalog, the budget, the listing) runs for real."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.errors import CatalogFileError, ExitCode, OptionError
from kvplan.gpus import MeasuredGpu, load_catalog, save_measured_gpu, user_catalog_path
from kvplan.verify.measure import measure_gpu, save_gpu
from kvplan.verify.results import CatalogComparison, DeviceInfo, MemoryMeasure, PlanResult, VerifyReport

runner = CliRunner()
H100_TORCH_TOTAL = 81_082 * 2**20  # the bundled entry's usable_bytes (lowest torch total seen)
MEASURED_TOTAL = 85_024_112_640  # a made-up device total, not a whole MiB: 81,085.3 MiB
FREE = MEASURED_TOTAL - 536_870_912 - 4_194_304  # a 516 MiB CUDA context and other use


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def measurement(total: int = MEASURED_TOTAL, free: int = FREE) -> MeasuredGpu:
    return MeasuredGpu(
        total_bytes=total,
        free_bytes=free,
        context_bytes=total - free,
        allocator_bytes=2_097_152,
        device_name="NVIDIA H100 80GB HBM3",
        torch_version="2.13.0+cu128",
        cuda_version="12.8",
        measured_at="2026-12-01T21:00:00+00:00",
        kvplan_version="0.1.0",
    )


def cuda_report(total: int, free: int, reserved: int | None = None, storage: int = 0) -> VerifyReport:
    """A VerifyReport as a CUDA run returns it (device, and one plan whose allocator reserved ``reserved``)."""
    catalog = CatalogComparison("h100-sxm-80g", "NVIDIA H100 80GB SXM5", H100_TORCH_TOTAL, total, 0, "", 3.35)
    device = DeviceInfo(
        "cuda:0", "cuda", "NVIDIA H100 80GB HBM3", "2.13.0+cu128", total, free, None, "", free, catalog, ""
    )
    measured = MemoryMeasure(storage, 0, storage, 1, storage, reserved, None)
    plan = PlanResult(
        "p", "m", "vllm", 16, 1, 8, "float16", "", storage, storage, 0, free, True, True, None, measured, ()
    )
    return VerifyReport(device, (plan,), ())


def test_measurement_from_cuda_reports() -> None:
    m = measure_gpu([cuda_report(MEASURED_TOTAL, FREE, reserved=10 * 2**20, storage=8 * 2**20)])
    assert (m.total_bytes, m.free_bytes, m.context_bytes) == (MEASURED_TOTAL, FREE, MEASURED_TOTAL - FREE)
    assert m.allocator_bytes == 2 * 2**20  # reserved - storage
    assert m.device_name == "NVIDIA H100 80GB HBM3" and isinstance(m.kvplan_version, str)
    # several ranks: the smallest total and the largest overhead, so the entry holds on every device
    two = measure_gpu([cuda_report(MEASURED_TOTAL, FREE), cuda_report(MEASURED_TOTAL - 2**20, FREE - 3 * 2**20)])
    assert two.total_bytes == MEASURED_TOTAL - 2**20
    assert two.context_bytes == MEASURED_TOTAL - FREE + 2 * 2**20
    assert two.free_bytes == two.total_bytes - two.context_bytes


def test_measurement_refuses_a_cpu_run() -> None:
    cpu = cuda_report(MEASURED_TOTAL, FREE)
    cpu = replace(cpu, device=replace(cpu.device, device="cpu", kind="cpu"))
    with pytest.raises(OptionError, match=r"^save_gpu: records a CUDA device's memory; this run was on cpu"):
        measure_gpu([cpu])


def test_saved_entry_replaces_the_catalog_entry_for_later_plans() -> None:
    path, gpu_id, _ = save_gpu([cuda_report(MEASURED_TOTAL, FREE, reserved=3 * 2**20, storage=2**20)])
    assert path == user_catalog_path() and gpu_id == "h100-sxm-80g"
    entry = load_catalog().lookup("h100")
    assert entry is not None and entry.id == "h100-sxm-80g"
    assert (entry.usable_bytes, entry.usable_source, entry.origin) == (MEASURED_TOTAL, "measured", str(path))
    assert entry.measured is not None and entry.measured.context_bytes == MEASURED_TOTAL - FREE
    assert entry.bandwidth_tbps == 3.35 and "NVIDIA H100 80GB HBM3" in entry.aliases  # the catalog's facts kept


def test_later_plans_use_the_measured_total() -> None:
    args = ("capacity", "meta-llama/Llama-2-7b-hf", "--gpu", "h100", "--ctx", "4K", "--json")
    code, out, _ = run(*args)
    assert code == 0
    before = json.loads(out)["kv_memory_bytes"]
    save_measured_gpu(measurement(), load_catalog().get("h100-sxm-80g"))
    code, out, _ = run(*args)
    assert code == 0
    after = json.loads(out)
    # vLLM requests ceil(total x 0.90); weights and reserve stay: only the total moved
    requested = -(-MEASURED_TOTAL * 9 // 10), -(-H100_TORCH_TOTAL * 9 // 10)
    assert after["kv_memory_bytes"] - before == requested[0] - requested[1]
    assert any("measured by kvplan verify on 2026-12-01" in line for line in after["explanation"])


def test_gpus_marks_measured_entries() -> None:
    save_measured_gpu(measurement(), load_catalog().get("h100-sxm-80g"))
    code, out, _ = run("gpus")
    assert code == 0
    assert "measured here 2026-12-01 *" in out
    assert "* h100-sxm-80g: measured by kvplan verify --save-gpu on NVIDIA H100 80GB HBM3" in out
    code, out, _ = run("gpus", "--json")
    rows = {g["id"]: g for g in json.loads(out)["gpus"]}
    assert rows["h100-sxm-80g"]["measured"]["total_bytes"] == MEASURED_TOTAL
    assert rows["h100-sxm-80g"]["measured"]["context_bytes"] == MEASURED_TOTAL - FREE
    assert rows["a100-80g"]["measured"] is None


def test_saving_again_replaces_only_that_entry(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    path.write_text(
        "entries:\n  - id: my-card\n    name: My Card\n    usable_bytes: 1000\n    usable_source: measured\n"
    )
    unknown = replace(measurement(), device_name="NVIDIA Future GPU 99GB")
    save_measured_gpu(unknown, None, path)
    save_measured_gpu(replace(unknown, total_bytes=MEASURED_TOTAL - 2**20, free_bytes=FREE - 2**20), None, path)
    catalog = load_catalog([path])
    ids = [e.id for e in catalog.entries if e.origin == str(path)]
    assert ids == ["my-card", "nvidia-future-gpu-99gb"]
    saved = catalog.lookup("NVIDIA Future GPU 99GB")
    assert saved is not None and saved.usable_bytes == MEASURED_TOTAL - 2**20


def test_a_device_the_catalog_knows_keeps_its_id(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    _, gpu_id = save_measured_gpu(measurement(), None, path)  # torch's name is an alias of h100-sxm-80g
    assert gpu_id == "h100-sxm-80g"


def test_a_broken_gpu_file_is_reported_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    broken = "entries:\n  - id: x\n    name: X\n    usable_byte: 5\n    usable_source: measured\n"
    path.write_text(broken)
    with pytest.raises(CatalogFileError, match="usable_byte"):
        save_measured_gpu(measurement(), None, path)
    assert path.read_text() == broken


def test_a_measured_block_must_agree_with_usable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "gpus.yaml"
    save_measured_gpu(measurement(), None, path)
    path.write_text(path.read_text().replace(f"usable_bytes: {MEASURED_TOTAL}", "usable_bytes: 1000"))
    with pytest.raises(CatalogFileError, match=r"usable_bytes: must equal measured\.total_bytes"):
        load_catalog([path])


def test_save_gpu_needs_cuda_on_the_command_line() -> None:
    pytest.importorskip("torch")
    code, out, err = run("verify", "--device", "cpu", "--model", "meta-llama/Llama-2-7b-hf", "--save-gpu")
    assert code == ExitCode.USAGE and not out
    assert "--save-gpu: records a CUDA device's memory; --device is cpu" in err


def test_measured_at_is_utc_iso() -> None:
    m = measure_gpu([cuda_report(MEASURED_TOTAL, FREE)])
    assert datetime.fromisoformat(m.measured_at).tzinfo == UTC

"""Keep what a CUDA run measured: the device's total memory and the overhead seen beside the plan, as a
``measured`` entry in the user's GPU file (``kvplan verify --save-gpu``), so later plans on that machine use it.

- total: cudaMemGetInfo's total (``torch.cuda.mem_get_info``), the figure vLLM's budget starts from
  (gpus.py explains why the catalog plans with torch's total, not the marketed size);
- context: total - free once verify's process holds its CUDA context and before it allocates anything: the
  context itself (a few hundred MiB) and whatever else holds the device at the time;
- allocator: the caching allocator's reserve beyond the tensors' storage, the largest over the plans.

With several ranks, each rank measured its own device: the entry keeps the smallest total and the largest
overheads, so a plan made from it holds on every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from kvplan.errors import OptionError, Param
from kvplan.verify.common import import_torch
from kvplan.verify.results import VerifyReport

if TYPE_CHECKING:
    from kvplan.gpus import GpuEntry, MeasuredGpu


def _allocator_bytes(report: VerifyReport) -> int | None:
    seen = [
        p.measured.reserved_delta - p.measured.storage_bytes
        for p in report.plans
        if p.measured is not None and p.measured.reserved_delta is not None
    ]
    return max(seen, default=None)


def _kvplan_version() -> str:
    """The installed kvplan's version ("" from a source tree that is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kvplan")
    except PackageNotFoundError:
        return ""


def measure_gpu(reports: Sequence[VerifyReport], *, now: datetime | None = None) -> MeasuredGpu:
    """The measurement one or more CUDA reports (one per rank) make: OptionError for any other device."""
    from kvplan.gpus import MeasuredGpu

    if not reports:
        raise OptionError(Param.SAVE_GPU, "no report to take a measurement from")
    for report in reports:
        dev = report.device
        if dev.kind != "cuda" or dev.total_bytes is None or dev.free_bytes is None:
            raise OptionError(Param.SAVE_GPU, f"records a CUDA device's memory; this run was on {dev.device}")
    names = {r.device.name for r in reports}
    if len(names) > 1:
        raise OptionError(Param.SAVE_GPU, f"the ranks ran on different devices ({', '.join(sorted(names))}): one entry")
    total = min(r.device.total_bytes or 0 for r in reports)
    context = max((r.device.total_bytes or 0) - (r.device.free_bytes or 0) for r in reports)
    allocators = [a for a in (_allocator_bytes(r) for r in reports) if a is not None]
    torch = import_torch()
    first = reports[0].device
    when = (now or datetime.now(UTC)).replace(microsecond=0).isoformat()
    return MeasuredGpu(
        total_bytes=total,
        free_bytes=total - context,
        context_bytes=context,
        allocator_bytes=max(allocators, default=None),
        device_name=first.name,
        torch_version=first.torch_version,
        cuda_version=str(getattr(torch.version, "cuda", None) or ""),
        measured_at=when,
        kvplan_version=_kvplan_version(),
    )


def _catalog_entry(reports: Sequence[VerifyReport]) -> GpuEntry | None:
    from kvplan.gpus import load_catalog

    catalog = load_catalog()
    for report in reports:
        if report.device.catalog is not None:
            return catalog.get(report.device.catalog.gpu_id)
    return catalog.lookup(reports[0].device.name)


def save_gpu(reports: Sequence[VerifyReport], path: Path | None = None) -> tuple[Path, str, MeasuredGpu]:
    """Measure (see :func:`measure_gpu`) and write the entry to the user's GPU file: (path, entry id, measurement).
    The entry takes the catalog entry's id when the device is in the catalog, so ``--gpu <that id>`` plans with
    the measured total from now on."""
    from kvplan.gpus import save_measured_gpu

    measured = measure_gpu(reports)
    written, gpu_id = save_measured_gpu(measured, _catalog_entry(reports), path)
    return written, gpu_id, measured

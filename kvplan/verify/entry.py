"""Entry points: verify a list of plans, or the self-check suite."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kvplan.errors import OptionError, Param
from kvplan.formula import check_positive
from kvplan.units import exact_and_human
from kvplan.verify.arena import _empty_cache
from kvplan.verify.common import ProgressCallback, import_torch
from kvplan.verify.device import _open, open_device
from kvplan.verify.plans import VerifyPlan, predict, self_check_plans
from kvplan.verify.probe import _probe
from kvplan.verify.results import Check, DeviceInfo, VerifyReport
from kvplan.verify.runner import _run_plan


def run_verify(
    plans: Sequence[VerifyPlan],
    device: str = "cpu",
    *,
    max_bytes: int | None = None,
    gpu: str | None = None,
    timing: bool | None = None,
    probe: bool = True,
    repeats: int = 5,
    warmup: int = 1,
    time_budget_s: float = 2.0,
    on_progress: ProgressCallback | None = None,
    device_info: DeviceInfo | None = None,
) -> VerifyReport:
    """Allocate, measure and check every plan on ``device``; probe the plans marked ``probe`` (when ``probe``);
    time a decode step over each allocated cache (when ``timing``; None: on a GPU, not on a CPU, where a decode
    time says nothing about serving and a 4,096-token step costs seconds).

    Memory is released after each plan and on any exception (Ctrl-C included). Raises TorchMissingError,
    DeviceUnavailableError or OptionError before allocating anything; a plan that runs out of memory is a
    result, not an exception.
    """
    check_positive(Param.REPEATS, repeats)
    info = device_info or open_device(device, max_bytes=max_bytes, gpu=gpu)
    if timing is None:
        timing = default_timing(info)
    torch = import_torch()
    dev, _ = _open(torch, info.device)
    for plan in plans:  # usage errors (a dtype the engine lacks ...) before any allocation
        predict(plan)
    bandwidth = info.catalog.bandwidth_tbps if info.catalog is not None else None
    results = []
    checks: list[Check] = []
    try:
        for plan in plans:
            result, plan_checks = _run_plan(
                torch,
                dev,
                plan,
                info.cap_bytes,
                timing=timing,
                repeats=repeats,
                warmup=warmup,
                time_budget_s=time_budget_s,
                bandwidth_tbps=bandwidth,
                on_progress=on_progress,
            )
            checks.extend(plan_checks)
            if probe and plan.probe:
                probe_result, probe_check = _probe(torch, dev, plan, info.cap_bytes, on_progress)
                result = replace(result, probe=probe_result)
                checks.append(probe_check)
            results.append(result)
    finally:
        _empty_cache(torch, dev)
    return VerifyReport(info, tuple(results), tuple(checks))


def _check_cap_fits_a_plan(plans: Sequence[VerifyPlan], max_bytes: int, available: int) -> None:
    """A --max-bytes below every self-check plan would allocate nothing and then report that every prediction
    held; it is a usage error instead."""
    needs = {plan.name: predict(plan).per_gpu_bytes + plan.weights_bytes for plan in plans}
    smallest = min(needs, key=needs.__getitem__)
    if needs[smallest] > available:
        raise OptionError(
            Param.MAX_BYTES,
            f"{exact_and_human(max_bytes)} is below the smallest self-check plan ({smallest}: "
            f"{exact_and_human(needs[smallest])}), so nothing would be allocated and nothing verified; "
            "raise it or drop it",
        )


#: The self-check on a CPU without --max-bytes allocates at most this much: enough for every plan of the suite
#: (the largest is 2 GiB), and it keeps the run to a few seconds and one small machine's spare RAM.
SELF_CHECK_CPU_BYTES = 5 * 2**29  # 2.5 GiB


def default_timing(info: DeviceInfo) -> bool:
    """Decode timing by default on a GPU (CUDA, MPS), where it measures the bandwidth a server would see."""
    return info.kind != "cpu"


def self_check(
    device: str = "cpu",
    *,
    max_bytes: int | None = None,
    gpu: str | None = None,
    timing: bool | None = None,
    probe: bool = True,
    repeats: int = 5,
    time_budget_s: float = 2.0,
    on_progress: ProgressCallback | None = None,
) -> VerifyReport:
    """``kvplan verify`` without a model: :func:`self_check_plans` scaled to the device, then :func:`run_verify`.
    On a CPU without ``max_bytes`` it caps itself at :data:`SELF_CHECK_CPU_BYTES`."""
    info = open_device(device, max_bytes=max_bytes, gpu=gpu, cpu_cap=SELF_CHECK_CPU_BYTES)
    plans = self_check_plans(info.available_bytes)
    if max_bytes is not None:
        _check_cap_fits_a_plan(plans, max_bytes, info.available_bytes)
    return run_verify(
        plans,
        info.device,
        max_bytes=max_bytes,
        timing=timing,
        probe=probe,
        repeats=repeats,
        time_budget_s=time_budget_s,
        on_progress=on_progress,
        device_info=info,
    )

"""Capacity probe: the largest batch that really fits."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kvplan.units import exact_and_human

if TYPE_CHECKING:
    pass
from kvplan.verify.arena import _Arena, _OutOfMemoryError
from kvplan.verify.common import ProgressCallback
from kvplan.verify.device import _memory
from kvplan.verify.plans import VerifyPlan, predict, stage_bytes
from kvplan.verify.results import Check, ProbeResult
from kvplan.verify.tensors import TensorSpec, cache_tensors


def _largest(fits: Callable[[int], bool], limit: int = 1 << 24) -> tuple[int, list[tuple[int, bool]]]:
    """The largest n >= 1 with fits(n) for a monotone ``fits`` (0 when fits(1) is False): double, then bisect."""
    trials: list[tuple[int, bool]] = []

    def trial(n: int) -> bool:
        ok = fits(n)
        trials.append((n, ok))
        return ok

    if not trial(1):
        return 0, trials
    lo, hi = 1, 2
    while hi <= limit and trial(hi):
        lo, hi = hi, hi * 2
    if hi > limit:
        return lo, trials
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if trial(mid):
            lo = mid
        else:
            hi = mid
    return lo, trials


def _probe(
    torch: Any, dev: Any, plan: VerifyPlan, cap: int | None, on_progress: ProgressCallback | None
) -> tuple[ProbeResult, Check]:
    """Allocate the weights, then the whole cache at growing batches (no writes: CUDA commits on allocation,
    and on a CPU the cap is the limit), releasing between trials."""
    arena = _Arena(torch, dev, cap, None)
    try:
        weights_note = ""
        if plan.weights_bytes:
            try:
                arena.allocate(TensorSpec("weights", (plan.weights_bytes,), "uint8"), None, "weights", write=True)
            except _OutOfMemoryError as err:
                weights_note = f"the weights do not fit ({err.oom.describe()})"
        _, free = _memory(torch, dev)
        limits = [x for x in (free, None if cap is None else cap - arena.used) if x is not None]
        memory = min(limits) if limits else 0

        if weights_note:
            predicted_max = 0
        else:
            predicted_max, _ = _largest(lambda b: stage_bytes(plan, predict(plan, b)) <= memory)
        best_bytes = 0

        def really_fits(batch: int) -> bool:
            nonlocal best_bytes
            trial = _Arena(torch, dev, None if cap is None else cap - arena.used, free)
            layers = cache_tensors(plan.with_batch(batch))
            task = f"{plan.name}: probe batch {batch}"
            try:
                for n, layer in enumerate(layers):
                    for spec in layer.tensors:
                        if spec.nbytes:
                            trial.allocate(spec, layer.index, layer.kind.value, write=False)
                    if on_progress is not None:
                        on_progress(task, n + 1, len(layers))
            except _OutOfMemoryError:
                return False
            finally:
                held = trial.used
                trial.release(collect=False)
            best_bytes = max(best_bytes, held)
            return True

        trials: list[tuple[int, bool]] = []
        measured_max = 0
        if not weights_note:
            measured_max, trials = _largest(really_fits)
    finally:
        arena.release()
    predicted_bytes = stage_bytes(plan, predict(plan, predicted_max)) if predicted_max else 0
    measured_bytes = best_bytes if measured_max else 0
    probe = ProbeResult(
        plan.name,
        plan.ctx,
        memory,
        plan.weights_bytes,
        predicted_max,
        predicted_bytes,
        measured_max,
        measured_bytes,
        tuple(trials),
        weights_note,
    )
    tried = ", ".join(f"{b} {'ok' if ok else 'oom'}" for b, ok in trials)
    ok = predicted_max == measured_max
    detail = (
        f"predicted max batch at ctx {plan.ctx:,}: {predicted_max} ({exact_and_human(predicted_bytes)} of "
        f"{exact_and_human(memory)} for the cache); probed: {measured_max} (trials: {tried or 'none'})"
    )
    if not ok:
        detail += f": {measured_max - predicted_max:+d} sequences"
        if measured_max < predicted_max and cap is None:
            detail += " (the allocator's rounding and fragmentation take memory the prediction does not count)"
    if weights_note:
        detail += f"; {weights_note}"
    check = Check(f"{plan.name}: max batch", plan.name, "max_batch", predicted_bytes, measured_bytes, ok, detail)
    return probe, check

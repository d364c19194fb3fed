"""Running one plan: allocate, measure, and check bytes and fit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from kvplan.engines import LayerCost
from kvplan.units import exact_and_human

if TYPE_CHECKING:
    pass
from kvplan.verify.arena import _Arena, _available, _counters, _delta, _OutOfMemoryError
from kvplan.verify.common import ProgressCallback
from kvplan.verify.plans import VerifyPlan, predict, stage_bytes, stage_costs
from kvplan.verify.results import Check, LayerResult, MemoryMeasure, OutOfMemory, PlanResult, TimingResult
from kvplan.verify.tensors import LayerTensors, TensorSpec, cache_tensors
from kvplan.verify.timing import _time_decode


def _by_index(items: Iterable[tuple[int, int]]) -> dict[int, int]:
    out: dict[int, int] = {}
    for index, value in items:
        out[index] = out.get(index, 0) + value
    return out


def _layer_results(
    costs: Sequence[LayerCost], tensors: Sequence[LayerTensors], measured: dict[int, int] | None
) -> tuple[LayerResult, ...]:
    predicted = _by_index((c.spec.index, c.total) for c in costs)
    planned = _by_index((layer.index, layer.nbytes) for layer in tensors)
    kinds = {c.spec.index: c.spec.kind.value for c in costs}
    kinds.update({layer.index: layer.kind.value for layer in tensors})
    names: dict[int, list[str]] = {}
    for layer in tensors:
        names.setdefault(layer.index, []).extend(t.describe() for t in layer.tensors)
    got = planned if measured is None else measured
    order = sorted(set(predicted) | set(got), key=lambda i: (i < 0, i))
    return tuple(
        LayerResult(i, kinds.get(i, ""), predicted.get(i, 0), got.get(i, 0), tuple(names.get(i, ()))) for i in order
    )


def _bytes_check(plan: VerifyPlan, predicted: int, measured: int, how: str, layers: Sequence[LayerResult]) -> Check:
    ok = predicted == measured
    if ok:
        detail = f"predicted {exact_and_human(predicted)} = {how} {exact_and_human(measured)}"
    else:
        diff = measured - predicted
        detail = f"{how} {exact_and_human(measured)} vs predicted {exact_and_human(predicted)}: {diff:+,} B"
        wrong = next((layer for layer in layers if layer.predicted_bytes != layer.measured_bytes), None)
        if wrong is not None:
            where = "padding layers" if wrong.index < 0 else f"layer {wrong.index} ({wrong.kind})"
            detail += (
                f"; first difference at {where}: predicted {wrong.predicted_bytes:,} B, "
                f"measured {wrong.measured_bytes:,} B ({wrong.measured_bytes - wrong.predicted_bytes:+,} B)"
            )
    return Check(f"{plan.name}: cache bytes", plan.name, "cache_bytes", predicted, measured, ok, detail)


def _fit_check(plan: VerifyPlan, need: int, available: int, fits: bool, held: int, oom: OutOfMemory | None) -> Check:
    predicted_fits = need <= available
    says = "fits" if predicted_fits else "does not fit"
    head = f"predicted: {says} ({exact_and_human(need)} needed, {exact_and_human(available)} available)"
    if fits:
        seen = f"allocated and written {exact_and_human(held)}: it fits"
    else:
        assert oom is not None
        seen = oom.describe()
    agree = "as predicted" if predicted_fits == fits else "REFUTED"
    return Check(
        f"{plan.name}: fits", plan.name, "fits", need, held, predicted_fits == fits, f"{head}; {seen}: {agree}"
    )


def _run_plan(
    torch: Any,
    dev: Any,
    plan: VerifyPlan,
    cap: int | None,
    *,
    timing: bool,
    repeats: int,
    warmup: int,
    time_budget_s: float,
    bandwidth_tbps: float | None,
    on_progress: ProgressCallback | None,
) -> tuple[PlanResult, list[Check]]:
    est = predict(plan)
    tensors = cache_tensors(plan)
    predicted = stage_bytes(plan, est)
    planned = sum(layer.nbytes for layer in tensors)
    available, free = _available(torch, dev, cap)
    need = plan.weights_bytes + predicted
    arena = _Arena(torch, dev, cap, free)
    before = _counters(torch, dev)
    oom: OutOfMemory | None = None
    measured: MemoryMeasure | None = None
    timing_result: TimingResult | None = None
    measured_layers: dict[int, int] | None = None
    count = len(tensors)
    try:
        try:
            if plan.weights_bytes:
                arena.allocate(TensorSpec("weights", (plan.weights_bytes,), "uint8"), None, "weights", write=True)
            for n, layer in enumerate(tensors):
                for spec in layer.tensors:
                    if spec.nbytes:
                        arena.allocate(spec, layer.index, layer.kind.value, write=True)
                if on_progress is not None:
                    on_progress(plan.name, n + 1, count)
        except _OutOfMemoryError as err:
            oom = err.oom
        held = arena.used
        if oom is None:
            after = _counters(torch, dev)
            weights = plan.weights_bytes
            cache_bytes = sum(t.nelement() * t.element_size() for i in arena.layers for t in arena.layers[i].values())
            storage = sum(t.untyped_storage().nbytes() for t in arena.tensors)
            measured_layers = {
                i: sum(t.nelement() * t.element_size() for t in named.values()) for i, named in arena.layers.items()
            }
            measured = _measure(cache_bytes, weights, storage, len(arena.tensors), before, after)
            if timing and plan.timing:
                timing_result = _time_decode(
                    torch, dev, plan, tensors, arena, repeats, warmup, time_budget_s, bandwidth_tbps, on_progress
                )
    finally:
        arena.release()
    layers = _layer_results(stage_costs(plan, est), tensors, measured_layers)
    checks = []
    if measured is not None:
        checks.append(_bytes_check(plan, predicted, measured.cache_tensor_bytes, "measured tensor bytes", layers))
    else:
        checks.append(
            _bytes_check(plan, predicted, planned, "tensor bytes from the shapes (not allocated in full)", layers)
        )
    cache_measured = measured.cache_tensor_bytes if measured is not None else planned
    if plan.nominal_bytes is not None:
        ok = plan.nominal_bytes == cache_measured
        checks.append(
            Check(
                f"{plan.name}: textbook size",
                plan.name,
                "nominal_bytes",
                plan.nominal_bytes,
                cache_measured,
                ok,
                f"2 x L x H_kv x d_head x seq x batch x bytes = {exact_and_human(plan.nominal_bytes)}; "
                f"tensors {exact_and_human(cache_measured)}"
                + ("" if ok else f" ({cache_measured - plan.nominal_bytes:+,} B)"),
            )
        )
    checks.append(_fit_check(plan, need, available, oom is None, held, oom))
    result = PlanResult(
        name=plan.name,
        model=plan.model,
        engine=est.engine,
        ctx=plan.ctx,
        batch=plan.batch,
        kv_heads=plan.kv_heads,
        kv_dtype=est.types.label,
        note=plan.note,
        predicted_bytes=predicted,
        planned_bytes=planned,
        weights_bytes=plan.weights_bytes,
        available_bytes=available,
        predicted_fits=need <= available,
        fits=oom is None,
        out_of_memory=oom,
        measured=measured,
        layers=layers,
        timing=timing_result,
    )
    return result, checks


def _measure(
    cache_bytes: int,
    weights: int,
    storage: int,
    count: int,
    before: tuple[int | None, int | None, int | None],
    after: tuple[int | None, int | None, int | None],
) -> MemoryMeasure:
    allocated = _delta(after[0], before[0])
    reserved = _delta(after[1], before[1])
    resident = _delta(after[2], before[2])
    notes = []
    if allocated is not None:
        notes.append(f"allocator: +{allocated:,} B allocated ({allocated - storage:+,} B over the tensors' storage)")
    if reserved is not None:
        notes.append(f"allocator: +{reserved:,} B reserved ({reserved - (allocated or 0):+,} B beyond allocated)")
    if resident is not None:
        notes.append(f"process resident memory: {resident:+,} B ({resident - storage:+,} B beside the storage)")
    return MemoryMeasure(cache_bytes, weights, storage, count, allocated, reserved, resident, tuple(notes))

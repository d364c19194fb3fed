"""The stable JSON of every command's ``--json`` output, written from the report types themselves (stdlib json).

A report dataclass is written as its fields, in their order. Where the JSON differs from that (a field renamed
or left out, a value computed from the report, a shape flattened for the reader), one writer below says so; it is
the only place that names those keys. Nothing here restates a report type's field list.

Every size is an integer number of bytes. Each top-level object carries ``schema`` = ``kvplan.<command>/<n>``;
a change that removes or renames a field bumps ``n``. A field annotated ``float`` (or ``float | None``) is written
as a JSON float even when it holds an int; writers do the same with ``float()`` for what they compute. Imported
only when ``--json`` is asked for: no work at import beyond defining the writers (benchmarks/startup.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import fields, is_dataclass
from enum import Enum
from fractions import Fraction
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from kvplan.engines.base import Capacity, EngineEstimate
    from kvplan.formula import CacheTypes, Product
    from kvplan.gpus import Budget, GpuRow, GpuSelection
    from kvplan.layout import ConfigWarning
    from kvplan.plan import CapacityReport, CatalogRow, SizeReport
    from kvplan.resolve import ModelSource
    from kvplan.solver import (
        BatchAnswer,
        Chart,
        ChartSeries,
        CtxAnswer,
        FitCheck,
        FitReport,
        GChoice,
        GOption,
        GpusAnswer,
        PickGCell,
        PickGReport,
        Way,
    )
    from kvplan.verify import Check, DeviceInfo, PlanResult, VerifyReport
    from kvplan.verify.ranks import RankResult, RanksReport

    R = TypeVar("R")

Json = dict[str, Any]

#: Per report type's name, the writer of those types whose JSON is not simply their fields in order.
_WRITERS: dict[str, Callable[[Any], Json]] = {}
#: Per dataclass, its field names and whether each is annotated float (filled on first use).
_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _writes(writer: Callable[[R], Json]) -> Callable[[R], Json]:
    """Register ``writer`` for the report type its parameter is annotated with (under ``from __future__ import
    annotations`` the annotation is the type's name, so this imports nothing)."""
    _WRITERS[writer.__annotations__[writer.__code__.co_varnames[0]]] = writer
    return writer


def _float(value: Any) -> Any:
    """An int or a Fraction as a float (None and floats as they are)."""
    if isinstance(value, int | Fraction) and not isinstance(value, bool):
        return float(value)
    return value


def _fields(obj: Any, *omit: str, **rename: str) -> Json:
    """A dataclass's fields in order (``float`` fields as floats), less ``omit``, some under another name."""
    cls = type(obj)
    if cls not in _FIELDS:
        _FIELDS[cls] = tuple((f.name, "float" in str(f.type)) for f in fields(obj))
    return {
        rename.get(name, name): _float(getattr(obj, name)) if as_float else getattr(obj, name)
        for name, as_float in _FIELDS[cls]
        if name not in omit
    }


def _after(d: Json, key: str, **extra: Any) -> Json:
    """``d`` with ``extra`` inserted after ``key``."""
    items = list(d.items())
    at = list(d).index(key) + 1
    return dict([*items[:at], *extra.items(), *items[at:]])


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str | int | float) or value is None:
        return value
    if is_dataclass(value) and not isinstance(value, type):
        writer = _WRITERS.get(type(value).__name__, _fields)
        return {k: _plain(v) for k, v in writer(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


#: What JSON's own escaping leaves raw and a terminal would act on: DEL, the C1 controls and the bidirectional
#: overrides (json.dumps already escapes C0 controls). Config text is untrusted; these get \\u escapes.
_CONTROL = re.compile("[\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def dump(report: object) -> str:
    """The JSON text of a report (or of :func:`models` / :func:`gpus`'s document), safe to print: DEL, C1 and
    bidi controls in config text come out as \\u escapes."""
    text = json.dumps(_plain(report), indent=2, ensure_ascii=False)
    return _CONTROL.sub(lambda m: f"\\u{ord(m[0]):04x}", text)


def _kv_dtype(types: CacheTypes) -> str:
    return types.k.name if types.k == types.v else f"{types.k.name}/{types.v.name}"


def _argv(command: Sequence[str] | None) -> list[str] | None:
    return None if command is None else list(command)


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


@_writes
def _warning(w: ConfigWarning) -> Json:
    """One thing the reader did not fully understand: the figure may be wrong (``--strict`` refuses)."""
    return {"kind": w.kind, "key": w.key, "shapes": w.shapes, "message": w.message}


@_writes
def _source(s: ModelSource) -> Json:
    return _fields(s, "raw", "files")


@_writes
def _product(p: Product) -> Json:
    from kvplan.units import product_text

    return {**_fields(p), "text": product_text(p.factors, p.result)}


@_writes
def _gpu(gpu: GpuSelection) -> Json:
    """usable_bytes: per GPU, what the plan starts from; count: GPUs of the tensor-parallel group."""
    return {
        "id": None if gpu.entry is None else gpu.entry.id,
        "name": gpu.label,
        "usable_bytes": gpu.usable_bytes,
        "count": gpu.count,
        "source": gpu.source,
    }


@_writes
def _budget(b: Budget) -> Json:
    """Per GPU: requested = ceil(usable x utilization); kv = requested - weights - the engine's other terms
    (reserve_bytes: their sum); TensorRT-LLM: kv = floor((usable - terms) x utilization). May be negative.
    terms: every term, weights first; engine_version: whose rules produced them."""
    from kvplan.gpus import budget_lines

    return {
        "usable_bytes": b.usable_bytes,
        "utilization": float(b.utilization),
        "requested_bytes": b.requested_bytes,
        "weights_bytes": b.weights_bytes,
        "reserve_bytes": b.reserve_bytes,
        "kv_bytes": b.kv_bytes_per_gpu,
        "fits": b.fits,
        "lines": budget_lines(b),
        "terms": b.rule.terms,
        "engine_version": b.rule.version,
        "fraction_source": b.rule.fraction_note,
    }


def _model(report: SizeReport | FitReport | PickGReport | CapacityReport) -> Json:
    """The keys every planning report starts with (warnings: empty when the reader understood every key)."""
    return {"warnings": report.warnings, "model": report.source.requested, "source": report.source}


# ----------------------------------------------------------------------------------------------------------
# size


@_writes
def _engine(eng: EngineEstimate) -> Json:
    """The whole deployment's figures, and one GPU of the largest stage (the *_per_gpu keys)."""
    from kvplan.engines import get_engine

    return {
        "name": eng.engine,
        "summary": get_engine(eng.engine).summary,
        "tensor_parallel_size": eng.tp,
        "pipeline_parallel_size": eng.pp,
        "gpus": eng.gpus,
        "per_gpu_bytes": eng.per_gpu_bytes,
        "deployment_bytes": eng.deployment_bytes,
        "stage_bytes": eng.stage_bytes,
        # What the engine adds: engine total minus the ideal total (whole deployment).
        "over_ideal_bytes": eng.deployment_bytes - eng.ideal.total_bytes,
        "rules": eng.rules,
        "facts": eng.facts,
        "breakdown_per_gpu": eng.breakdown(),
        "explanation_per_gpu": eng.explanation(),
    }


@_writes
def _size(report: SizeReport) -> Json:
    """Top-level sizes are the engine's (whole deployment); ``ideal`` keeps the architectural minimum."""
    est, layout, eng = report.estimate, report.layout, report.engine
    mtp = None
    if layout.mtp_layers:
        mtp = {
            "layers": len(layout.mtp_layers),
            "bytes_per_token": est.mtp_bytes_per_token,
            "total_bytes": est.mtp_total_bytes,
        }
    return {
        "schema": "kvplan.size/1",
        **_model(report),
        "family": layout.family,
        "layers": layout.num_layers,
        "query_heads": layout.query_heads,
        "kv_heads": layout.kv_heads,
        "head_dim": layout.head_dim,
        "attention_kinds": layout.kinds,
        "ctx": est.ctx,
        "ctx_source": report.ctx_source,
        "batch": est.batch,
        "kv_cache_dtype": _kv_dtype(est.types),
        "kv_cache_dtype_requested": est.types.requested,
        "k_dtype": est.types.k.name,
        "v_dtype": est.types.v.name,
        "engine": eng,
        "ideal": {
            "bytes_per_token": est.bytes_per_token,
            "bytes_per_sequence": est.bytes_per_sequence,
            "total_bytes": est.total_bytes,
        },
        "bytes_per_token": eng.bytes_per_token,
        "bytes_per_sequence": report.engine_sequence_bytes,
        "total_bytes": eng.deployment_bytes,
        "breakdown": est.breakdown,
        "explanation": est.explanation,
        "spectrum": report.spectrum,
        "mtp": mtp,
        "notes": report.notes,
    }


# ----------------------------------------------------------------------------------------------------------
# models and gpus


@_writes
def _catalog_row(row: CatalogRow) -> Json:
    return _fields(row, head_dims="head_dim", kinds="attention_kinds")


def models(rows: Iterable[CatalogRow]) -> Json:
    """``kvplan models``: every bundled model."""
    return {"schema": "kvplan.models/2", "models": list(rows)}


def gpus(rows: Iterable[GpuRow]) -> Json:
    """``kvplan gpus``: every catalog entry (measured: what ``verify --save-gpu`` measured, else null)."""
    return {"schema": "kvplan.gpus/1", "gpus": list(rows)}


# ----------------------------------------------------------------------------------------------------------
# pick-g and fit (bytes are per GPU unless a name says otherwise)


def _option(choice: GChoice, o: GOption) -> Json:
    """One G at one (ctx, batch): max_batch / max_ctx null: unbounded, 0: nothing fits; max_ctx is capped at the
    model's context limit, max_ctx_by_memory is what memory alone allows."""
    return {
        "g": o.g,
        "attention": choice.attention,
        "compression": choice.compression,
        "quality": choice.quality,
        "is_model": choice.is_model,
        "copies_heads": choice.copies_heads,
        "kv_bytes": o.kv_bytes,
        "weights_bytes": o.weights_bytes,
        "total_bytes": o.total_bytes,
        "kv_budget_bytes": o.kv_budget_bytes,
        "fits": o.fits,
        "headroom_bytes": o.headroom_bytes,
        "max_batch": o.max_batch,
        "max_ctx": o.max_ctx,
        "max_ctx_by_memory": o.max_ctx_by_memory,
    }


def _cell(report: PickGReport, cell: PickGCell) -> Json:
    return {
        "ctx": cell.ctx,
        "batch": cell.batch,
        "recommended_g": cell.recommended_g,
        "options": [_option(c, o) for c, o in zip(report.choices, cell.options, strict=True)],
    }


@_writes
def _way(w: Way) -> Json:
    return {
        "g": w.g,
        "reason": w.reason,
        "kv_bytes": w.option.kv_bytes,
        "kv_budget_bytes": w.option.kv_budget_bytes,
        "levers": w.levers,
    }


@_writes
def _chart(chart: Chart) -> Json:
    return _fields(chart, "marks", ctxs="ctx")


@_writes
def _chart_series(series: ChartSeries) -> Json:
    return _fields(series, totals="total_bytes")


@_writes
def _pick_g(report: PickGReport) -> Json:
    """context_limit: where max_ctx is capped (null when the model states none, and for the reference scenario);
    ctx, batch, recommended_g, options: the single (ctx, batch) asked for (null and [] for a sweep: see cells);
    budget: the recommended G's (else the smallest's); each option has its own weights and KV budget;
    launch_command: for the model's own G at the largest ctx x batch (argv; null: none)."""
    single = report.single
    cells = [_cell(report, c) for c in report.cells]
    scenario = report.scenario
    return {
        "schema": "kvplan.pick-g/1",
        **_model(report),
        "scenario": None
        if scenario is None
        else {
            "name": scenario.name,
            "description": scenario.description,
            "location": scenario.location,
            # What the command changed of the scenario (GPU, ctx, batch), in words.
            "changes": report.scenario_changes,
        },
        "gpu": report.gpu,
        "engine": report.engine,
        "tensor_parallel_size": report.tp,
        "kv_cache_dtype": _kv_dtype(report.kv_types),
        "kv_cache_dtype_requested": report.kv_types.requested,
        "weights_dtype": report.weights_dtype,
        "query_heads": report.query_heads,
        "model_kv_heads": report.own_g,
        "ctx_source": report.ctx_source,
        "context_limit": report.context_limit,
        "ctx": None if single is None else single.ctx,
        "batch": None if single is None else single.batch,
        "recommended_g": None if single is None else single.recommended_g,
        "options": [] if single is None else cells[0]["options"],
        "budget": report.focus.budget,
        "ctxs": report.ctxs,
        "batches": report.batches,
        "cells": cells,
        "skipped": [{"g": g, "reason": reason} for g, reason in report.skipped],
        "ways": report.ways,
        "charts": report.charts,
        "notes": report.notes,
        "launch_command": _argv(report.launch_command),
        "launch_notes": report.launch_notes,
    }


@_writes
def _max_ctx(a: CtxAnswer) -> Json:
    """ctx: capped at the model's context limit (null: unbounded, the cache stops growing and no limit is
    stated; 0: not even one token fits); ctx_by_memory: what memory alone allows (larger than ctx when capped)."""
    return {
        "batch": a.batch,
        "ctx": a.ctx,
        "unbounded": a.ctx is None,
        "ctx_by_memory": a.by_memory,
        "capped": a.capped,
        "kv_bytes": a.kv_bytes,
        "kv_budget_bytes": a.kv_budget_bytes,
        "missing_bytes": a.missing_bytes,
    }


@_writes
def _max_batch(a: BatchAnswer) -> Json:
    return {**_fields(a), "missing_bytes": a.missing_bytes}


@_writes
def _min_gpus(a: GpusAnswer) -> Json:
    """tensor_parallel_size: the fewest GPUs that fit; null when no allowed tp does."""
    return _fields(a, tp="tensor_parallel_size")


@_writes
def _fit_check(c: FitCheck) -> Json:
    return {**_fields(c), "fits": c.fits, "headroom_bytes": c.headroom_bytes}


@_writes
def _fit(report: FitReport) -> Json:
    """launch_command: for the largest ctx x batch on the fewest GPUs it fits on (argv; null: none)."""
    return {
        "schema": "kvplan.fit/1",
        **_model(report),
        "family": report.layout.family,
        "query_heads": report.layout.query_heads,
        "kv_heads": report.layout.kv_heads,
        "model_kv_heads": report.own_g,
        "gpu": report.gpu,
        "engine": report.engine,
        "tensor_parallel_size": report.tp,
        "kv_cache_dtype": _kv_dtype(report.kv_types),
        "kv_cache_dtype_requested": report.kv_types.requested,
        "weights_dtype": report.weights.dtype,
        "weights_bytes": report.weights.bytes_total,
        "weights_exact": report.weights.exact,
        "budget": report.budget,
        "ctx_source": report.ctx_source,
        "ctxs": report.ctxs,
        "batches": report.batches,
        "context_limit": report.context_limit,
        "fits": report.fits,
        "checks": report.checks,
        "max_ctx": report.max_ctx,
        "max_batch": report.max_batch,
        "min_gpus": report.min_gpus,
        "notes": report.notes,
        "launch_command": _argv(report.launch_command),
        "launch_notes": report.launch_notes,
    }


# ----------------------------------------------------------------------------------------------------------
# capacity


@_writes
def _capacity(report: CapacityReport) -> Json:
    """max_concurrency: requests of max_model_len that fit at once (vLLM prints it as "%.2fx"); budget: the GPU
    budget the KV memory came from (null with --kv-memory); launch_command: argv (null: the engine has no server)."""
    cap: Capacity = report.capacity
    return {
        "schema": "kvplan.capacity/1",
        **_model(report),
        "engine": cap.engine,
        "kv_cache_dtype": cap.kv_dtype,
        "kv_memory_bytes": cap.kv_memory_bytes,
        "max_model_len": cap.max_model_len,
        "tensor_parallel_size": report.tensor_parallel_size,
        "gpu": report.gpu_title,
        "block_size": cap.block_size,
        "num_blocks": cap.num_blocks,
        "kv_tokens": cap.kv_tokens,
        "max_concurrency": float(cap.max_concurrency),
        "max_concurrent_requests": cap.max_concurrent_requests,
        "facts": cap.facts,
        "explanation": [*report.memory_lines, *cap.lines],
        "budget": report.budget,
        "launch_command": _argv(report.launch_command),
        "launch_notes": report.launch_notes,
    }


# ----------------------------------------------------------------------------------------------------------
# verify


@_writes
def _check(c: Check) -> Json:
    return _after(_fields(c), "measured_bytes", difference_bytes=c.difference_bytes)


@_writes
def _device(dev: DeviceInfo) -> Json:
    cat = dev.catalog
    return {
        **_fields(dev, "kind", "cap_note", "catalog", "catalog_note"),
        "catalog_id": None if cat is None else cat.gpu_id,
        "catalog_usable_bytes": None if cat is None else cat.catalog_usable_bytes,
        "catalog_difference_bytes": None if cat is None else cat.difference_bytes,
        "catalog_note": dev.catalog_note,
    }


@_writes
def _plan(p: PlanResult) -> Json:
    """allocator_overhead_bytes: what the allocator (or the process) grew by beyond the tensors' storage."""
    m, t, pr = p.measured, p.timing, p.probe
    overhead = None
    if m is not None:
        overhead = m.reserved_delta if m.reserved_delta is not None else m.resident_delta
        overhead = None if overhead is None else overhead - m.storage_bytes
    out = _fields(p, "planned_bytes", "available_bytes", "measured", "layers", "timing", "probe")
    out["out_of_memory"] = None if p.out_of_memory is None else p.out_of_memory.describe()
    return {
        **_after(out, "predicted_bytes", measured_bytes=None if m is None else m.cache_tensor_bytes),
        "allocator_overhead_bytes": overhead,
        "decode_seconds": None if t is None else _float(t.median_seconds),
        "achieved_bytes_per_second": None if t is None else _float(t.achieved_bytes_per_second),
        "catalog_bytes_per_second": None if t is None else _float(t.catalog_bytes_per_second),
        "predicted_max_batch": None if pr is None else pr.predicted_max_batch,
        "measured_max_batch": None if pr is None else pr.measured_max_batch,
    }


@_writes
def _verify(report: VerifyReport) -> Json:
    return {
        "schema": "kvplan.verify/1",
        "ok": report.ok,
        "device": report.device,
        "checks": report.checks,
        "plans": report.plans,
    }


@_writes
def _rank(r: RankResult) -> Json:
    """layers: the layer indices of its pipeline stage; holds: what it holds of each kind of layer."""
    return {
        "rank": r.rank,
        "tp_rank": r.tp_rank,
        "pp_rank": r.pp_rank,
        "pid": r.pid,
        "host": r.host,
        "layers": r.layers,
        "holds": r.holds,
        "device": r.report.device,
        "plan": r.plan,
        "checks": r.report.checks,
        "seconds": float(r.seconds),
    }


@_writes
def _ranks(report: RanksReport) -> Json:
    """checks: every rank's ("rank N: ..."), then the deployment's; out_of_memory_ranks: ranks that ran out."""
    return {
        "schema": "kvplan.verify-ranks/1",
        "ok": report.ok,
        "name": report.name,
        "model": report.model,
        "engine": report.engine,
        "ctx": report.ctx,
        "batch": report.batch,
        "tensor_parallel_size": report.tp,
        "pipeline_parallel_size": report.pp,
        "device": report.device,
        "backend": report.backend,
        "launcher": report.launcher,
        "predicted_deployment_bytes": report.predicted_deployment_bytes,
        "measured_deployment_bytes": sum(r.cache_bytes for r in report.ranks),
        "out_of_memory_ranks": [r.rank for r in report.out_of_memory],
        "wall_seconds": float(report.wall_seconds),
        "checks": report.checks,
        "ranks": report.ranks,
    }

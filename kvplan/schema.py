"""The stable JSON schema of every command's ``--json`` output: frozen dataclasses, written with the stdlib json.

Every size is an integer number of bytes. Each top-level object carries ``schema`` = ``kvplan.<command>/<n>``;
a change that removes or renames a field bumps ``n``. Imported only when ``--json`` is asked for.
"""

from __future__ import annotations

import inspect
import json
from fractions import Fraction
from typing import TYPE_CHECKING, Any, ClassVar, dataclass_transform, get_type_hints

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kvplan.formula import CacheEstimate, Explanation, SpectrumPoint
    from kvplan.gpus import Budget, GpuRow, GpuSelection
    from kvplan.layout import ConfigWarning
    from kvplan.plan import CapacityReport, CatalogRow, SizeReport
    from kvplan.readers.context import ContextLimit
    from kvplan.resolve import ModelSource
    from kvplan.solver import FitReport, GChoice, GOption, PickGCell, PickGReport
    from kvplan.verify import Check, DeviceInfo, PlanResult, VerifyReport
    from kvplan.verify.ranks import RanksReport


#: Fields written under another name.
_ALIASES = {"schema_": "schema"}


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Out:
    """Base of every output object: frozen, keyword-only, one attribute per annotated field, in order. Lighter
    than dataclasses (no generated code at import) and than pydantic, so ``--json`` costs little more than the
    plain command (benchmarks/startup.py)."""

    _fields: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._fields = tuple(inspect.get_annotations(cls))

    def __init__(self, **values: Any) -> None:
        if values.keys() != set(self._fields):
            missing = sorted(set(self._fields) - values.keys())
            extra = sorted(values.keys() - set(self._fields))
            raise TypeError(f"{type(self).__name__}: missing {missing}, unexpected {extra}")
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash(tuple(repr(getattr(self, f)) for f in self._fields))


_FLOATS: dict[type, frozenset[str]] = {}


def _float_fields(cls: type) -> frozenset[str]:
    """Fields declared float (or float | None): written as JSON floats even when the value is an int or a
    Fraction, as the contract says."""
    if cls not in _FLOATS:
        _FLOATS[cls] = frozenset(name for name, hint in get_type_hints(cls).items() if "float" in str(hint))
    return _FLOATS[cls]


def _plain(value: Any, as_float: bool = False) -> Any:
    if isinstance(value, Out):
        floats = _float_fields(type(value))
        return {_ALIASES.get(f, f): _plain(getattr(value, f), f in floats) for f in value._fields}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if as_float and isinstance(value, int | Fraction) and not isinstance(value, bool):
        return float(value)
    return value


class WarningOut(Out):
    """One thing the reader did not fully understand: the figure may be wrong (``--strict`` refuses)."""

    kind: str
    key: str
    shapes: str
    message: str


def warnings_out(warnings: Sequence[ConfigWarning]) -> list[WarningOut]:
    return [WarningOut(kind=w.kind.value, key=w.key, shapes=w.shapes, message=w.message) for w in warnings]


class ContextLimitOut(Out):
    """The model's longest context: max_position_embeddings, or its RoPE-scaled limit (scaling says how)."""

    tokens: int
    scaling: str


def context_limit_out(limit: ContextLimit | None) -> ContextLimitOut | None:
    return None if limit is None else ContextLimitOut(tokens=limit.tokens, scaling=limit.scaling)


class SourceOut(Out):
    requested: str
    model_id: str
    origin: str
    location: str
    note: str


class FactorOut(Out):
    value: int
    label: str


class ProductOut(Out):
    label: str
    factors: list[FactorOut]
    result: int
    note: str
    text: str


class ExplanationOut(Out):
    lines: list[ProductOut]
    total: int
    notes: list[str]


class BreakdownOut(Out):
    kind: str
    layers: int
    bytes_per_token: int
    tokens_held: int
    state_bytes_per_sequence: int
    bytes_per_sequence: int
    total_bytes: int


class SpectrumOut(Out):
    name: str
    kv_heads: int
    bytes_per_token: int
    total_bytes: int
    compression: int
    is_model: bool
    is_what_if: bool


class MtpOut(Out):
    layers: int
    bytes_per_token: int
    total_bytes: int


class IdealOut(Out):
    bytes_per_token: int
    bytes_per_sequence: int
    total_bytes: int


class EngineOut(Out):
    name: str
    summary: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    gpus: int
    per_gpu_bytes: int
    deployment_bytes: int
    stage_bytes: list[int]
    #: Engine total minus the ideal total (whole deployment); what the engine adds.
    over_ideal_bytes: int
    rules: list[str]
    facts: dict[str, int]
    breakdown_per_gpu: list[BreakdownOut]
    explanation_per_gpu: ExplanationOut


class SizeOut(Out):
    schema_: str
    #: What the reader did not fully understand (empty when it understood every key).
    warnings: list[WarningOut]
    model: str
    source: SourceOut
    family: str
    layers: int
    query_heads: int
    kv_heads: int | None
    head_dim: int | None
    attention_kinds: list[str]
    ctx: int
    ctx_source: str
    batch: int
    kv_cache_dtype: str
    kv_cache_dtype_requested: str
    k_dtype: str
    v_dtype: str
    engine: EngineOut
    ideal: IdealOut
    bytes_per_token: int
    bytes_per_sequence: int
    total_bytes: int
    breakdown: list[BreakdownOut]
    explanation: ExplanationOut
    spectrum: list[SpectrumOut]
    mtp: MtpOut | None
    notes: list[str]


def source_out(source: ModelSource) -> SourceOut:
    return SourceOut(
        requested=source.requested,
        model_id=source.model_id,
        origin=source.origin,
        location=source.location,
        note=source.note,
    )


def explanation_out(exp: Explanation) -> ExplanationOut:
    from kvplan.units import product_text as render_text

    return ExplanationOut(
        lines=[
            ProductOut(
                label=line.label,
                factors=[FactorOut(value=f.value, label=f.label) for f in line.factors],
                result=line.result,
                note=line.note,
                text=render_text(line.factors, line.result),
            )
            for line in exp.lines
        ],
        total=exp.total,
        notes=list(exp.notes),
    )


def spectrum_out(points: tuple[SpectrumPoint, ...]) -> list[SpectrumOut]:
    return [
        SpectrumOut(
            name=p.name,
            kv_heads=p.kv_heads,
            bytes_per_token=p.bytes_per_token,
            total_bytes=p.total_bytes,
            compression=p.compression,
            is_model=p.is_model,
            is_what_if=p.is_what_if,
        )
        for p in points
    ]


def breakdown_out(est: CacheEstimate) -> list[BreakdownOut]:
    return [
        BreakdownOut(
            kind=b.kind.value,
            layers=b.layers,
            bytes_per_token=b.bytes_per_token,
            tokens_held=b.tokens_held,
            state_bytes_per_sequence=b.state_bytes_per_sequence,
            bytes_per_sequence=b.bytes_per_sequence,
            total_bytes=b.total_bytes,
        )
        for b in est.breakdown
    ]


def engine_out(report: SizeReport) -> EngineOut:
    from kvplan.engines import get_engine

    eng = report.engine
    return EngineOut(
        name=eng.engine,
        summary=get_engine(eng.engine).summary,
        tensor_parallel_size=eng.tp,
        pipeline_parallel_size=eng.pp,
        gpus=eng.gpus,
        per_gpu_bytes=eng.per_gpu_bytes,
        deployment_bytes=eng.deployment_bytes,
        stage_bytes=list(eng.stage_bytes),
        over_ideal_bytes=eng.deployment_bytes - eng.ideal.total_bytes,
        rules=list(eng.rules),
        facts=dict(eng.facts),
        breakdown_per_gpu=[
            BreakdownOut(
                kind=b.kind.value,
                layers=b.layers,
                bytes_per_token=b.bytes_per_token,
                tokens_held=b.tokens_held,
                state_bytes_per_sequence=b.state_bytes_per_sequence,
                bytes_per_sequence=b.bytes_per_sequence,
                total_bytes=b.total_bytes,
            )
            for b in eng.breakdown()
        ],
        explanation_per_gpu=explanation_out(eng.explanation()),
    )


def size_out(report: SizeReport) -> SizeOut:
    """Top-level sizes are the engine's (whole deployment); ``ideal`` keeps the architectural minimum."""
    est, layout, eng = report.estimate, report.layout, report.engine
    mtp = None
    if layout.mtp_layers:
        mtp = MtpOut(
            layers=len(layout.mtp_layers),
            bytes_per_token=est.mtp_bytes_per_token,
            total_bytes=est.mtp_total_bytes,
        )
    return SizeOut(
        schema_="kvplan.size/1",
        warnings=warnings_out(report.warnings),
        model=report.source.requested,
        source=source_out(report.source),
        family=layout.family,
        layers=layout.num_layers,
        query_heads=layout.query_heads,
        kv_heads=layout.kv_heads,
        head_dim=layout.head_dim,
        attention_kinds=[k.value for k in layout.kinds],
        ctx=est.ctx,
        ctx_source=report.ctx_source,
        batch=est.batch,
        kv_cache_dtype=est.types.k.name if est.types.k == est.types.v else f"{est.types.k.name}/{est.types.v.name}",
        kv_cache_dtype_requested=est.types.requested,
        k_dtype=est.types.k.name,
        v_dtype=est.types.v.name,
        engine=engine_out(report),
        ideal=IdealOut(
            bytes_per_token=est.bytes_per_token, bytes_per_sequence=est.bytes_per_sequence, total_bytes=est.total_bytes
        ),
        bytes_per_token=eng.bytes_per_token,
        bytes_per_sequence=report.engine_sequence_bytes,
        total_bytes=eng.deployment_bytes,
        breakdown=breakdown_out(est),
        explanation=explanation_out(est.explanation),
        spectrum=spectrum_out(report.spectrum),
        mtp=mtp,
        notes=list(report.notes),
    )


def dump(model: Out) -> str:
    """The JSON text of a result (``schema_`` is written as ``schema``)."""
    return json.dumps(_plain(model), indent=2, ensure_ascii=False)


class ModelRowOut(Out):
    model_id: str
    family: str
    layers: int
    query_heads: int
    #: The distinct KV-head counts of the attention layers, ascending; [] for MLA and pure SSM models.
    kv_heads: list[int]
    #: The distinct per-token head dims of the layers that grow with context (MLA: the latent), ascending.
    head_dim: list[int]
    attention_kinds: list[str]
    dtype: str
    bytes_per_token: int
    aliases: list[str]


class ModelsOut(Out):
    schema_: str
    models: list[ModelRowOut]


def models_out(rows: list[CatalogRow]) -> ModelsOut:
    return ModelsOut(
        schema_="kvplan.models/2",
        models=[
            ModelRowOut(
                model_id=r.model_id,
                family=r.family,
                layers=r.layers,
                query_heads=r.query_heads,
                kv_heads=list(r.kv_heads),
                head_dim=list(r.head_dims),
                attention_kinds=list(r.kinds),
                dtype=r.dtype,
                bytes_per_token=r.bytes_per_token,
                aliases=list(r.aliases),
            )
            for r in rows
        ],
    )


class MeasuredGpuOut(Out):
    total_bytes: int
    free_bytes: int
    context_bytes: int
    allocator_bytes: int | None
    device_name: str
    torch_version: str
    cuda_version: str
    measured_at: str
    kvplan_version: str


class GpuRowOut(Out):
    id: str
    name: str
    vendor: str
    usable_bytes: int | None
    usable_source: str
    usable_note: str
    marketed: str
    memory_type: str | None
    bandwidth_tbps: float | None
    fp8: bool | None
    bf16: bool | None
    aliases: list[str]
    origin: str
    #: What ``kvplan verify --save-gpu`` measured (null for every other entry).
    measured: MeasuredGpuOut | None = None


class GpusOut(Out):
    schema_: str
    gpus: list[GpuRowOut]


def gpus_out(rows: list[GpuRow]) -> GpusOut:
    return GpusOut(
        schema_="kvplan.gpus/1",
        gpus=[
            GpuRowOut(
                **{
                    **r.__dict__,
                    "aliases": list(r.aliases),
                    "measured": None if r.measured is None else MeasuredGpuOut(**r.measured.__dict__),
                }
            )
            for r in rows
        ],
    )


# ----------------------------------------------------------------------------------------------------------
# pick-g and fit (bytes are per GPU unless a name says otherwise)


class GpuOut(Out):
    id: str | None
    name: str
    #: Bytes per GPU the plan starts from.
    usable_bytes: int
    #: GPUs of the tensor-parallel group.
    count: int
    source: str


class BudgetTermOut(Out):
    """One thing the engine holds per GPU besides the KV cache (weights, activation peak, ...), and why."""

    name: str
    bytes: int
    note: str


class BudgetOut(Out):
    """Per GPU: requested = ceil(usable x utilization); kv = requested - weights - the engine's other terms
    (reserve_bytes: their sum); TensorRT-LLM: kv = floor((usable - terms) x utilization). May be negative."""

    usable_bytes: int
    utilization: float
    requested_bytes: int
    weights_bytes: int
    reserve_bytes: int
    kv_bytes: int
    fits: bool
    lines: list[str]
    #: Every term, weights first; the engine version whose rules produced them; where the fraction came from.
    terms: list[BudgetTermOut]
    engine_version: str
    fraction_source: str


class GOptionOut(Out):
    g: int
    attention: str
    compression: int
    quality: str
    is_model: bool
    copies_heads: bool
    kv_bytes: int
    weights_bytes: int
    total_bytes: int
    kv_budget_bytes: int
    fits: bool
    headroom_bytes: int
    #: null: unbounded; 0: not even one sequence / token fits.
    max_batch: int | None
    #: Capped at the model's context limit; max_ctx_by_memory is what memory alone allows (null: unbounded).
    max_ctx: int | None
    max_ctx_by_memory: int | None


class CellOut(Out):
    ctx: int
    batch: int
    recommended_g: int | None
    options: list[GOptionOut]


class LeverOut(Out):
    kind: str
    value: int | None
    fits: bool
    kv_bytes: int
    kv_budget_bytes: int
    note: str


class WayOut(Out):
    g: int
    reason: str
    kv_bytes: int
    kv_budget_bytes: int
    levers: list[LeverOut]


class SkippedOut(Out):
    g: int
    reason: str


class ScenarioOut(Out):
    name: str
    description: str
    location: str
    #: What the command changed of the scenario (GPU, ctx, batch), in words.
    changes: list[str]


class ChartSeriesOut(Out):
    g: int
    total_bytes: list[int]
    max_ctx: int | None


class ChartOut(Out):
    batch: int
    ctx: list[int]
    limit_bytes: int
    reserve_bytes: int
    series: list[ChartSeriesOut]


class PickGOut(Out):
    schema_: str
    #: What the reader did not fully understand (empty when it understood every key).
    warnings: list[WarningOut]
    model: str
    source: SourceOut
    scenario: ScenarioOut | None
    gpu: GpuOut
    engine: str
    tensor_parallel_size: int
    kv_cache_dtype: str
    kv_cache_dtype_requested: str
    weights_dtype: str
    query_heads: int
    model_kv_heads: int | None
    ctx_source: str
    #: Where max_ctx is capped; null when the model states none, and for the reference scenario (a shape).
    context_limit: ContextLimitOut | None
    #: The single (ctx, batch) asked for; null (and options empty) for a sweep: see cells.
    ctx: int | None
    batch: int | None
    recommended_g: int | None
    options: list[GOptionOut]
    #: The budget of the recommended G (else the smallest); each option has its own weights and KV budget.
    budget: BudgetOut
    ctxs: list[int]
    batches: list[int]
    cells: list[CellOut]
    skipped: list[SkippedOut]
    ways: list[WayOut]
    charts: list[ChartOut]
    notes: list[str]
    #: The engine's launch command for the model's own G at the largest ctx x batch (argv; None: none).
    launch_command: list[str] | None
    launch_notes: list[str]


def gpu_out(gpu: GpuSelection) -> GpuOut:
    return GpuOut(
        id=None if gpu.entry is None else gpu.entry.id,
        name=gpu.label,
        usable_bytes=gpu.usable_bytes,
        count=gpu.count,
        source=gpu.source,
    )


def budget_out(b: Budget) -> BudgetOut:
    from kvplan.gpus import budget_lines

    return BudgetOut(
        usable_bytes=b.usable_bytes,
        utilization=b.utilization,
        requested_bytes=b.requested_bytes,
        weights_bytes=b.weights_bytes,
        reserve_bytes=b.reserve_bytes,
        kv_bytes=b.kv_bytes_per_gpu,
        fits=b.fits,
        lines=budget_lines(b),
        terms=[BudgetTermOut(name=t.name, bytes=t.bytes, note=t.note) for t in b.rule.terms],
        engine_version=b.rule.version,
        fraction_source=b.rule.fraction_note,
    )


def _option_out(choice: GChoice, o: GOption) -> GOptionOut:
    return GOptionOut(
        g=o.g,
        attention=choice.attention,
        compression=choice.compression,
        quality=choice.quality,
        is_model=choice.is_model,
        copies_heads=choice.copies_heads,
        kv_bytes=o.kv_bytes,
        weights_bytes=o.weights_bytes,
        total_bytes=o.total_bytes,
        kv_budget_bytes=o.kv_budget_bytes,
        fits=o.fits,
        headroom_bytes=o.headroom_bytes,
        max_batch=o.max_batch,
        max_ctx=o.max_ctx,
        max_ctx_by_memory=o.max_ctx_by_memory,
    )


def _cell_out(report: PickGReport, cell: PickGCell) -> CellOut:
    return CellOut(
        ctx=cell.ctx,
        batch=cell.batch,
        recommended_g=cell.recommended_g,
        options=[_option_out(c, o) for c, o in zip(report.choices, cell.options, strict=True)],
    )


def pick_g_out(report: PickGReport) -> PickGOut:
    types = report.kv_types
    single = report.single
    cells = [_cell_out(report, c) for c in report.cells]
    scenario = report.scenario
    return PickGOut(
        schema_="kvplan.pick-g/1",
        warnings=warnings_out(report.warnings),
        model=report.source.requested,
        source=source_out(report.source),
        scenario=None
        if scenario is None
        else ScenarioOut(
            name=scenario.name,
            description=scenario.description,
            location=scenario.location,
            changes=list(report.scenario_changes),
        ),
        gpu=gpu_out(report.gpu),
        engine=report.engine,
        tensor_parallel_size=report.tp,
        kv_cache_dtype=types.k.name if types.k == types.v else f"{types.k.name}/{types.v.name}",
        kv_cache_dtype_requested=types.requested,
        weights_dtype=report.weights_dtype,
        query_heads=report.query_heads,
        model_kv_heads=report.own_g,
        ctx_source=report.ctx_source,
        context_limit=context_limit_out(report.context_limit),
        ctx=None if single is None else single.ctx,
        batch=None if single is None else single.batch,
        recommended_g=None if single is None else single.recommended_g,
        options=[] if single is None else cells[0].options,
        budget=budget_out(report.focus.budget),
        ctxs=list(report.ctxs),
        batches=list(report.batches),
        cells=cells,
        skipped=[SkippedOut(g=g, reason=reason) for g, reason in report.skipped],
        ways=[
            WayOut(
                g=w.g,
                reason=w.reason,
                kv_bytes=w.option.kv_bytes,
                kv_budget_bytes=w.option.kv_budget_bytes,
                levers=[
                    LeverOut(
                        kind=lv.kind,
                        value=lv.value,
                        fits=lv.fits,
                        kv_bytes=lv.kv_bytes,
                        kv_budget_bytes=lv.kv_budget_bytes,
                        note=lv.note,
                    )
                    for lv in w.levers
                ],
            )
            for w in report.ways
        ],
        charts=[
            ChartOut(
                batch=ch.batch,
                ctx=list(ch.ctxs),
                limit_bytes=ch.limit_bytes,
                reserve_bytes=ch.reserve_bytes,
                series=[ChartSeriesOut(g=s.g, total_bytes=list(s.totals), max_ctx=s.max_ctx) for s in ch.series],
            )
            for ch in report.charts
        ],
        notes=list(report.notes),
        launch_command=None if report.launch_command is None else list(report.launch_command),
        launch_notes=list(report.launch_notes),
    )


class MaxCtxOut(Out):
    batch: int
    #: Capped at the model's context limit. null: unbounded (the cache stops growing, no limit stated); 0: not
    #: even one token fits.
    ctx: int | None
    unbounded: bool
    #: What memory alone allows (null: unbounded); larger than ctx when capped.
    ctx_by_memory: int | None
    capped: bool
    kv_bytes: int
    kv_budget_bytes: int
    missing_bytes: int


class MaxBatchOut(Out):
    ctx: int
    #: null: unbounded (a sequence costs nothing); 0: not even one sequence fits.
    batch: int | None
    kv_bytes: int
    kv_budget_bytes: int
    missing_bytes: int


class MinGpusOut(Out):
    ctx: int
    batch: int
    #: The fewest tensor-parallel GPUs that fit; null when no allowed tp does.
    tensor_parallel_size: int | None
    tried: list[int]
    kv_bytes: int
    budget: BudgetOut | None
    max_ctx: int | None
    max_ctx_by_memory: int | None
    max_batch: int | None


class FitCheckOut(Out):
    ctx: int
    batch: int
    kv_bytes: int
    kv_budget_bytes: int
    fits: bool
    headroom_bytes: int


class FitOut(Out):
    schema_: str
    #: What the reader did not fully understand (empty when it understood every key).
    warnings: list[WarningOut]
    model: str
    source: SourceOut
    family: str
    query_heads: int
    kv_heads: int | None
    model_kv_heads: int | None
    gpu: GpuOut
    engine: str
    tensor_parallel_size: int
    kv_cache_dtype: str
    kv_cache_dtype_requested: str
    weights_dtype: str
    weights_bytes: int
    weights_exact: bool
    budget: BudgetOut
    ctx_source: str
    ctxs: list[int]
    batches: list[int]
    context_limit: ContextLimitOut | None
    fits: bool
    checks: list[FitCheckOut]
    max_ctx: list[MaxCtxOut]
    max_batch: list[MaxBatchOut]
    min_gpus: list[MinGpusOut]
    notes: list[str]
    #: The engine's launch command for the largest ctx x batch on the fewest GPUs it fits on (argv; None: none).
    launch_command: list[str] | None
    launch_notes: list[str]


def fit_out(report: FitReport) -> FitOut:
    types = report.kv_types
    return FitOut(
        schema_="kvplan.fit/1",
        warnings=warnings_out(report.warnings),
        model=report.source.requested,
        source=source_out(report.source),
        family=report.layout.family,
        query_heads=report.layout.query_heads,
        kv_heads=report.layout.kv_heads,
        model_kv_heads=report.own_g,
        gpu=gpu_out(report.gpu),
        engine=report.engine,
        tensor_parallel_size=report.tp,
        kv_cache_dtype=types.k.name if types.k == types.v else f"{types.k.name}/{types.v.name}",
        kv_cache_dtype_requested=types.requested,
        weights_dtype=report.weights.dtype,
        weights_bytes=report.weights.bytes_total,
        weights_exact=report.weights.exact,
        budget=budget_out(report.budget),
        ctx_source=report.ctx_source,
        ctxs=list(report.ctxs),
        batches=list(report.batches),
        context_limit=context_limit_out(report.context_limit),
        fits=report.fits,
        checks=[
            FitCheckOut(
                ctx=c.ctx,
                batch=c.batch,
                kv_bytes=c.kv_bytes,
                kv_budget_bytes=c.kv_budget_bytes,
                fits=c.fits,
                headroom_bytes=c.headroom_bytes,
            )
            for c in report.checks
        ],
        max_ctx=[
            MaxCtxOut(
                batch=a.batch,
                ctx=a.ctx,
                unbounded=a.ctx is None,
                ctx_by_memory=a.by_memory,
                capped=a.capped,
                kv_bytes=a.kv_bytes,
                kv_budget_bytes=a.kv_budget_bytes,
                missing_bytes=a.missing_bytes,
            )
            for a in report.max_ctx
        ],
        max_batch=[
            MaxBatchOut(
                ctx=a.ctx,
                batch=a.batch,
                kv_bytes=a.kv_bytes,
                kv_budget_bytes=a.kv_budget_bytes,
                missing_bytes=a.missing_bytes,
            )
            for a in report.max_batch
        ],
        min_gpus=[
            MinGpusOut(
                ctx=g.ctx,
                batch=g.batch,
                tensor_parallel_size=g.tp,
                tried=list(g.tried),
                kv_bytes=g.kv_bytes,
                budget=None if g.budget is None else budget_out(g.budget),
                max_ctx=g.max_ctx,
                max_ctx_by_memory=g.max_ctx_by_memory,
                max_batch=g.max_batch,
            )
            for g in report.min_gpus
        ],
        notes=list(report.notes),
        launch_command=None if report.launch_command is None else list(report.launch_command),
        launch_notes=list(report.launch_notes),
    )


class CapacityOut(Out):
    schema_: str
    #: What the reader did not fully understand (empty when it understood every key).
    warnings: list[WarningOut]
    model: str
    source: SourceOut
    engine: str
    kv_cache_dtype: str
    kv_memory_bytes: int
    max_model_len: int
    tensor_parallel_size: int
    gpu: str | None
    block_size: int | None
    num_blocks: int | None
    kv_tokens: int
    #: Requests of max_model_len that fit at once (vLLM prints this as "%.2fx").
    max_concurrency: float
    max_concurrent_requests: int
    facts: dict[str, int]
    explanation: list[str]
    #: The GPU budget the KV memory came from (None with --kv-memory).
    budget: BudgetOut | None
    #: The engine's launch command for this plan (argv; None: the engine has no server).
    launch_command: list[str] | None
    launch_notes: list[str]


def capacity_out(report: CapacityReport) -> CapacityOut:
    cap = report.capacity
    return CapacityOut(
        schema_="kvplan.capacity/1",
        warnings=warnings_out(report.warnings),
        model=report.source.requested,
        source=source_out(report.source),
        engine=cap.engine,
        kv_cache_dtype=cap.kv_dtype,
        kv_memory_bytes=cap.kv_memory_bytes,
        max_model_len=cap.max_model_len,
        tensor_parallel_size=report.tensor_parallel_size,
        gpu=report.gpu_title,
        block_size=cap.block_size,
        num_blocks=cap.num_blocks,
        kv_tokens=cap.kv_tokens,
        max_concurrency=float(cap.max_concurrency),
        max_concurrent_requests=cap.max_concurrent_requests,
        facts=dict(cap.facts),
        explanation=[*report.memory_lines, *cap.lines],
        budget=None if report.budget is None else budget_out(report.budget),
        launch_command=None if report.launch_command is None else list(report.launch_command),
        launch_notes=list(report.launch_notes),
    )


class CheckOut(Out):
    name: str
    plan: str
    kind: str
    predicted_bytes: int
    measured_bytes: int
    difference_bytes: int
    ok: bool
    detail: str


class VerifyDeviceOut(Out):
    device: str
    name: str
    torch_version: str
    total_bytes: int | None
    free_bytes: int | None
    cap_bytes: int | None
    available_bytes: int
    catalog_id: str | None
    catalog_usable_bytes: int | None
    catalog_difference_bytes: int | None
    catalog_note: str


class VerifyPlanOut(Out):
    name: str
    model: str
    engine: str
    ctx: int
    batch: int
    kv_heads: int | None
    kv_dtype: str
    note: str
    predicted_bytes: int
    measured_bytes: int | None
    weights_bytes: int
    predicted_fits: bool
    fits: bool
    out_of_memory: str | None
    allocator_overhead_bytes: int | None
    decode_seconds: float | None
    achieved_bytes_per_second: float | None
    catalog_bytes_per_second: float | None
    predicted_max_batch: int | None
    measured_max_batch: int | None


class VerifyOut(Out):
    schema_: str
    ok: bool
    device: VerifyDeviceOut
    checks: list[CheckOut]
    plans: list[VerifyPlanOut]


def _verify_device_out(dev: DeviceInfo) -> VerifyDeviceOut:
    cat = dev.catalog
    return VerifyDeviceOut(
        device=dev.device,
        name=dev.name,
        torch_version=dev.torch_version,
        total_bytes=dev.total_bytes,
        free_bytes=dev.free_bytes,
        cap_bytes=dev.cap_bytes,
        available_bytes=dev.available_bytes,
        catalog_id=None if cat is None else cat.gpu_id,
        catalog_usable_bytes=None if cat is None else cat.catalog_usable_bytes,
        catalog_difference_bytes=None if cat is None else cat.difference_bytes,
        catalog_note=dev.catalog_note,
    )


def _verify_plan_out(p: PlanResult) -> VerifyPlanOut:
    m, t, pr = p.measured, p.timing, p.probe
    overhead = None
    if m is not None:
        overhead = m.reserved_delta if m.reserved_delta is not None else m.resident_delta
        overhead = None if overhead is None else overhead - m.storage_bytes
    return VerifyPlanOut(
        name=p.name,
        model=p.model,
        engine=p.engine,
        ctx=p.ctx,
        batch=p.batch,
        kv_heads=p.kv_heads,
        kv_dtype=p.kv_dtype,
        note=p.note,
        predicted_bytes=p.predicted_bytes,
        measured_bytes=None if m is None else m.cache_tensor_bytes,
        weights_bytes=p.weights_bytes,
        predicted_fits=p.predicted_fits,
        fits=p.fits,
        out_of_memory=None if p.out_of_memory is None else p.out_of_memory.describe(),
        allocator_overhead_bytes=overhead,
        decode_seconds=None if t is None else t.median_seconds,
        achieved_bytes_per_second=None if t is None else t.achieved_bytes_per_second,
        catalog_bytes_per_second=None if t is None else t.catalog_bytes_per_second,
        predicted_max_batch=None if pr is None else pr.predicted_max_batch,
        measured_max_batch=None if pr is None else pr.measured_max_batch,
    )


def _check_out(c: Check) -> CheckOut:
    return CheckOut(
        name=c.name,
        plan=c.plan,
        kind=c.kind,
        predicted_bytes=c.predicted_bytes,
        measured_bytes=c.measured_bytes,
        difference_bytes=c.difference_bytes,
        ok=c.ok,
        detail=c.detail,
    )


def verify_out(report: VerifyReport) -> VerifyOut:
    return VerifyOut(
        schema_="kvplan.verify/1",
        ok=report.ok,
        device=_verify_device_out(report.device),
        checks=[_check_out(c) for c in report.checks],
        plans=[_verify_plan_out(p) for p in report.plans],
    )


class VerifyRankOut(Out):
    rank: int
    tp_rank: int
    pp_rank: int
    pid: int
    host: str
    #: The layer indices of its pipeline stage.
    layers: list[int]
    #: What it holds of each kind of layer ("KV heads 0-1 of 8", "the whole MLA latent ...").
    holds: list[str]
    device: VerifyDeviceOut
    plan: VerifyPlanOut
    checks: list[CheckOut]
    seconds: float


class VerifyRanksOut(Out):
    schema_: str
    ok: bool
    name: str
    model: str
    engine: str
    ctx: int
    batch: int
    tensor_parallel_size: int
    pipeline_parallel_size: int
    device: str
    backend: str
    launcher: str
    predicted_deployment_bytes: int
    measured_deployment_bytes: int
    #: Ranks that ran out of memory.
    out_of_memory_ranks: list[int]
    wall_seconds: float
    #: Every rank's checks ("rank N: ..."), then the deployment's.
    checks: list[CheckOut]
    ranks: list[VerifyRankOut]


def ranks_out(report: RanksReport) -> VerifyRanksOut:
    return VerifyRanksOut(
        schema_="kvplan.verify-ranks/1",
        ok=report.ok,
        name=report.name,
        model=report.model,
        engine=report.engine,
        ctx=report.ctx,
        batch=report.batch,
        tensor_parallel_size=report.tp,
        pipeline_parallel_size=report.pp,
        device=report.device,
        backend=report.backend,
        launcher=report.launcher,
        predicted_deployment_bytes=report.predicted_deployment_bytes,
        measured_deployment_bytes=sum(r.cache_bytes for r in report.ranks),
        out_of_memory_ranks=[r.rank for r in report.out_of_memory],
        wall_seconds=report.wall_seconds,
        checks=[_check_out(c) for c in report.checks],
        ranks=[
            VerifyRankOut(
                rank=r.rank,
                tp_rank=r.tp_rank,
                pp_rank=r.pp_rank,
                pid=r.pid,
                host=r.host,
                layers=list(r.layers),
                holds=list(r.holds),
                device=_verify_device_out(r.report.device),
                plan=_verify_plan_out(r.plan),
                checks=[_check_out(c) for c in r.report.checks],
                seconds=r.seconds,
            )
            for r in report.ranks
        ],
    )

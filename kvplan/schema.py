"""The stable JSON schema of every command's ``--json`` output (pydantic v2).

Every size is an integer number of bytes. Each top-level object carries ``schema`` = ``kvplan.<command>/<n>``;
a change that removes or renames a field bumps ``n``. Imported only when ``--json`` is asked for.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from kvplan.formula import CacheEstimate, Explanation, SpectrumPoint
from kvplan.gpus import GpuRow
from kvplan.plan import CatalogRow, SizeReport
from kvplan.resolve import ModelSource


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    schema_: str = Field(serialization_alias="schema")
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
    from kvplan.render import product_text as render_text

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
        notes=list(est.notes),
    )


def dump(model: BaseModel) -> str:
    """The JSON text of a result (``schema_`` is written as ``schema``)."""
    return model.model_dump_json(indent=2, by_alias=True)


class ModelRowOut(Out):
    model_id: str
    family: str
    layers: int
    query_heads: int
    kv_heads: str
    head_dim: str
    attention_kinds: list[str]
    dtype: str
    bytes_per_token: int
    aliases: list[str]


class ModelsOut(Out):
    schema_: str = Field(serialization_alias="schema")
    models: list[ModelRowOut]


def models_out(rows: list[CatalogRow]) -> ModelsOut:
    return ModelsOut(
        schema_="kvplan.models/1",
        models=[
            ModelRowOut(
                model_id=r.model_id,
                family=r.family,
                layers=r.layers,
                query_heads=r.query_heads,
                kv_heads=r.kv_heads,
                head_dim=r.head_dim,
                attention_kinds=list(r.kinds),
                dtype=r.dtype,
                bytes_per_token=r.bytes_per_token,
                aliases=list(r.aliases),
            )
            for r in rows
        ],
    )


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


class GpusOut(Out):
    schema_: str = Field(serialization_alias="schema")
    gpus: list[GpuRowOut]


def gpus_out(rows: list[GpuRow]) -> GpusOut:
    return GpusOut(
        schema_="kvplan.gpus/1",
        gpus=[GpuRowOut(**{**r.__dict__, "aliases": list(r.aliases)}) for r in rows],
    )

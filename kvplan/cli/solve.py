"""``kvplan pick-g`` and ``kvplan fit``."""

from __future__ import annotations

from typing import Annotated

import typer

from kvplan.cli.core import app
from kvplan.cli.emit import emit
from kvplan.cli.options import (
    AsyncOpt,
    BatchedOpt,
    BatchOpt,
    BlockOpt,
    ChartOpt,
    CheckOpt,
    CtxOpt,
    EagerOpt,
    EngineOpt,
    EngineVersionOpt,
    GpuFileOpt,
    GpuOpt,
    ImagesOpt,
    JsonOpt,
    KvDtypeOpt,
    KvHeadsOpt,
    ModelArg,
    NumGpusOpt,
    OptionalModelArg,
    ReserveOpt,
    RevisionOpt,
    SpecLayersOpt,
    SpecTokensOpt,
    StrictOpt,
    TokenOpt,
    TpOpt,
    Units,
    UnitsOpt,
    UtilizationOpt,
    WeightsDtypeOpt,
    _counts,
    _reserve,
    engine_options,
    one_model,
)
from kvplan.errors import ExitCode, Param


@app.command("pick-g")
def pick_g(
    model_arg: OptionalModelArg = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="The model, as the argument (an alias kept for scripts)."),
    ] = None,
    gpu: GpuOpt = None,
    ctx: CtxOpt = None,
    batch: BatchOpt = None,
    kv_cache_dtype: KvDtypeOpt = "auto",
    engine: EngineOpt = None,
    tensor_parallel_size: TpOpt = None,
    num_gpus: NumGpusOpt = None,
    gpu_memory_utilization: UtilizationOpt = None,
    reserve: ReserveOpt = None,
    dtype: WeightsDtypeOpt = "auto",
    block_size: BlockOpt = None,
    max_num_batched_tokens: BatchedOpt = None,
    async_scheduling: AsyncOpt = None,
    enforce_eager: EagerOpt = False,
    speculative_layers: SpecLayersOpt = 0,
    speculative_tokens: SpecTokensOpt = None,
    engine_version: EngineVersionOpt = None,
    gpu_file: GpuFileOpt = None,
    chart: ChartOpt = False,
    check: CheckOpt = False,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    images: ImagesOpt = None,
    strict: StrictOpt = False,
) -> None:
    """How many KV heads G fit: every G that divides the query heads, with KV, weights, headroom, max batch, max
    context and quality, the largest G that fits, and the ways to reach the model's own or a quality-safe G.
    Lists of --ctx / --batch give a matrix of the recommended G. Without a model: the reference scenario, a
    Llama-2-13B-shaped model at 64K x 32 on one A100 80GB."""
    from kvplan import solver

    report = solver.pick_g(
        one_model(model_arg, model),
        gpu=gpu,
        ctx=_counts(ctx, Param.CTX),
        batch=_counts(batch, Param.BATCH),
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        num_gpus=num_gpus,
        utilization=gpu_memory_utilization,
        reserve_bytes=_reserve(reserve),
        options=engine_options(
            block_size=block_size,
            max_num_batched_tokens=max_num_batched_tokens,
            async_scheduling=async_scheduling,
            enforce_eager=enforce_eager,
            speculative_layers=speculative_layers,
            speculative_tokens=speculative_tokens,
            engine_version=engine_version,
        ),
        weights_dtype=dtype,
        gpu_files=gpu_file or (),
        chart=chart,
        revision=revision,
        token=token,
        images=images,
        strict=strict,
    )
    emit(report, json=json, units=units, warnings=report.warnings)
    if check and not report.all_fit:
        from kvplan.render import print_note

        print_note("does not fit: no G fits at " + ("this context and batch" if report.single else "some cells"))
        raise typer.Exit(int(ExitCode.REFUTED))


@app.command()
def fit(
    model: ModelArg,
    gpu: GpuOpt = None,
    ctx: CtxOpt = None,
    batch: BatchOpt = None,
    kv_cache_dtype: KvDtypeOpt = "auto",
    kv_heads: KvHeadsOpt = None,
    engine: EngineOpt = None,
    tensor_parallel_size: TpOpt = None,
    num_gpus: NumGpusOpt = None,
    gpu_memory_utilization: UtilizationOpt = None,
    reserve: ReserveOpt = None,
    dtype: WeightsDtypeOpt = "auto",
    block_size: BlockOpt = None,
    max_num_batched_tokens: BatchedOpt = None,
    async_scheduling: AsyncOpt = None,
    enforce_eager: EagerOpt = False,
    speculative_layers: SpecLayersOpt = 0,
    speculative_tokens: SpecTokensOpt = None,
    engine_version: EngineVersionOpt = None,
    gpu_file: GpuFileOpt = None,
    check: CheckOpt = False,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    images: ImagesOpt = None,
    strict: StrictOpt = False,
) -> None:
    """What fits on --gpu: the longest context at --batch (default 1), the most sequences at --ctx, and the
    fewest GPUs (tensor-parallel size) for --ctx x --batch, each with the budget arithmetic."""
    from kvplan import solver

    report = solver.fit(
        model,
        gpu=gpu,
        ctx=_counts(ctx, Param.CTX),
        batch=_counts(batch, Param.BATCH) or 1,
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        num_gpus=num_gpus,
        utilization=gpu_memory_utilization,
        reserve_bytes=_reserve(reserve),
        options=engine_options(
            block_size=block_size,
            max_num_batched_tokens=max_num_batched_tokens,
            async_scheduling=async_scheduling,
            enforce_eager=enforce_eager,
            speculative_layers=speculative_layers,
            speculative_tokens=speculative_tokens,
            engine_version=engine_version,
        ),
        weights_dtype=dtype,
        gpu_files=gpu_file or (),
        revision=revision,
        token=token,
        images=images,
        strict=strict,
    )
    emit(report, json=json, units=units, warnings=report.warnings)
    if check and not report.fits:
        from kvplan.render import print_note

        print_note(f"does not fit on {report.gpu.title} (tp {report.tp})")
        raise typer.Exit(int(ExitCode.REFUTED))

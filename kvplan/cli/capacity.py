"""``kvplan capacity``."""

from __future__ import annotations

from typing import Annotated

import typer

from kvplan.cli.core import app
from kvplan.cli.emit import emit
from kvplan.cli.options import (
    AsyncOpt,
    BatchedOpt,
    BlockOpt,
    CacheKOpt,
    CacheVOpt,
    CtxOpt,
    EagerOpt,
    EngineVersionOpt,
    GpuFileOpt,
    GpuOpt,
    ImagesOpt,
    JsonOpt,
    KvDtypeOpt,
    KvHeadsOpt,
    KvMemoryOpt,
    MaxSeqsOpt,
    ModelArg,
    NumGpusOpt,
    PpOpt,
    PrefixOpt,
    ReserveOpt,
    RevisionOpt,
    SpecLayersOpt,
    SpecTokensOpt,
    StrictOpt,
    SwaFullOpt,
    TokenOpt,
    TpOpt,
    UbatchOpt,
    UnifiedOpt,
    Units,
    UnitsOpt,
    UtilizationOpt,
    WeightsDtypeOpt,
    _count,
    _kv_memory,
    _reserve,
    engine_options,
)
from kvplan.engines.registry import engine_help
from kvplan.errors import Param


@app.command()
def capacity(
    model: ModelArg,
    kv_memory: KvMemoryOpt = None,
    gpu: GpuOpt = None,
    ctx: CtxOpt = None,
    engine: Annotated[
        str | None,
        typer.Option("--engine", help=f"{engine_help(default='vllm')}."),
    ] = None,
    kv_cache_dtype: KvDtypeOpt = "auto",
    kv_heads: KvHeadsOpt = None,
    tensor_parallel_size: TpOpt = None,
    pipeline_parallel_size: PpOpt = 1,
    block_size: BlockOpt = None,
    max_num_batched_tokens: BatchedOpt = None,
    enable_prefix_caching: PrefixOpt = True,
    kv_unified: UnifiedOpt = True,
    ubatch_size: UbatchOpt = 512,
    swa_full: SwaFullOpt = False,
    num_gpus: NumGpusOpt = None,
    gpu_memory_utilization: UtilizationOpt = None,
    reserve: ReserveOpt = None,
    dtype: WeightsDtypeOpt = "auto",
    cache_type_k: CacheKOpt = None,
    cache_type_v: CacheVOpt = None,
    max_num_seqs: MaxSeqsOpt = None,
    async_scheduling: AsyncOpt = None,
    enforce_eager: EagerOpt = False,
    speculative_layers: SpecLayersOpt = 0,
    speculative_tokens: SpecTokensOpt = None,
    engine_version: EngineVersionOpt = None,
    gpu_file: GpuFileOpt = None,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    images: ImagesOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Blocks, tokens and max concurrency an engine allocates from --kv-memory (or from --gpu's budget), computed
    the way that engine computes them; --ctx / --max-model-len is the request length for concurrency."""
    from kvplan import plan

    options = engine_options(
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        max_num_seqs=max_num_seqs,
        ubatch_size=ubatch_size,
        swa_full=swa_full,
        kv_unified=kv_unified,
        enable_prefix_caching=enable_prefix_caching,
        async_scheduling=async_scheduling,
        enforce_eager=enforce_eager,
        speculative_layers=speculative_layers,
        speculative_tokens=speculative_tokens,
        engine_version=engine_version,
    )
    report = plan.capacity(
        model,
        kv_memory=_kv_memory(kv_memory),
        gpu=gpu,
        max_model_len=_count(ctx, Param.CTX),
        engine=engine,
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        options=options,
        num_gpus=num_gpus,
        utilization=gpu_memory_utilization,
        reserve_bytes=_reserve(reserve),
        weights_dtype=dtype,
        k_dtype=cache_type_k,
        v_dtype=cache_type_v,
        gpu_files=gpu_file or (),
        revision=revision,
        token=token,
        images=images,
        strict=strict,
    )
    emit(report, json=json, units=units, warnings=report.warnings)

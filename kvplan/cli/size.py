"""``kvplan size``."""

from __future__ import annotations

from kvplan.cli.core import app
from kvplan.cli.emit import emit
from kvplan.cli.options import (
    AsyncOpt,
    BatchedOpt,
    BatchOpt,
    BlockOpt,
    CacheKOpt,
    CacheVOpt,
    CtxOpt,
    EngineOpt,
    EngineVersionOpt,
    ImagesOpt,
    JsonOpt,
    KvDtypeOpt,
    KvHeadsOpt,
    ModelArg,
    PpOpt,
    RevisionOpt,
    SpecLayersOpt,
    SpecTokensOpt,
    StrictOpt,
    SwaFullOpt,
    TokenOpt,
    TpOpt,
    UbatchOpt,
    Units,
    UnitsOpt,
    _count,
    engine_options,
)
from kvplan.errors import Param


@app.command()
def size(
    model: ModelArg,
    ctx: CtxOpt = None,
    batch: BatchOpt = "1",
    kv_cache_dtype: KvDtypeOpt = "auto",
    kv_heads: KvHeadsOpt = None,
    engine: EngineOpt = None,
    tensor_parallel_size: TpOpt = None,
    pipeline_parallel_size: PpOpt = 1,
    block_size: BlockOpt = None,
    max_num_batched_tokens: BatchedOpt = None,
    ubatch_size: UbatchOpt = 512,
    swa_full: SwaFullOpt = False,
    cache_type_k: CacheKOpt = None,
    cache_type_v: CacheVOpt = None,
    async_scheduling: AsyncOpt = None,
    speculative_layers: SpecLayersOpt = 0,
    speculative_tokens: SpecTokensOpt = None,
    engine_version: EngineVersionOpt = None,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
    images: ImagesOpt = None,
    strict: StrictOpt = False,
) -> None:
    """KV-cache bytes per token, per sequence and in total, with the arithmetic, the G spectrum and, under
    --engine, what that engine allocates on each GPU and why it differs."""
    from kvplan import plan

    options = engine_options(
        tensor_parallel_size=tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        ubatch_size=ubatch_size,
        swa_full=swa_full,
        async_scheduling=async_scheduling,
        speculative_layers=speculative_layers,
        speculative_tokens=speculative_tokens,
        engine_version=engine_version,
    )
    report = plan.size(
        model,
        ctx=_count(ctx, Param.CTX),
        batch=plan.parse_count(batch or "1", Param.BATCH),
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        engine=engine,
        options=options,
        k_dtype=cache_type_k,
        v_dtype=cache_type_v,
        revision=revision,
        token=token,
        images=images,
        strict=strict,
    )
    emit(report, json=json, units=units, warnings=report.warnings)

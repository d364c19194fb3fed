"""The ``kvplan`` command line: parses flags, calls the library, hands results to render. Nothing else.

Errors are mapped to messages and exit codes in one place, :class:`KvplanGroup.invoke`: a
:class:`~kvplan.errors.KvplanError` prints one line on stderr and exits with its code (2 for user errors,
1 for refuted predictions / plans that do not fit); KVPLAN_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import traceback
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kvplan.errors import ExitCode, KvplanError


class KvplanGroup(TyperGroup):
    """Maps kvplan's exceptions to one stderr line and a named exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors its own click; the Context type is private
        try:
            return super().invoke(ctx)
        except KvplanError as err:
            from kvplan.render import debug_enabled, print_error

            if debug_enabled():
                traceback.print_exc()
            print_error(err.message)
            ctx.exit(int(err.exit_code))


app = typer.Typer(
    cls=KvplanGroup,
    name="kvplan",
    help="Exact KV-cache memory planning: bytes per token, per sequence and per GPU, and which G to pick.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class Units(StrEnum):
    iec = "iec"
    si = "si"


# Shared options, declared once so every command spells and documents them the same way.
ModelArg = Annotated[str, typer.Argument(help="Hub id (org/name), bundled name, config.json / params.json or folder.")]
CtxOpt = Annotated[
    str | None,
    typer.Option(
        "--ctx",
        "--max-model-len",
        help="Tokens per sequence: 4096, 4k (= 4,000) or 4K (= 4,096), "
        "as vLLM parses --max-model-len. Default: the model's max_position_embeddings. "
        "pick-g and fit take a comma-separated list (4K,32K,128K).",
    ),
]
BatchOpt = Annotated[
    str | None,
    typer.Option(
        "--batch",
        "--max-num-seqs",
        help="Concurrent sequences (default 1; pick-g without --model: the scenario's). "
        "pick-g and fit take a comma-separated list (1,8,32).",
    ),
]
KvDtypeOpt = Annotated[
    str,
    typer.Option(
        "--kv-cache-dtype",
        help="auto (the model's serving dtype), float16, bfloat16, float32, fp8, "
        "fp8_e4m3, fp8_e5m2, int8, ... (vLLM's spellings).",
    ),
]
KvHeadsOpt = Annotated[
    int | None,
    typer.Option("--kv-heads", help="What-if: the same model with N KV heads (N divides the query heads)."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout (messages go to stderr).")]
UnitsOpt = Annotated[Units, typer.Option("--units", help="iec: GiB = 2^30; si: GB = 10^9.")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub revision (branch, tag or commit).")]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", envvar="HF_TOKEN", show_envvar=True, help="Hugging Face token for gated repos."),
]


EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Whose accounting: ideal (what the architecture must keep), vllm, sglang, llama.cpp, "
        "trtllm or hf (transformers).",
    ),
]
TpOpt = Annotated[
    int | None,
    typer.Option(
        "--tensor-parallel-size",
        "-tp",
        help="GPUs sharing each layer's KV heads (default: 1, or the GPU count of --gpu / --num-gpus).",
    ),
]
PpOpt = Annotated[int, typer.Option("--pipeline-parallel-size", "-pp", help="Pipeline stages splitting the layers.")]
BlockOpt = Annotated[
    int | None, typer.Option("--block-size", help="Tokens per page (vLLM 16, MLA 64; TRT-LLM 32; SGLang page 1).")
]
BatchedOpt = Annotated[
    int | None,
    typer.Option("--max-num-batched-tokens", help="vLLM: tokens per step; sliding layers keep this many extra."),
]
UbatchOpt = Annotated[int, typer.Option("--ubatch-size", "-ub", help="llama.cpp n_ubatch (SWA cache padding).")]
SwaFullOpt = Annotated[bool, typer.Option("--swa-full", help="llama.cpp: full-size cache for sliding layers.")]
CacheKOpt = Annotated[str | None, typer.Option("--cache-type-k", help="K dtype when it differs (llama.cpp style).")]
CacheVOpt = Annotated[str | None, typer.Option("--cache-type-v", help="V dtype when it differs (llama.cpp style).")]
GpuOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu",
        help="A catalog name (a100-80g, h100; `kvplan gpus` lists them), a raw size (80GiB, 24GB), "
        "optionally with a count (8xh100).",
    ),
]
NumGpusOpt = Annotated[
    int | None, typer.Option("--num-gpus", help="GPUs in the tensor-parallel group (the count in --gpu 8xh100).")
]
UtilizationOpt = Annotated[
    float,
    typer.Option("--gpu-memory-utilization", help="Share of each GPU's memory the engine may use (vLLM: 0.90)."),
]
ReserveOpt = Annotated[
    str | None,
    typer.Option(
        "--reserve",
        help="Per-GPU memory kept for activations, NCCL and cuBLAS workspaces: 2GiB (the default), 512MiB, 4GB.",
    ),
]
WeightsDtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Weight storage: auto (the checkpoint's quantization_config, else its 16-bit serving dtype), "
        "float16, bfloat16, float32, fp8, int8, int4, mxfp4, nvfp4.",
    ),
]
ChartOpt = Annotated[bool, typer.Option("--chart", help="Also draw memory against context for each G.")]
CheckOpt = Annotated[bool, typer.Option("--check", help="Exit 1 (with a line on stderr) when the plan does not fit.")]
GpuFileOpt = Annotated[
    list[Path] | None,
    typer.Option("--gpu-file", help="A YAML file of GPU entries that adds to or overrides the catalog (repeatable)."),
]


def _count(text: str | None, option: str) -> int | None:
    from kvplan.plan import parse_count

    return None if text is None else parse_count(text, option)


@app.command()
def size(
    model: ModelArg,
    ctx: CtxOpt = None,
    batch: BatchOpt = "1",
    kv_cache_dtype: KvDtypeOpt = "auto",
    kv_heads: KvHeadsOpt = None,
    engine: EngineOpt = "ideal",
    tensor_parallel_size: TpOpt = None,
    pipeline_parallel_size: PpOpt = 1,
    block_size: BlockOpt = None,
    max_num_batched_tokens: BatchedOpt = None,
    ubatch_size: UbatchOpt = 512,
    swa_full: SwaFullOpt = False,
    cache_type_k: CacheKOpt = None,
    cache_type_v: CacheVOpt = None,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
) -> None:
    """KV-cache bytes per token, per sequence and in total, with the arithmetic, the G spectrum and, under
    --engine, what that engine allocates on each GPU and why it differs."""
    from kvplan import plan
    from kvplan.engines import EngineOptions

    options = EngineOptions(
        tensor_parallel_size=1 if tensor_parallel_size is None else tensor_parallel_size,
        pipeline_parallel_size=pipeline_parallel_size,
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        n_ubatch=ubatch_size,
        swa_full=swa_full,
    )
    report = plan.size(
        model,
        ctx=_count(ctx, "--ctx"),
        batch=plan.parse_count(batch or "1", "--batch"),
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        engine=engine,
        options=options,
        k_dtype=cache_type_k,
        v_dtype=cache_type_v,
        revision=revision,
        token=token,
    )
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.size_out(report)))
        return
    from kvplan.render import render_size

    render_size(report, units.value)


@app.command()
def models(json: JsonOpt = False, units: UnitsOpt = Units.iec) -> None:
    """List the bundled models: shape, attention kinds and bytes per token at the serving dtype."""
    from kvplan import plan

    rows = plan.list_models()
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.models_out(rows)))
        return
    from kvplan.render import render_models

    render_models(rows, units.value)


@app.command()
def gpus(gpu_file: GpuFileOpt = None, json: JsonOpt = False, units: UnitsOpt = Units.iec) -> None:
    """List the GPU catalog: the capacity kvplan plans with, where that figure comes from, and aliases."""
    from kvplan.gpus import gpu_rows, load_catalog

    rows = gpu_rows(load_catalog(gpu_file or ()))
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.gpus_out(rows)))
        return
    from kvplan.render import render_gpus

    render_gpus(rows, units.value)


def _counts(text: str | None, option: str) -> list[int] | None:
    from kvplan.plan import parse_counts

    return None if text is None else parse_counts(text, option)


def _reserve(text: str | None) -> int | None:
    from kvplan.gpus import parse_bytes

    return None if text is None else parse_bytes(text, "--reserve")


@app.command("pick-g")
def pick_g(
    model: Annotated[
        str | None,
        typer.Option("--model", help="The model (as for size). Default: the reference scenario, a Llama-2-13B shape."),
    ] = None,
    gpu: GpuOpt = None,
    ctx: CtxOpt = None,
    batch: BatchOpt = None,
    kv_cache_dtype: KvDtypeOpt = "auto",
    engine: EngineOpt = "ideal",
    tensor_parallel_size: TpOpt = None,
    num_gpus: NumGpusOpt = None,
    gpu_memory_utilization: UtilizationOpt = 0.90,
    reserve: ReserveOpt = None,
    dtype: WeightsDtypeOpt = "auto",
    gpu_file: GpuFileOpt = None,
    chart: ChartOpt = False,
    check: CheckOpt = False,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
) -> None:
    """How many KV heads G fit: every G that divides the query heads, with KV, weights, headroom, max batch, max
    context and quality, the largest G that fits, and the ways to reach the model's own or a quality-safe G.
    Lists of --ctx / --batch give a matrix of the recommended G."""
    from kvplan import solver

    report = solver.pick_g(
        model,
        gpu=gpu,
        ctx=_counts(ctx, "--ctx"),
        batch=_counts(batch, "--batch"),
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        num_gpus=num_gpus,
        utilization=gpu_memory_utilization,
        reserve_bytes=_reserve(reserve),
        weights_dtype=dtype,
        gpu_files=gpu_file or (),
        chart=chart,
        revision=revision,
        token=token,
    )
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.pick_g_out(report)))
    else:
        from kvplan.render import render_pick_g

        render_pick_g(report, units.value)
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
    engine: EngineOpt = "ideal",
    tensor_parallel_size: TpOpt = None,
    num_gpus: NumGpusOpt = None,
    gpu_memory_utilization: UtilizationOpt = 0.90,
    reserve: ReserveOpt = None,
    dtype: WeightsDtypeOpt = "auto",
    gpu_file: GpuFileOpt = None,
    check: CheckOpt = False,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
) -> None:
    """What fits on --gpu: the longest context at --batch (default 1), the most sequences at --ctx, and the
    fewest GPUs (tensor-parallel size) for --ctx x --batch, each with the budget arithmetic."""
    from kvplan import solver

    report = solver.fit(
        model,
        gpu=gpu,
        ctx=_counts(ctx, "--ctx"),
        batch=_counts(batch, "--batch") or 1,
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        num_gpus=num_gpus,
        utilization=gpu_memory_utilization,
        reserve_bytes=_reserve(reserve),
        weights_dtype=dtype,
        gpu_files=gpu_file or (),
        revision=revision,
        token=token,
    )
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.fit_out(report)))
    else:
        from kvplan.render import render_fit

        render_fit(report, units.value)
    if check and not report.fits:
        from kvplan.render import print_note

        print_note(f"does not fit on {report.gpu.title} (tp {report.tp})")
        raise typer.Exit(int(ExitCode.REFUTED))


KvMemoryOpt = Annotated[
    str | None, typer.Option("--kv-memory", help="KV memory per GPU, e.g. 8GiB or 20GB (instead of --gpu).")
]
PrefixOpt = Annotated[
    bool,
    typer.Option(
        "--enable-prefix-caching/--no-enable-prefix-caching",
        help="vLLM: prefix caching (default on) keeps Mamba states in align mode.",
    ),
]
UnifiedOpt = Annotated[
    bool, typer.Option("--kv-unified/--no-kv-unified", help="llama.cpp: one cache stream for all sequences.")
]


@app.command()
def capacity(
    model: ModelArg,
    kv_memory: KvMemoryOpt = None,
    gpu: GpuOpt = None,
    ctx: CtxOpt = None,
    engine: Annotated[
        str, typer.Option("--engine", help="vllm (default), sglang, llama.cpp, trtllm, hf or ideal.")
    ] = "vllm",
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
    gpu_memory_utilization: UtilizationOpt = 0.90,
    reserve: ReserveOpt = None,
    dtype: WeightsDtypeOpt = "auto",
    gpu_file: GpuFileOpt = None,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
) -> None:
    """Blocks, tokens and max concurrency an engine allocates from --kv-memory (or from --gpu's budget), computed
    the way that engine computes them; --ctx / --max-model-len is the request length for concurrency."""
    from kvplan import plan
    from kvplan.engines import EngineOptions

    memory = None
    if kv_memory is not None:
        from kvplan.gpus import parse_bytes

        memory = parse_bytes(kv_memory, "--kv-memory")
    options = EngineOptions(
        tensor_parallel_size=tensor_parallel_size or 1,
        pipeline_parallel_size=pipeline_parallel_size,
        block_size=block_size,
        max_num_batched_tokens=max_num_batched_tokens,
        n_ubatch=ubatch_size,
        swa_full=swa_full,
        kv_unified=kv_unified,
        enable_prefix_caching=enable_prefix_caching,
    )
    report = plan.capacity(
        model,
        kv_memory=memory,
        gpu=gpu,
        max_model_len=_count(ctx, "--ctx"),
        engine=engine,
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        options=options,
        num_gpus=num_gpus,
        utilization=gpu_memory_utilization,
        reserve_bytes=_reserve(reserve),
        weights_dtype=dtype,
        gpu_files=gpu_file or (),
        revision=revision,
        token=token,
    )
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.capacity_out(report)))
        return
    from kvplan.render import render_capacity

    render_capacity(report, units.value)


@app.command()
def verify(
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA, else MPS, else CPU), cuda, cuda:N, mps or cpu.")
    ] = "auto",
    model: Annotated[
        str | None, typer.Option("--model", help="Verify this model's plan (default: the self-check suite).")
    ] = None,
    ctx: CtxOpt = None,
    batch: BatchOpt = None,
    kv_cache_dtype: KvDtypeOpt = "auto",
    kv_heads: Annotated[
        str | None, typer.Option("--kv-heads", help="G, or a list (64,8,1): one plan and one decode timing per G.")
    ] = None,
    engine: EngineOpt = "ideal",
    gpu: Annotated[
        str | None, typer.Option("--gpu", help="The catalog entry to compare the device with (default: its name).")
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-bytes",
            help="Cap what verify allocates (e.g. 3GiB): exercises the probe and the "
            "out-of-memory path on small machines.",
        ),
    ] = None,
    no_timing: Annotated[bool, typer.Option("--no-timing", help="Skip the decode-attention timings.")] = False,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Skip the capacity probe.")] = False,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
) -> None:
    """Allocate the planned cache with torch on a real device and confirm it to the byte: tensor bytes, what
    fits, the largest batch that really fits, and the decode-attention time per G. Exit 1 if a prediction is
    refuted."""
    from kvplan import verify as verifier
    from kvplan.render import verify_progress

    cap = None
    if max_bytes is not None:
        from kvplan.gpus import parse_bytes

        cap = parse_bytes(max_bytes, "--max-bytes")
    chosen = verifier.auto_device() if device == "auto" else device
    with verify_progress() as progress:
        tasks: dict[str, Any] = {}

        def on_progress(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

        if model is None:
            report = verifier.self_check(
                chosen, max_bytes=cap, gpu=gpu, timing=not no_timing, probe=not no_probe, on_progress=on_progress
            )
        else:
            from kvplan.plan import parse_counts

            heads: list[int | None] = list(parse_counts(kv_heads, "--kv-heads")) if kv_heads else [None]
            plans = [
                verifier.plan_for_model(
                    model,
                    ctx=_count(ctx, "--ctx"),
                    batch=_count(batch, "--batch") or 1,
                    kv_cache_dtype=kv_cache_dtype,
                    kv_heads=g,
                    engine=engine,
                    probe=not no_probe,
                )
                for g in heads
            ]
            report = verifier.run_verify(
                plans, chosen, max_bytes=cap, gpu=gpu, timing=not no_timing, probe=not no_probe, on_progress=on_progress
            )
    if json:
        from kvplan import schema
        from kvplan.render import print_json

        print_json(schema.dump(schema.verify_out(report)))
    else:
        from kvplan.render import render_verify

        render_verify(report, units.value)
    if not report.ok:
        from kvplan.render import print_error

        for check in report.refuted:
            print_error(
                f"refuted: {check.name}: predicted {check.predicted_bytes:,} B, measured "
                f"{check.measured_bytes:,} B ({check.difference_bytes:+,} B); {check.detail}"
            )
        raise typer.Exit(int(ExitCode.REFUTED))


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="kvplan")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        raise SystemExit(130) from None


__all__ = ["ExitCode", "app", "main"]

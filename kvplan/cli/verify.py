"""``kvplan verify``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from kvplan.cli.core import app
from kvplan.cli.emit import emit, warn
from kvplan.cli.options import (
    BatchOpt,
    CtxOpt,
    EngineOpt,
    ImagesOpt,
    JsonOpt,
    KvDtypeOpt,
    OptionalModelArg,
    PpOpt,
    StrictOpt,
    Units,
    UnitsOpt,
    _count,
    one_model,
)
from kvplan.errors import ExitCode, OptionError, Param

if TYPE_CHECKING:
    from kvplan.readers.model import ReadModel
    from kvplan.verify import VerifyPlan, VerifyReport
    from kvplan.verify.ranks import RanksReport


def rank_caps(text: str, world: int) -> int | list[int | None]:
    """``--max-bytes`` for ``world`` ranks: one size for every rank (``3GiB``), one per rank
    (``1GiB,1GiB,64MiB,1GiB``), or overrides by rank (``2=64MiB``, after an optional size for the rest)."""
    from kvplan.gpus import parse_bytes

    items = [item.strip() for item in text.split(",") if item.strip()]
    bare = [parse_bytes(item, Param.MAX_BYTES) for item in items if "=" not in item]
    if world == 1 or (len(bare) == 1 and len(items) == 1):
        if len(items) != 1 or not bare:
            raise OptionError(Param.MAX_BYTES, f"one size for one rank; got {text!r}")
        return bare[0]
    if len(bare) not in (0, 1, world):
        raise OptionError(Param.MAX_BYTES, f"{len(bare)} sizes for {world} ranks: give one, one per rank, or R=SIZE")
    caps: list[int | None] = list(bare) if len(bare) == world else [bare[0] if bare else None] * world
    for item in items:
        if "=" not in item:
            continue
        rank_text, size = item.split("=", 1)
        if not rank_text.strip().isdigit() or int(rank_text) >= world:
            raise OptionError(Param.MAX_BYTES, f"{item!r}: R=SIZE needs a rank 0-{world - 1}")
        caps[int(rank_text)] = parse_bytes(size, Param.MAX_BYTES)
    return caps


@app.command()
def verify(
    model_arg: OptionalModelArg = None,
    device: Annotated[
        str, typer.Option("--device", help="auto (CUDA, else MPS, else CPU), cuda, cuda:N, mps or cpu.")
    ] = "auto",
    model: Annotated[
        str | None, typer.Option("--model", help="The model, as the argument (an alias kept for scripts).")
    ] = None,
    ctx: CtxOpt = None,
    batch: BatchOpt = None,
    kv_cache_dtype: KvDtypeOpt = "auto",
    kv_heads: Annotated[
        str | None, typer.Option("--kv-heads", help="G, or a list (64,8,1): one plan and one decode timing per G.")
    ] = None,
    engine: EngineOpt = None,
    tensor_parallel_size: Annotated[
        int,
        typer.Option(
            "--tensor-parallel-size",
            "-tp",
            help="Verify on this many ranks (torch.distributed: NCCL on CUDA, gloo on CPU), each holding its "
            "share of the KV heads; under torchrun, the ranks it started.",
        ),
    ] = 1,
    pipeline_parallel_size: PpOpt = 1,
    gpu: Annotated[
        str | None, typer.Option("--gpu", help="The catalog entry to compare the device with (default: its name).")
    ] = None,
    max_bytes: Annotated[
        str | None,
        typer.Option(
            "--max-bytes",
            help="Cap what verify allocates (e.g. 3GiB): exercises the probe and the "
            "out-of-memory path on small machines. With ranks: one size for each, one per rank "
            "(1GiB,1GiB,64MiB,1GiB) or R=SIZE for one rank.",
        ),
    ] = None,
    timing: Annotated[
        bool | None,
        typer.Option(
            "--timing/--no-timing",
            help="Time one decode-attention step per G. Default: on a GPU (CUDA, MPS), off on a CPU.",
            show_default=False,
        ),
    ] = None,
    no_probe: Annotated[bool, typer.Option("--no-probe", help="Skip the capacity probe.")] = False,
    save_gpu: Annotated[
        bool,
        typer.Option(
            "--save-gpu",
            help="CUDA: write the measured total memory and overhead (CUDA context, allocator) to your GPU file "
            "as a measured entry; later plans with that --gpu use it.",
        ),
    ] = False,
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    images: ImagesOpt = None,
    strict: StrictOpt = False,
) -> None:
    """Allocate the planned cache with torch on a real device and confirm it to the byte: tensor bytes, what
    fits, the largest batch that really fits, and the decode-attention time per G. Exit 1 if a prediction is
    refuted. Without a model: the self-check suite (Llama-2-7B's shape at G = 32, 8, 1 and the reference pick-g
    scenario scaled to the device)."""
    from kvplan import verify as verifier
    from kvplan.render import verify_progress

    model = one_model(model_arg, model)
    read = None
    if model is not None:
        from kvplan.plan import load

        read = load(model, images=images, strict=strict)
        warn(read.layout.warnings)
    world = tensor_parallel_size * pipeline_parallel_size
    if world > 1 or tensor_parallel_size < 1 or pipeline_parallel_size < 1:
        _verify_ranks(
            device,
            read,
            ctx,
            batch,
            kv_cache_dtype,
            kv_heads,
            engine,
            (tensor_parallel_size, pipeline_parallel_size),
            gpu,
            max_bytes,
            timing=timing,
            probe=not no_probe,
            save=save_gpu,
            json=json,
            units=units,
        )
        return
    cap = None
    if max_bytes is not None:
        from kvplan.gpus import parse_bytes

        cap = parse_bytes(max_bytes, Param.MAX_BYTES)
    chosen = verifier.auto_device() if device == "auto" else device
    if save_gpu:
        _check_save(chosen)
    with verify_progress() as progress:
        tasks: dict[str, Any] = {}

        def on_progress(task: str, done: int, total: int) -> None:
            if task not in tasks:
                tasks[task] = progress.add_task(task, total=total)
            progress.update(tasks[task], completed=done, total=total)

        if model is None:
            report = verifier.self_check(
                chosen, max_bytes=cap, gpu=gpu, timing=timing, probe=not no_probe, on_progress=on_progress
            )
        else:
            from kvplan.plan import parse_counts

            heads: list[int | None] = list(parse_counts(kv_heads, Param.KV_HEADS)) if kv_heads else [None]
            plans = [
                verifier.plan_for_model(
                    read or model,
                    ctx=_count(ctx, Param.CTX),
                    batch=_count(batch, Param.BATCH) or 1,
                    kv_cache_dtype=kv_cache_dtype,
                    kv_heads=g,
                    engine=engine,
                    probe=not no_probe,
                )
                for g in heads
            ]
            report = verifier.run_verify(
                plans, chosen, max_bytes=cap, gpu=gpu, timing=timing, probe=not no_probe, on_progress=on_progress
            )
    emit(report, json=json, units=units)
    if save_gpu:
        _save([report])
    if not report.ok:
        from kvplan.render import print_error

        for check in report.refuted:
            print_error(
                f"refuted: {check.name}: predicted {check.predicted_bytes:,} B, measured "
                f"{check.measured_bytes:,} B ({check.difference_bytes:+,} B); {check.detail}"
            )
        raise typer.Exit(int(ExitCode.REFUTED))


def _rank_plan(
    model: ReadModel | None,
    ctx: str | None,
    batch: str | None,
    kv_dtype: str,
    kv_heads: str | None,
    engine: str | None,
    sizes: tuple[int, int],
) -> VerifyPlan:
    from kvplan.engines import EngineOptions
    from kvplan.verify import plan_for_model

    if model is None:
        raise OptionError(
            Param.TENSOR_PARALLEL_SIZE, "verifying on ranks needs --model (the self-check runs on one device)"
        )
    heads = _count(kv_heads, Param.KV_HEADS)
    opts = EngineOptions(tensor_parallel_size=sizes[0], pipeline_parallel_size=sizes[1])
    return plan_for_model(
        model,
        ctx=_count(ctx, Param.CTX),
        batch=_count(batch, Param.BATCH) or 1,
        kv_cache_dtype=kv_dtype,
        kv_heads=heads,
        engine=engine,
        opts=opts,
    )


def _verify_ranks(
    device: str,
    model: ReadModel | None,
    ctx: str | None,
    batch: str | None,
    kv_dtype: str,
    kv_heads: str | None,
    engine: str | None,
    sizes: tuple[int, int],
    gpu: str | None,
    max_bytes: str | None,
    *,
    timing: bool | None,
    probe: bool,
    save: bool,
    json: bool,
    units: Units,
) -> None:
    """``verify --tensor-parallel-size N [--pipeline-parallel-size M]``: every rank verifies its share."""
    from kvplan import verify as verifier
    from kvplan.render import verify_progress
    from kvplan.verify.launch import torchrun_env
    from kvplan.verify.ranks import run_ranks

    plan = _rank_plan(model, ctx, batch, kv_dtype, kv_heads, engine, sizes)
    caps = None if max_bytes is None else rank_caps(max_bytes, sizes[0] * sizes[1])
    chosen = verifier.auto_device() if device == "auto" else device
    if timing is None:  # as for one rank: decode timing on a GPU, not on a CPU
        timing = not chosen.startswith("cpu")
    if save:
        _check_save(chosen)
    given = torchrun_env("gloo")
    if given is not None and given.rank != 0:  # under torchrun only rank 0 shows anything
        report = run_ranks(plan, chosen, max_bytes=caps, gpu=gpu, timing=timing, probe=probe)
    else:
        with verify_progress() as progress:
            tasks: dict[str, Any] = {}

            def on_progress(task: str, done: int, total: int) -> None:
                if task not in tasks:
                    tasks[task] = progress.add_task(task, total=total)
                progress.update(tasks[task], completed=done, total=total)

            report = run_ranks(
                plan, chosen, max_bytes=caps, gpu=gpu, timing=timing, probe=probe, on_progress=on_progress
            )
    if report.rank == 0:
        _print_ranks(report, json=json, units=units)
        if save:
            _save([r.report for r in report.ranks])
    if not report.ok:
        raise typer.Exit(int(ExitCode.REFUTED))


def _print_ranks(report: RanksReport, *, json: bool, units: Units) -> None:
    from kvplan.render import print_error

    emit(report, json=json, units=units)
    for check in report.refuted:
        print_error(
            f"refuted: {check.name}: predicted {check.predicted_bytes:,} B, measured "
            f"{check.measured_bytes:,} B ({check.difference_bytes:+,} B); {check.detail}"
        )


def _check_save(device: str) -> None:
    from kvplan.verify import parse_device

    if parse_device(device)[0] != "cuda":
        raise OptionError(Param.SAVE_GPU, f"records a CUDA device's memory; --device is {device}: use --device cuda")


def _save(reports: list[VerifyReport]) -> None:
    from kvplan.render import print_info
    from kvplan.units import exact_and_human
    from kvplan.verify.measure import save_gpu

    path, gpu_id, measured = save_gpu(reports)
    print_info(
        f"saved the measured entry {gpu_id!r} to {path}: total {exact_and_human(measured.total_bytes)}, CUDA "
        f"context and other use {exact_and_human(measured.context_bytes)}; later plans with --gpu {gpu_id} use it"
    )

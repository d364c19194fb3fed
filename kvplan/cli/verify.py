"""``kvplan verify``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kvplan.cli.app import app
from kvplan.cli.options import BatchOpt, CtxOpt, EngineOpt, JsonOpt, KvDtypeOpt, Units, UnitsOpt, _count
from kvplan.errors import ExitCode


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

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
        "as vLLM parses --max-model-len. Default: the model's max_position_embeddings.",
    ),
]
BatchOpt = Annotated[str, typer.Option("--batch", "--max-num-seqs", help="Concurrent sequences (default 1).")]
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
    json: JsonOpt = False,
    units: UnitsOpt = Units.iec,
    revision: RevisionOpt = None,
    token: TokenOpt = None,
) -> None:
    """KV-cache bytes per token, per sequence and in total, with the arithmetic and the G spectrum."""
    from kvplan import plan

    report = plan.size(
        model,
        ctx=_count(ctx, "--ctx"),
        batch=plan.parse_count(batch, "--batch"),
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
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


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="kvplan")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        raise SystemExit(130) from None


__all__ = ["ExitCode", "app", "main"]

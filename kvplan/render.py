"""Human output: rich tables and the arithmetic, in IEC (GiB = 2^30) or SI (GB = 10^9) units.

The only module that prints. Data goes to stdout, messages to stderr. Byte counts are always shown exact
(``1,342,177,280 B``) beside their converted, labelled form; conversion happens only here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvplan.formula import Explanation
from kvplan.plan import CatalogRow, SizeReport
from kvplan.units import exact_and_human, human_bytes

if TYPE_CHECKING:
    from kvplan.gpus import GpuRow


class FactorLike(Protocol):
    @property
    def value(self) -> int: ...

    @property
    def label(self) -> str: ...


def stdout_console() -> Console:
    """Console for data. When stdout is not a terminal (a pipe, a file, a test) tables are not squeezed to 80
    columns: they get the width they need up to 200 (COLUMNS still wins)."""
    console = Console(soft_wrap=True, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(soft_wrap=True, highlight=False, width=200)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def product_text(factors: Iterable[FactorLike], result: int, units: str = "iec") -> str:
    """``2 x 80 layers x 8 KV heads x 128 head_dim x 4,096 tokens x 1 seq x 2 B = 1,342,177,280 B (1.25 GiB)``."""
    parts = [f"{f.value:,} {f.label}".rstrip() for f in factors]
    return f"{' x '.join(parts)} = {exact_and_human(result, units)}"


def print_explanation(console: Console, exp: Explanation, units: str) -> None:
    for line in exp.lines:
        console.print(Text(f"  {line.label}: ", style="bold"), Text(product_text(line.factors, line.result, units)))
        if line.note:
            console.print(Text(f"      {line.note}", style="dim"))
    if len(exp.lines) > 1:
        console.print(Text("  sum: ", style="bold"), Text(exact_and_human(exp.total, units)))


def render_size(report: SizeReport, units: str = "iec", console: Console | None = None) -> None:
    console = console or stdout_console()
    est, layout, source = report.estimate, report.layout, report.source
    console.print(Text(source.requested, style="bold cyan"), Text(f"  ({source.describe()})", style="dim"))
    console.print(shape_line(layout.family, report))
    console.print(f"ctx {est.ctx:,} tokens ({report.ctx_source}) · batch {est.batch:,} · KV dtype {est.types.label}")
    console.print()
    eng = report.engine
    with_engine = eng.engine != "ideal" or eng.gpus > 1
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("")
    table.add_column("ideal bytes" if with_engine else "bytes", justify="right")
    table.add_column("IEC" if units == "iec" else "SI", justify="right")
    if with_engine:
        table.add_column(f"{eng.engine} bytes", justify="right")
        table.add_column("IEC" if units == "iec" else "SI", justify="right")
    rows = (
        ("per token", est.bytes_per_token, eng.bytes_per_token),
        ("per sequence", est.bytes_per_sequence, report.engine_sequence_bytes),
        (f"total (x {est.batch:,})", est.total_bytes, eng.deployment_bytes),
    )
    for name, ideal, engine_value in rows:
        cells = [name, f"{ideal:,}", human_bytes(ideal, units)]
        if with_engine:
            cells += [f"{engine_value:,}", human_bytes(engine_value, units)]
        table.add_row(*cells)
    console.print(table)
    console.print()
    console.print(Text("Arithmetic", style="bold"))
    print_explanation(console, est.explanation, units)
    if len(est.breakdown) > 1:
        console.print()
        render_breakdown(console, report, units)
    if with_engine:
        console.print()
        render_engine(console, report, units)
    if report.spectrum:
        console.print()
        render_spectrum(console, report, units)
    for note in est.notes:
        console.print(Text(f"note: {note}", style="yellow"))


def render_engine(console: Console, report: SizeReport, units: str) -> None:
    from kvplan.engines import get_engine

    eng = report.engine
    console.print(
        Text(f"Engine: {eng.engine}", style="bold"), Text(f"  ({get_engine(eng.engine).summary})", style="dim")
    )
    where = f"tp {eng.tp} x pp {eng.pp} = {eng.gpus} GPUs" if eng.gpus > 1 else "1 GPU"
    console.print(f"  per GPU (largest stage): {exact_and_human(eng.per_gpu_bytes, units)}")
    console.print(f"  deployment ({where}): {exact_and_human(eng.deployment_bytes, units)}")
    diff = eng.deployment_bytes - eng.ideal.total_bytes
    if diff:
        pct = 100 * diff / eng.ideal.total_bytes if eng.ideal.total_bytes else 0.0
        sign = "+" if diff > 0 else "-"
        console.print(f"  vs ideal: {sign}{exact_and_human(abs(diff), units)} ({sign}{abs(pct):.2f}%), because:")
    elif eng.rules:
        console.print("  same as ideal; rules applied:")
    for rule in eng.rules:
        console.print(Text(f"    - {rule}"))
    console.print(Text("  per GPU:", style="bold"))
    for line in eng.explanation().lines:
        text = f"    {line.label}: {product_text(line.factors, line.result, units)}"
        console.print(Text(text + (f"   [{line.note}]" if line.note else "")))


def shape_line(family: str, report: SizeReport) -> str:
    layout = report.layout
    kinds = ", ".join(k.value.replace("_", " ") for k in layout.kinds)
    g = layout.kv_heads
    heads = f"{layout.query_heads} query heads"
    if g is not None and layout.attention_layers:
        heads += f" · {g} KV heads"
        if report.own_kv_heads is not None and g != report.own_kv_heads:
            heads += f" (what-if; the model has {report.own_kv_heads})"
    dim = f" · head_dim {layout.head_dim}" if layout.head_dim else ""
    return f"{family} · {layout.num_layers} layers · {heads}{dim} · {kinds}"


def render_breakdown(console: Console, report: SizeReport, units: str) -> None:
    table = Table(title="By layer kind", title_justify="left", header_style="bold", box=None, pad_edge=False)
    for col in ("kind", "layers", "B/token", "tokens held", "state B/seq", "per sequence", "total"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for b in report.estimate.breakdown:
        table.add_row(
            b.kind.value,
            str(b.layers),
            f"{b.bytes_per_token:,}",
            f"{b.tokens_held:,}",
            f"{b.state_bytes_per_sequence:,}",
            human_bytes(b.bytes_per_sequence, units),
            human_bytes(b.total_bytes, units),
        )
    console.print(table)


def render_spectrum(console: Console, report: SizeReport, units: str) -> None:
    est = report.estimate
    title = f"G spectrum (ctx {est.ctx:,}, batch {est.batch:,})"
    table = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for col in ("G", "attention", "B/token", "total", "compression H/G"):
        table.add_column(col, justify="left" if col == "attention" else "right")
    for p in report.spectrum:
        name = p.name + (" (this model)" if p.is_model else "") + (" (what-if)" if p.is_what_if else "")
        table.add_row(
            str(p.kv_heads),
            name,
            f"{p.bytes_per_token:,}",
            human_bytes(p.total_bytes, units),
            f"{p.compression}x",
        )
    console.print(table)


def render_rows(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[str]],
    console: Console | None = None,
    right: Sequence[str] = (),
) -> None:
    """A plain table: used by listings (models, gpus)."""
    console = console or stdout_console()
    table = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for i, col in enumerate(columns):
        table.add_column(col, justify="right" if col in right else "left", no_wrap=i == 0)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_json(text: str) -> None:
    sys.stdout.write(text + "\n")


def print_error(message: str) -> None:
    """One message on stderr (no markup interpretation of user text)."""
    stderr_console().print(Text(f"kvplan: error: {message}", style="bold red"))


def debug_enabled() -> bool:
    return os.environ.get("KVPLAN_DEBUG", "").strip() not in ("", "0")


def render_models(rows: Sequence[CatalogRow], units: str = "iec", console: Console | None = None) -> None:
    render_rows(
        f"Bundled models ({len(rows)}); B/token at the serving dtype (auto)",
        ("model", "family", "layers", "H", "G", "head_dim", "attention", "dtype", "B/token", ""),
        (
            (
                r.model_id,
                r.family,
                str(r.layers),
                str(r.query_heads),
                r.kv_heads,
                r.head_dim,
                ", ".join(k.replace("_attention", "") for k in r.kinds),
                r.dtype,
                f"{r.bytes_per_token:,}",
                human_bytes(r.bytes_per_token, units),
            )
            for r in rows
        ),
        console,
        right=("layers", "H", "G", "head_dim", "B/token", ""),
    )


def render_gpus(rows: Sequence[GpuRow], units: str = "iec", console: Console | None = None) -> None:
    def flag(value: bool | None) -> str:
        return "?" if value is None else "yes" if value else "no"

    render_rows(
        f"GPU catalog ({len(rows)}); kvplan plans with the 'usable' figure (see docs/gpus.md)",
        ("id", "name", "usable", "from", "marketed", "TB/s", "fp8", "bf16", "aliases"),
        (
            (
                r.id,
                r.name,
                "raw size" if r.usable_bytes is None else human_bytes(r.usable_bytes, units),
                r.usable_source,
                r.marketed,
                "" if r.bandwidth_tbps is None else f"{r.bandwidth_tbps:g}",
                flag(r.fp8),
                flag(r.bf16),
                ", ".join(r.aliases[:4]) + (" ..." if len(r.aliases) > 4 else ""),
            )
            for r in rows
        ),
        console,
        right=("usable", "TB/s"),
    )

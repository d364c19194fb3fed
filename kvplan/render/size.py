"""``kvplan size``: the cache of one model at one context and batch, its arithmetic, by layer kind, the
engine's figure and the G spectrum."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvplan.formula import Explanation
from kvplan.plan import SizeReport
from kvplan.render.console import _KIND_SHORT, Column, _left_out, print_table, say, stdout_console
from kvplan.units import exact_and_human, human_bytes, product_text


def print_explanation(console: Console, exp: Explanation, units: str) -> None:
    for line in exp.lines:
        say(console, Text(f"  {line.label}: ", style="bold"), Text(product_text(line.factors, line.result, units)))
        if line.note:
            say(console, Text(f"      {line.note}", style="dim"))
    if len(exp.lines) > 1:
        say(console, Text("  sum: ", style="bold"), Text(exact_and_human(exp.total, units)))


def render_size(report: SizeReport, units: str = "iec", console: Console | None = None) -> None:
    console = console or stdout_console()
    est, layout, source = report.estimate, report.layout, report.source
    say(console, Text(source.requested, style="bold cyan"), Text(f"  ({source.describe()})", style="dim"))
    say(console, shape_line(layout.family, report))
    say(console, f"ctx {est.ctx:,} tokens ({report.ctx_source}) · batch {est.batch:,} · KV dtype {est.types.label}")
    say(console)
    eng = report.engine
    with_engine = eng.engine != "ideal" or eng.gpus > 1
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("")
    table.add_column("ideal bytes" if with_engine else "bytes", justify="right")
    table.add_column("IEC" if units == "iec" else "SI", justify="right")
    if with_engine:
        table.add_column(f"{eng.engine} bytes", justify="right")
        table.add_column("IEC" if units == "iec" else "SI", justify="right")
    held_note = _per_token_note(report)
    rows = (
        ("per token held" if held_note else "per token", est.bytes_per_token, eng.bytes_per_token),
        ("per sequence", est.bytes_per_sequence, report.engine_sequence_bytes),
        (f"total (x {est.batch:,})", est.total_bytes, eng.deployment_bytes),
    )
    for name, ideal, engine_value in rows:
        cells = [name, f"{ideal:,}", human_bytes(ideal, units)]
        if with_engine:
            cells += [f"{engine_value:,}", human_bytes(engine_value, units)]
        table.add_row(*cells)
    say(console, table)
    if held_note:
        say(console, Text(held_note, style="dim"))
    say(console)
    say(console, Text("Arithmetic", style="bold"))
    print_explanation(console, est.explanation, units)
    if len(est.breakdown) > 1:
        say(console)
        render_breakdown(console, report, units)
    if with_engine:
        say(console)
        render_engine(console, report, units)
    if report.spectrum:
        say(console)
        render_spectrum(console, report, units)
    for note in report.notes:
        say(console, Text(f"note: {note}", style="yellow"))


def _per_token_note(report: SizeReport) -> str:
    """For windowed and hybrid models, what "per token" means at this context: a token in every layer that
    caches tokens; windowed layers hold fewer and states are per sequence, so per token x ctx overstates."""
    est = report.estimate
    short = [b for b in est.breakdown if b.bytes_per_token and b.tokens_held < est.ctx]
    state = sum(b.state_bytes_per_sequence for b in est.breakdown)
    if not short and not state:
        return ""
    parts = [f"{b.layers} {_KIND_SHORT.get(b.kind.value, b.kind.value)} layers hold {b.tokens_held:,}" for b in short]
    text = f"per token held: one token in every layer that caches tokens; at ctx {est.ctx:,} " + "; ".join(parts)
    if state:
        text += ("; " if parts else "") + f"fixed state adds {state:,} B per sequence"
    return text + ": per sequence is the sum by layer (below), not per token held x ctx"


def render_engine(console: Console, report: SizeReport, units: str) -> None:
    from kvplan.engines import get_engine

    eng = report.engine
    say(
        console, Text(f"Engine: {eng.engine}", style="bold"), Text(f"  ({get_engine(eng.engine).summary})", style="dim")
    )
    where = f"tp {eng.tp} x pp {eng.pp} = {eng.gpus} GPUs" if eng.gpus > 1 else "1 GPU"
    say(console, f"  per GPU (largest stage): {exact_and_human(eng.per_gpu_bytes, units)}")
    say(console, f"  deployment ({where}): {exact_and_human(eng.deployment_bytes, units)}")
    diff = eng.deployment_bytes - eng.ideal.total_bytes
    if diff:
        pct = 100 * diff / eng.ideal.total_bytes if eng.ideal.total_bytes else 0.0
        sign = "+" if diff > 0 else "-"
        say(console, f"  vs ideal: {sign}{exact_and_human(abs(diff), units)} ({sign}{abs(pct):.2f}%), because:")
    elif eng.rules:
        say(console, "  same as ideal; rules applied:")
    for rule in eng.rules:
        say(console, Text(f"    - {rule}"))
    say(console, Text("  per GPU:", style="bold"))
    for line in eng.explanation().lines:
        text = f"    {line.label}: {product_text(line.factors, line.result, units)}"
        say(console, Text(text + (f"   [{line.note}]" if line.note else "")))


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
    est = report.estimate
    columns = (
        Column("kind", right=False),
        Column("layers"),
        Column("B/token"),
        Column("tokens held"),
        Column("state B/seq", drop=2),
        Column("per sequence"),
        Column("total", drop=1 if est.batch == 1 else 0),
    )
    rows = [
        (
            _KIND_SHORT.get(b.kind.value, b.kind.value),
            str(b.layers),
            f"{b.bytes_per_token:,}",
            f"{b.tokens_held:,}",
            f"{b.state_bytes_per_sequence:,}",
            human_bytes(b.bytes_per_sequence, units),
            human_bytes(b.total_bytes, units),
        )
        for b in est.breakdown
    ]
    dropped = print_table(console, "By layer kind", columns, rows)
    _left_out(console, dropped)


def render_spectrum(console: Console, report: SizeReport, units: str) -> None:
    est = report.estimate
    columns = (
        Column("G"),
        Column("attention", right=False),
        Column("B/token"),
        Column("total"),
        Column("compression H/G"),
    )
    rows = [
        (
            str(p.kv_heads),
            p.name + (" (this model)" if p.is_model else "") + (" (what-if)" if p.is_what_if else ""),
            f"{p.bytes_per_token:,}",
            human_bytes(p.total_bytes, units),
            f"{p.compression}x",
        )
        for p in report.spectrum
    ]
    print_table(console, f"G spectrum (ctx {est.ctx:,}, batch {est.batch:,})", columns, rows)

"""Human output: rich tables and the arithmetic, in IEC (GiB = 2^30) or SI (GB = 10^9) units.

The only module that prints. Data goes to stdout, messages to stderr. Byte counts are always shown exact
(``1,342,177,280 B``) beside their converted, labelled form; conversion happens only here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from kvplan.errors import Param, spell
from kvplan.formula import Explanation
from kvplan.layout import CacheLayout, ConfigWarning
from kvplan.plan import CapacityReport, CatalogRow, SizeReport
from kvplan.units import exact_and_human, human_bytes, product_text

if TYPE_CHECKING:
    from rich.progress import Progress

    from kvplan.gpus import Budget, GpuRow, GpuSelection
    from kvplan.solver import Chart, FitReport, GpusAnswer, Lever, PickGCell, PickGReport, Way
    from kvplan.verify import Check, VerifyReport
    from kvplan.verify.ranks import RankResult, RanksReport


#: Characters that must not reach a terminal as they are: C0 controls but the newline (ESC starts a colour, a
#: title change or a clipboard write; CR overwrites a line), DEL, the C1 controls (U+009B is a CSI on some
#: terminals) and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str) -> str:
    """``text`` with each control character written as its escape (``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


class SafeConsole(Console):
    """A Console for untrusted text: rich markup (``[bold]``, ``[link=...]``) and emoji codes in strings are
    shown as written, and control characters are escaped in everything printed (tables, notes, errors).

    Every print goes through :meth:`render` (rich Console.print), so escaping there covers every renderable;
    the style codes rich itself writes are control segments and pass unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, soft_wrap=True, **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and _CONTROL.search(segment.text):
                yield Segment(escape_control(segment.text), segment.style)
            else:
                yield segment


def stdout_console() -> Console:
    """Console for data, as wide as the terminal (COLUMNS wins). When stdout is not a terminal (a pipe, a file)
    and COLUMNS is not set, 200 columns. Prose wraps to the width (:func:`emit`); tables pick their columns."""
    console = SafeConsole()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = SafeConsole(width=200)
    return console


def emit(console: Console, text: Text | str, hang: int | None = None) -> None:
    """Print one paragraph, word-wrapped to the console width. Continuation lines are indented ``hang`` columns
    (default: the paragraph's own indent + 4), so a wrapped line still reads as one item. Styles are kept."""
    line = text if isinstance(text, Text) else Text(text)
    plain = line.plain
    lead = len(plain) - len(plain.lstrip(" "))
    indent = lead + 4 if hang is None else hang
    width = max(console.width, 20)
    pieces = _wrap_offsets(plain, width, max(width - indent, 10))
    for k, piece in enumerate(line.divide(pieces)):
        if k == 0:
            console.print(piece, soft_wrap=True)
        else:
            console.print(Text(" " * indent) + _lstrip(piece), soft_wrap=True)


def _wrap_offsets(plain: str, first: int, rest: int) -> list[int]:
    """Where to break ``plain`` (greedy, at spaces): the first line at most ``first`` columns, the rest ``rest``.
    A word longer than a line is kept whole (it overflows rather than being cut)."""
    offsets: list[int] = []
    start, limit = 0, first
    while len(plain) - start > limit:
        cut = _last_break(plain, start + 1, start + limit + 1)
        if cut <= start:
            cut = _next_break(plain, start + limit)
            if cut < 0:
                break
        offsets.append(cut)
        start = cut
        while start < len(plain) and plain[start] == " ":
            start += 1
        limit = rest
    return offsets


#: A unit after a number stays on the number's line ("68.01 GiB", "4,096 B").
_UNIT = re.compile(r" (B|KiB|MiB|GiB|TiB|PiB|kB|KB|MB|GB|TB|PB)\b")


def _last_break(plain: str, lo: int, hi: int) -> int:
    cut = plain.rfind(" ", lo, hi)
    while cut >= lo and _UNIT.match(plain, cut):
        cut = plain.rfind(" ", lo, cut)
    return cut


def _next_break(plain: str, lo: int) -> int:
    cut = plain.find(" ", lo)
    while cut >= 0 and _UNIT.match(plain, cut):
        cut = plain.find(" ", cut + 1)
    return cut


def _lstrip(text: Text) -> Text:
    plain = text.plain
    return text[len(plain) - len(plain.lstrip(" ")) :]


@dataclass(frozen=True)
class Column:
    """One column of a table that picks its columns by width: ``drop`` orders what goes first when the table is
    wider than the terminal (0: never dropped; higher numbers go first)."""

    name: str
    right: bool = True
    drop: int = 0
    #: The narrowest this column may wrap to (0: its cells never wrap; rich wraps longer text at spaces).
    squeeze: int = 0


def print_table(
    console: Console,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
) -> tuple[str, ...]:
    """A plain table with the columns that fit the console width (dropping by ``drop``); cells never end in an
    ellipsis (a cell wider than its column folds). Returns the names of the columns left out."""
    keep = list(range(len(columns)))

    def natural(i: int) -> int:
        cells = [len(part) for row in rows for part in row[i].split("\n")]
        widest = max([len(columns[i].name), *cells])
        return min(widest, max(columns[i].squeeze, len(columns[i].name))) if columns[i].squeeze else widest

    def total() -> int:
        return sum(natural(i) for i in keep) + 2 * (len(keep) - 1)

    while total() > console.width and any(columns[i].drop for i in keep):
        keep.remove(max(keep, key=lambda i: (columns[i].drop, i)))
    if title:
        emit(console, Text(title, style="bold"))
    table = Table(header_style="bold", box=None, pad_edge=False)
    for i in keep:
        table.add_column(columns[i].name, justify="right" if columns[i].right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    return tuple(columns[i].name for i in range(len(columns)) if i not in keep)


def stderr_console() -> Console:
    return SafeConsole(stderr=True)


def say(console: Console, *parts: Text | str | Table) -> None:
    """Print a paragraph (parts joined by a space, wrapped by :func:`emit`), a table as it is, or a blank line.
    Plain strings are never read as rich markup: text from configs is printed as it is."""
    if not parts:
        console.print()
    elif len(parts) == 1 and isinstance(parts[0], Table):
        console.print(parts[0])
    else:
        emit(console, Text(" ").join(p if isinstance(p, Text) else Text(str(p)) for p in parts))


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


def print_error(message: str) -> None:
    """One message on stderr (no markup interpretation of user text)."""
    stderr_console().print(Text(f"kvplan: error: {message}", style="bold red"))


def print_warnings(warnings: Sequence[ConfigWarning]) -> None:
    """One stderr line per thing the reader did not fully understand (the message says the figure may be
    wrong; --strict turns them into an error)."""
    console = stderr_console()
    for warning in warnings:
        console.print(Text(f"kvplan: warning: {warning.message}", style="yellow"))


def debug_enabled() -> bool:
    return os.environ.get("KVPLAN_DEBUG", "").strip() not in ("", "0")


_KIND_SHORT = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked"}


def _kinds_text(kinds: Iterable[str]) -> str:
    return "+".join(_KIND_SHORT.get(k, k) for k in kinds)


def _left_out(console: Console, dropped: Sequence[str]) -> None:
    if dropped:
        more = spell(Param.JSON)
        say(
            console,
            Text(
                f"left out at {console.width} columns: {', '.join(dropped)} (a wider terminal or {more})", style="dim"
            ),
        )


def _model_cell(row: CatalogRow, width: int) -> str:
    """The id, then the aliases that reach it (without the org where it is the model's own), wrapped to ``width``."""
    import textwrap

    if not row.aliases:
        return row.model_id
    org = row.model_id.split("/", 1)[0] + "/"
    names = ", ".join(a.removeprefix(org) for a in row.aliases)
    lines = textwrap.wrap(
        "= " + names,
        width,
        initial_indent="  ",
        subsequent_indent="    ",
        break_on_hyphens=False,
        break_long_words=False,
    )
    return "\n".join([row.model_id, *lines])


def render_models(rows: Sequence[CatalogRow], units: str = "iec", console: Console | None = None) -> None:
    from kvplan.plan import span_text

    console = console or stdout_console()
    width = max(len(r.model_id) for r in rows)
    columns = (
        Column("model", right=False),
        Column("family", right=False, drop=6),
        Column("layers", drop=2),
        Column("H", drop=3),
        Column("G"),
        Column("head_dim", drop=4),
        Column("attention", right=False),
        Column("dtype", right=False, drop=5),
        Column("B/token", drop=7),
        Column("per token"),
    )
    dropped = print_table(
        console,
        f"Bundled models ({len(rows)}); bytes per token at the serving dtype (auto)",
        columns,
        [
            (
                _model_cell(r, width),
                r.family,
                str(r.layers),
                str(r.query_heads),
                span_text(r.kv_heads),
                span_text(r.head_dims),
                _kinds_text(r.kinds),
                r.dtype,
                f"{r.bytes_per_token:,}",
                human_bytes(r.bytes_per_token, units),
            )
            for r in rows
        ],
    )
    say(
        console,
        Text(
            "Names: an id, an alias (= ...), or either without its org (gpt-oss-120b, llama-2-70b), any case; the "
            "start of a name up to a hyphen works when it names one model (mixtral-8x7b). H: query heads; "
            "G: KV heads (a range where layers differ, - for MLA / SSM).",
            style="dim",
        ),
    )
    _left_out(console, dropped)


def render_gpus(rows: Sequence[GpuRow], units: str = "iec", console: Console | None = None) -> None:
    def flag(value: bool | None) -> str:
        return "?" if value is None else "yes" if value else "no"

    def source(r: GpuRow) -> str:
        return r.usable_source if r.measured is None else f"measured here {r.measured.measured_at[:10]} *"

    measured = [r for r in rows if r.measured is not None]
    console = console or stdout_console()
    columns = (
        Column("id", right=False),
        Column("name", right=False, drop=3, squeeze=20),
        Column("usable"),
        Column("from", right=False, drop=1),
        Column("marketed", right=False, drop=4, squeeze=16),
        Column("TB/s"),
        Column("fp8", right=False),
        Column("bf16", right=False),
        Column("aliases", right=False, drop=2, squeeze=24),
    )
    dropped = print_table(
        console,
        f"GPU catalog ({len(rows)}); kvplan plans with the 'usable' figure (see docs/gpus.md)",
        columns,
        [
            (
                r.id,
                r.name,
                "raw size" if r.usable_bytes is None else human_bytes(r.usable_bytes, units),
                source(r),
                r.marketed,
                "" if r.bandwidth_tbps is None else f"{r.bandwidth_tbps:g}",
                flag(r.fp8),
                flag(r.bf16),
                ", ".join(r.aliases[:4]) + (" ..." if len(r.aliases) > 4 else ""),
            )
            for r in rows
        ],
    )
    _left_out(console, dropped)
    for r in measured:
        assert r.measured is not None
        m = r.measured
        say(
            console,
            Text(
                f"* {r.id}: measured by kvplan verify {spell(Param.SAVE_GPU)} on {m.device_name} "
                f"({m.measured_at}, torch {m.torch_version}): total {m.total_bytes:,} B, CUDA context and other use "
                f"{m.context_bytes:,} B"
                + ("" if m.allocator_bytes is None else f", allocator reserve {m.allocator_bytes:,} B")
                + f"; in {r.origin}",
                style="dim",
            ),
        )


# ----------------------------------------------------------------------------------------------------------
# pick-g and fit


def _count_text(n: int | None, unbounded: str = "unbounded") -> str:
    return unbounded if n is None else f"{n:,}"


def _ctx_label(ctx: int) -> str:
    """``64K`` for 65,536, ``32k`` for 32,000, else the number: chart axis labels."""
    for size, suffix in ((2**20, "M"), (2**10, "K"), (10**6, "m"), (10**3, "k")):
        if ctx >= size and ctx % size == 0:
            return f"{ctx // size}{suffix}"
    return f"{ctx:,}"


def _gpu_line(gpu: GpuSelection, tp: int, engine: str, kv_label: str, weights: str) -> str:
    return f"{gpu.title} · tp {tp} · engine {engine} · KV dtype {kv_label} · weights {weights}"


def _budget_block(console: Console, title: str, b: Budget, units: str) -> None:
    from kvplan.gpus import budget_lines

    say(console, Text(title, style="bold"))
    first, *rest = budget_lines(b, units)
    say(console, Text(f"  {first}"))
    for line in rest:
        say(console, Text(f"    {line}", style="dim"))


def _notes(console: Console, notes: Iterable[str]) -> None:
    for note in notes:
        say(console, Text(f"note: {note}", style="yellow"))


def _layout_line(layout: CacheLayout, own_note: str = "") -> str:
    kinds = ", ".join(k.value.replace("_", " ") for k in layout.kinds)
    heads = f"{layout.query_heads} query heads"
    if layout.kv_heads is not None and layout.attention_layers:
        heads += f" · {layout.kv_heads} KV heads{own_note}"
    dim = f" · head_dim {layout.head_dim}" if layout.head_dim else ""
    return f"{layout.family} · {layout.num_layers} layers · {heads}{dim} · {kinds}"


def render_pick_g(report: PickGReport, units: str = "iec", console: Console | None = None) -> None:
    console = console or stdout_console()
    if report.scenario is not None:
        sc = report.scenario
        say(
            console,
            Text(
                f"Reference scenario ({sc.location}; name a model to plan another: kvplan pick-g MODEL):", style="bold"
            ),
        )
        say(console, Text(f"  {sc.description}"))
        if report.scenario_changes:
            say(console, Text(f"  asked here with {'; '.join(report.scenario_changes)}", style="yellow"))
    say(console, Text(report.source.requested, style="bold cyan"), Text(f"  ({report.source.describe()})", style="dim"))
    say(console, _layout_line(report.layout, " (the model's own G)"))
    say(console, _gpu_line(report.gpu, report.tp, report.engine, report.kv_types.label, report.weights_dtype))
    ctxs = ", ".join(f"{c:,}" for c in report.ctxs)
    batches = ", ".join(f"{b:,}" for b in report.batches)
    say(console, f"ctx {ctxs} tokens ({report.ctx_source}) · batch {batches}")
    say(console)
    focus = report.focus
    why = "the recommended G" if report.single and report.single.recommended_g is not None else "the smallest G"
    _budget_block(
        console, f"Budget per GPU at G = {focus.g}, {why} (weights shrink with G: see each row)", focus.budget, units
    )
    say(console)
    cell = report.single
    if cell is not None:
        render_g_table(console, report, cell, units)
        say(console)
        render_recommendation(console, report, cell, units)
        for way in report.ways:
            render_way(console, report, way, units)
    else:
        render_g_matrix(console, report)
    for g, reason in report.skipped:
        say(console, Text(f"G = {g} left out: {reason}", style="dim"))
    for chart in report.charts:
        say(console)
        render_chart(console, report, chart, units)
    if report.ways or report.charts or report.skipped:
        say(console)
    _notes(console, report.notes)
    render_launch(console, report.launch_command, report.launch_notes)


def render_g_table(console: Console, report: PickGReport, cell: PickGCell, units: str) -> None:
    from kvplan.solver import QUALITY_LEGEND, quality_label

    columns = (
        Column("G"),
        Column("attention", right=False),
        Column("H/G", drop=3),
        Column("KV"),
        Column("weights", drop=4),
        Column("total", drop=5),
        Column("fits", right=False),
        Column("headroom"),
        Column("max batch"),
        Column("max ctx"),
        Column("quality", right=False),
    )
    rows = []
    capped = False
    for choice, option in zip(report.choices, cell.options, strict=True):
        name = choice.attention + (" (own)" if choice.is_model else "")
        if choice.copies_heads:
            name += f" (copied {report.tp // choice.g}x)"
        ctx_text = _count_text(option.max_ctx) + ("+" if option.ctx_capped else "")
        capped = capped or option.ctx_capped
        rows.append(
            (
                str(option.g),
                name,
                f"{choice.compression}x",
                human_bytes(option.kv_bytes, units),
                human_bytes(option.weights_bytes, units),
                human_bytes(option.total_bytes, units),
                ("yes" if option.fits else "no") + (" <-" if option.g == cell.recommended_g else ""),
                human_bytes(option.headroom_bytes, units),
                _count_text(option.max_batch),
                ctx_text,
                quality_label(choice.g, report.query_heads),
            )
        )
    title = (
        f"Every G at ctx {cell.ctx:,} x batch {cell.batch:,}, per GPU (max batch at ctx {cell.ctx:,}, max ctx at "
        f"batch {cell.batch:,})"
    )
    dropped = print_table(console, title, columns, rows)
    legend = ["<- = recommended, the largest G that fits", "own = the model's own G"]
    if capped and report.context_limit is not None:
        legend.append(f"N+ = the model's {report.context_limit.describe()}; memory alone allows more")
    say(console, Text("; ".join(legend), style="dim"))
    say(console, Text(QUALITY_LEGEND, style="dim"))
    _left_out(console, dropped)


def render_recommendation(console: Console, report: PickGReport, cell: PickGCell, units: str) -> None:
    if cell.recommended_g is None:
        smallest = cell.options[-1]
        say(
            console,
            Text(
                f"No G fits: even G = {smallest.g} needs {exact_and_human(smallest.kv_bytes, units)} of KV per GPU "
                f"and the budget is {exact_and_human(smallest.kv_budget_bytes, units)} "
                f"({exact_and_human(-smallest.headroom_bytes, units)} missing).",
                style="bold red",
            ),
        )
        return
    choice = report.choice(cell.recommended_g)
    option = cell.option(cell.recommended_g)
    say(
        console,
        Text(f"Recommended: G = {choice.g}", style="bold green"),
        Text(
            f"({choice.attention}, {choice.compression}x smaller cache than MHA), the largest G that fits: KV "
            f"{exact_and_human(option.kv_bytes, units)} of {exact_and_human(option.kv_budget_bytes, units)} "
            f"per GPU, {human_bytes(option.headroom_bytes, units)} to spare. Quality: {choice.quality}."
        ),
    )


_LEVER_NAMES = {
    "fp8": "fp8 KV",
    "tp": "more GPUs",
    "fp8+tp": "fp8 KV and more GPUs",
    "batch": "a smaller batch",
    "ctx": "a shorter context",
}


def lever_text(lever: Lever, ctx: int, batch: int, units: str = "iec") -> str:
    """One way to make a G fit, in words with its number."""
    used = f"{human_bytes(lever.kv_bytes, units)} of {human_bytes(lever.kv_budget_bytes, units)} KV per GPU"
    if lever.value is None:
        if lever.kind == "batch":
            text = f"not even one sequence of {ctx:,} tokens fits"
        elif lever.kind == "ctx":
            text = f"not even one token at batch {batch:,} fits"
        else:
            text = lever.note or "not possible"
        return f"{_LEVER_NAMES[lever.kind]}: {text}"
    if lever.kind == "fp8":
        short = lever.kv_bytes - lever.kv_budget_bytes
        verdict = "fits" if lever.fits else f"not enough alone, {human_bytes(short, units)} over"
        text = f"{spell(Param.KV_CACHE_DTYPE)} fp8: {used}, {verdict}"
    elif lever.kind in ("tp", "fp8+tp"):
        flag = f"{spell(Param.KV_CACHE_DTYPE)} fp8 " if lever.kind == "fp8+tp" else ""
        text = f"{flag}{spell(Param.TENSOR_PARALLEL_SIZE)} {lever.value} ({lever.value} GPUs): {used}"
    elif lever.kind == "batch":
        text = f"{spell(Param.BATCH)} {lever.value:,} at ctx {ctx:,}: {used}"
    else:
        text = f"{spell(Param.CTX)} {lever.value:,} at batch {batch:,}: {used}"
    note = f"; {lever.note}" if lever.note and lever.value is not None else ""
    return f"{_LEVER_NAMES[lever.kind]}: {text}{note}"


def render_way(console: Console, report: PickGReport, way: Way, units: str) -> None:
    cell = report.single
    assert cell is not None
    missing = human_bytes(-way.option.headroom_bytes, units)
    say(
        console,
        Text(f"To reach G = {way.g}", style="bold"),
        Text(f"({way.reason}; {missing} of KV per GPU over), each way alone:"),
    )
    for lever in way.levers:
        say(console, Text(f"  - {lever_text(lever, cell.ctx, cell.batch, units)}"))


def render_g_matrix(console: Console, report: PickGReport) -> None:
    title = "Recommended G (the largest that fits) per context and batch; - = no G fits"
    table = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    table.add_column("ctx \\ batch", justify="right")
    for b in report.batches:
        table.add_column(f"{b:,}", justify="right")
    by_cell = {(c.ctx, c.batch): c.recommended_g for c in report.cells}
    for ctx in report.ctxs:
        table.add_row(f"{ctx:,}", *("-" if by_cell[ctx, b] is None else str(by_cell[ctx, b]) for b in report.batches))
    say(console, table)
    say(
        console,
        Text(
            f"one context and one batch show every G with its numbers; {spell(Param.JSON)} has every cell", style="dim"
        ),
    )


_MARKERS = "ABCDEFHJKLMNPQRSTUVWXYZabcdefhjkmnpqrstuvwxyz"


def chart_lines(report: PickGReport, chart: Chart, units: str = "iec", height: int = 16) -> list[str]:
    """Memory per GPU (weights + reserve + KV) against context, one letter per G, the usable line as dashes.

    The x axis is logarithmic (one column per context of the chart); values above the top are left out.
    """
    width = len(chart.ctxs)
    top = chart.limit_bytes * 3 // 2
    grid = [[" "] * width for _ in range(height)]

    def row(value: int) -> int:  # 0 = top row; a value v sits in the row whose band holds it
        level = -(-value * height // top) - 1 if value > 0 else 0
        return height - 1 - level

    limit_row = row(chart.limit_bytes)
    grid[limit_row] = ["-"] * width
    for k, series in enumerate(chart.series):
        for x, total in enumerate(series.totals):
            if total <= top:
                grid[row(total)][x] = _MARKERS[k % len(_MARKERS)]
    labels = {0: human_bytes(top, units), limit_row: human_bytes(chart.limit_bytes, units), height - 1: "0"}
    pad = max(len(v) for v in labels.values())
    lines = [f"{labels.get(r, ''):>{pad}} |{''.join(cells)}" for r, cells in enumerate(grid)]
    axis = [" "] * width
    ticks = [" "] * (width + 12)
    for ctx in (chart.ctxs[0], *chart.marks, chart.ctxs[-1]):
        x = chart.ctxs.index(ctx)
        axis[x] = "^" if ctx in chart.marks else "+"
        label = _ctx_label(ctx)
        start = min(x, len(ticks) - len(label))
        if all(c == " " for c in ticks[max(0, start - 1) : start + len(label) + 1]):
            ticks[start : start + len(label)] = list(label)
    lines.append(f"{'':>{pad}} +{''.join(axis)}")
    lines.append(f"{'':>{pad}}  {''.join(ticks).rstrip()}")
    return lines


def render_chart(console: Console, report: PickGReport, chart: Chart, units: str) -> None:
    title = (
        f"Memory per GPU against context (log scale), batch {chart.batch:,}: weights + "
        f"{human_bytes(chart.reserve_bytes, units)} reserve + KV; ---- = {human_bytes(chart.limit_bytes, units)}, "
        "usable x utilization; ^ = asked"
    )
    say(console, Text(title, style="bold"))
    for line in chart_lines(report, chart, units):
        say(console, Text(line))
    for k, series in enumerate(chart.series):
        choice = report.choice(series.g)
        if series.max_ctx is None:
            reach = "fits at any context"
        elif series.max_ctx == 0:
            reach = "does not fit at any context"
        else:
            reach = f"fits up to {series.max_ctx:,} tokens"
        say(console, Text(f"  {_MARKERS[k % len(_MARKERS)]}  G = {series.g} ({choice.attention}): {reach}"))


def render_fit(report: FitReport, units: str = "iec", console: Console | None = None) -> None:
    console = console or stdout_console()
    say(console, Text(report.source.requested, style="bold cyan"), Text(f"  ({report.source.describe()})", style="dim"))
    what_if = ""
    if report.own_g is not None and report.layout.kv_heads != report.own_g:
        what_if = f" (what-if; the model has {report.own_g})"
    say(console, _layout_line(report.layout, what_if))
    say(console, _gpu_line(report.gpu, report.tp, report.engine, report.kv_types.label, report.weights.dtype))
    say(console)
    _budget_block(console, "Budget per GPU", report.budget, units)
    say(console)
    where = f"{report.tp} GPUs" if report.tp > 1 else "1 GPU"
    for check in report.checks:
        verdict = (
            f"fits, {human_bytes(check.headroom_bytes, units)} to spare"
            if check.fits
            else f"does not fit, {human_bytes(-check.headroom_bytes, units)} over"
        )
        _answer(
            console,
            f"ctx {check.ctx:,} x batch {check.batch:,} on {where}: ",
            f"KV {exact_and_human(check.kv_bytes, units)} per GPU, budget {human_bytes(check.kv_budget_bytes, units)}: "
            f"{verdict}",
        )
    say(console)
    for a in report.max_ctx:
        if a.ctx is None:
            body = (
                f"unbounded: the cache stops growing at {exact_and_human(a.kv_bytes, units)} per GPU "
                "(state or windowed layers only), within the budget"
            )
        elif a.ctx == 0:
            body = _nothing_fits(report, f"even 1 token at batch {a.batch:,}", a.missing_bytes, units)
        else:
            body = f"{a.ctx:,} tokens (KV {human_bytes(a.kv_bytes, units)} per GPU)"
            if a.capped and report.context_limit is not None:
                allows = "any context" if a.by_memory is None else f"{a.by_memory:,} tokens"
                body = (
                    f"{a.ctx:,} tokens, the model's {report.context_limit.describe()} (KV "
                    f"{human_bytes(a.kv_bytes, units)} per GPU); memory alone would allow {allows}"
                )
        _answer(console, f"Longest context at batch {a.batch:,}: ", body)
    for m in report.max_batch:
        if m.batch is None:
            body = "unbounded: a sequence costs no cache"
        elif m.batch == 0:
            body = _nothing_fits(report, f"even 1 sequence of {m.ctx:,} tokens", m.missing_bytes, units)
        else:
            body = f"{m.batch:,} (KV {human_bytes(m.kv_bytes, units)} per GPU)"
        _answer(console, f"Most sequences at ctx {m.ctx:,}: ", body)
    for g in report.min_gpus:
        head = f"Fewest GPUs for ctx {g.ctx:,} x batch {g.batch:,}: "
        if g.tp is None or g.budget is None:
            tried = ", ".join(map(str, g.tried)) or "none"
            _answer(console, head, f"none of the tensor-parallel sizes the model allows fits (tried {tried})")
            continue
        from kvplan.gpus import budget_lines

        _answer(
            console,
            head,
            f"{g.budget.gpu.title}, {spell(Param.TENSOR_PARALLEL_SIZE)} {g.tp}: "
            f"KV {human_bytes(g.kv_bytes, units)} per GPU, "
            f"budget {human_bytes(g.budget.kv_bytes_per_gpu, units)}; there the longest context at batch "
            f"{g.batch:,} is {_gpus_ctx_text(g)} and the most sequences "
            f"at ctx {g.ctx:,} is "
            f"{_count_text(g.max_batch)}",
        )
        say(console, Text(f"    {budget_lines(g.budget, units)[0]}", style="dim"))
    if report.notes:
        say(console)
    _notes(console, report.notes)
    render_launch(console, report.launch_command, report.launch_notes)


def _gpus_ctx_text(g: GpusAnswer) -> str:
    if g.max_ctx is None:
        return "unbounded"
    if g.max_ctx != g.max_ctx_by_memory:
        return f"{g.max_ctx:,} tokens (the model's limit; memory alone would allow more)"
    return f"{g.max_ctx:,} tokens"


def _answer(console: Console, head: str, body: str) -> None:
    say(console, Text.assemble((head, "bold"), body))


def _nothing_fits(report: FitReport, what: str, missing: int, units: str) -> str:
    text = f"does not fit: {what} needs {exact_and_human(missing, units)} more per GPU"
    if not report.budget.fits:
        text += f" (weights and reserve alone exceed the memory by {human_bytes(report.budget.shortfall_bytes, units)})"
    return text


def print_info(message: str) -> None:
    """A line on stderr that is neither data nor an error (what a command wrote where)."""
    stderr_console().print(Text(f"kvplan: {message}"))


def print_note(message: str) -> None:
    """A one-line verdict on stderr (``--check`` failures)."""
    stderr_console().print(Text(f"kvplan: {message}", style="bold red"))


def shell_lines(words: list[str], width: int) -> list[str]:
    """Shell words as lines of at most ``width`` columns (a longer word stands alone), joined by " \\"."""
    lines: list[str] = []
    current = "  " + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) + 2 > width:
            lines.append(current + " \\")
            current = "      " + word
        else:
            current += " " + word
    return [*lines, current]


def render_launch(console: Console, command: tuple[str, ...] | None, notes: tuple[str, ...]) -> None:
    """The engine's launch command for the plan, shell-quoted, and what it needs besides its arguments."""
    import shlex

    if command is None and not notes:
        return
    say(console)
    say(console, Text("Launch", style="bold"))
    if command is not None:  # broken only between arguments, with shell continuations, so it pastes as it is
        for line in shell_lines([shlex.quote(a) for a in command], console.width):
            console.print(Text(line), soft_wrap=True)
    for note in notes:
        say(console, Text(f"  {note}", style="dim"))


def render_capacity(report: CapacityReport, units: str = "iec", console: Console | None = None) -> None:
    console = console or stdout_console()
    cap, layout, source = report.capacity, report.layout, report.source
    say(console, Text(source.requested, style="bold cyan"), Text(f"  ({source.describe()})", style="dim"))
    say(
        console,
        f"{layout.family} · {layout.num_layers} layers · engine {cap.engine} · KV dtype {cap.kv_dtype} · "
        f"tp {report.tensor_parallel_size}",
    )
    say(console)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("")
    table.add_column("", justify="right")
    table.add_row("KV memory per GPU", exact_and_human(cap.kv_memory_bytes, units))
    if cap.block_size is not None:
        table.add_row("block size", f"{cap.block_size:,} tokens")
    if cap.num_blocks is not None:
        table.add_row("num_blocks", f"{cap.num_blocks:,}")
    table.add_row("KV tokens", f"{cap.kv_tokens:,}")
    table.add_row(
        f"max concurrency at {cap.max_model_len:,} tokens",
        f"{float(cap.max_concurrency):.2f}x ({cap.max_concurrent_requests:,} requests)",
    )
    for name, value in cap.facts.items():
        table.add_row(name.replace("_", " "), f"{value:,}")
    say(console, table)
    say(console)
    say(console, Text("Arithmetic", style="bold"))
    for line in (*report.memory_lines, *cap.lines):
        say(console, Text(f"  {line}"))
    render_launch(console, report.launch_command, report.launch_notes)


def verify_progress() -> Progress:
    """A progress bar on stderr over the layers of each plan (transient: it disappears when done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr_console(),
        transient=True,
    )


def render_verify(report: VerifyReport, units: str = "iec", console: Console | None = None) -> None:
    console = console or stdout_console()
    dev = report.device
    total = "?" if dev.total_bytes is None else human_bytes(dev.total_bytes, units)
    free = "?" if dev.free_bytes is None else human_bytes(dev.free_bytes, units)
    say(console, Text(f"{dev.name} ({dev.device}, torch {dev.torch_version})", style="bold cyan"))
    say(
        console,
        f"total {total} · free {free} · verify may use {human_bytes(dev.available_bytes, units)}"
        + (f" ({dev.cap_note})" if dev.cap_note else ""),
    )
    if dev.catalog is not None:
        cat = dev.catalog
        line = f"catalog {cat.gpu_id}: usable {exact_and_human(cat.catalog_usable_bytes or 0, units)}"
        if cat.difference_bytes:
            line += f"; this device reports {cat.difference_bytes:+,} B: {cat.suggestion}"
        say(console, line)
    elif dev.catalog_note:
        say(console, Text(dev.catalog_note, style="dim"))
    say(console)
    plan_columns = (
        Column("plan", right=False),
        Column("engine", right=False, drop=3),
        Column("ctx"),
        Column("batch"),
        Column("predicted"),
        Column("measured"),
        Column("weights", drop=2),
        Column("fits (predicted)", drop=1),
        Column("fits"),
    )
    plan_rows = [
        (
            p.name,
            p.engine,
            f"{p.ctx:,}",
            f"{p.batch:,}",
            f"{p.predicted_bytes:,}",
            "-" if p.measured is None else f"{p.measured.cache_tensor_bytes:,}",
            human_bytes(p.weights_bytes, units),
            "yes" if p.predicted_fits else "no",
            "yes" if p.fits else "no",
        )
        for p in report.plans
    ]
    _left_out(console, print_table(console, "Plans", plan_columns, plan_rows))
    for p in report.plans:
        notes = [p.note] if p.note else []
        if p.out_of_memory is not None:
            notes.append(p.out_of_memory.describe())
        if p.measured is not None:
            notes += list(p.measured.notes)
        for note in notes:
            say(console, Text(f"  {p.name}: {note}", style="dim"))
    timings = report.timings
    if timings:
        say(console)
        timing_columns = (
            Column("plan", right=False),
            Column("G"),
            Column("tokens"),
            Column("cache read"),
            Column("median"),
            Column("achieved"),
            Column("device", drop=1),
        )
        timing_rows = []
        for t in timings:
            med = "-" if t.median_seconds is None else f"{t.median_seconds * 1e3:,.2f} ms"
            ach = "-" if t.achieved_bytes_per_second is None else f"{t.achieved_bytes_per_second / 1e9:,.1f} GB/s"
            dev_bw = "-" if t.catalog_bytes_per_second is None else f"{t.catalog_bytes_per_second / 1e9:,.0f} GB/s"
            timing_rows.append(
                (
                    t.plan,
                    "-" if t.kv_heads is None else str(t.kv_heads),
                    f"{t.tokens:,}",
                    human_bytes(t.cache_bytes_read, units),
                    med,
                    ach,
                    dev_bw,
                )
            )
        dropped = print_table(console, "Decode step (SDPA over the cache)", timing_columns, timing_rows)
        _left_out(console, dropped)
    for pr in report.probes:
        say(
            console,
            f"capacity probe {pr.plan}: largest batch that fits at ctx {pr.ctx:,}: measured "
            f"{pr.measured_max_batch:,}, predicted {pr.predicted_max_batch:,}",
        )
    say(console)
    _render_checks(console, report.checks)


def _render_checks(console: Console, checks: Sequence[Check]) -> None:
    columns = (
        Column("check", right=False),
        Column("predicted"),
        Column("measured"),
        Column("difference", drop=1),
        Column("ok", right=False),
    )
    rows = [
        (
            c.name,
            f"{c.predicted_bytes:,}",
            f"{c.measured_bytes:,}",
            f"{c.difference_bytes:+,}",
            "ok" if c.ok else "REFUTED",
        )
        for c in checks
    ]
    _left_out(console, print_table(console, "Checks", columns, rows))
    refuted = sum(not c.ok for c in checks)
    verdict = "every prediction held" if not refuted else f"{refuted} prediction(s) refuted"
    say(console, Text(verdict, style="bold green" if not refuted else "bold red"))


def _probe_text(r: RankResult) -> str:
    pr = r.plan.probe
    return "-" if pr is None else f"{pr.predicted_max_batch:,} / {pr.measured_max_batch:,}"


def render_ranks(report: RanksReport, units: str = "iec", console: Console | None = None) -> None:
    """A multi-rank verify: one row per rank (its layers, heads, predicted and measured bytes, fit, probe),
    each rank's notes, the deployment, then every check."""
    console = console or stdout_console()
    world = len(report.ranks)
    say(
        console,
        Text(
            f"{report.name} · {report.engine} · tp {report.tp} x pp {report.pp} = {world} ranks on "
            f"{report.device} ({report.backend}, started by {report.launcher}) · {report.wall_seconds:.2f} s",
            style="bold cyan",
        ),
    )
    first = report.ranks[0].report.device
    same_cap = len({r.report.device.cap_bytes for r in report.ranks}) == 1
    cap = f" · {first.cap_note}" if first.cap_note and same_cap else " · per-rank caps: see 'may use'"
    say(console, f"{first.name}, torch {first.torch_version}{cap if first.cap_bytes is not None else ''}")
    say(console)
    rank_columns = (
        Column("rank"),
        Column("tp", drop=4),
        Column("pp", drop=4),
        Column("layers", right=False),
        Column("holds", right=False, drop=5, squeeze=16),
        Column("device", right=False, drop=6),
        Column("predicted"),
        Column("measured"),
        Column("weights", drop=3),
        Column("may use", drop=2),
        Column("fits (predicted)", drop=1),
        Column("fits"),
        Column("max batch (predicted / probed)", drop=7),
    )
    rank_rows = []
    for r in report.ranks:
        p = r.plan
        rank_rows.append(
            (
                str(r.rank),
                str(r.tp_rank),
                str(r.pp_rank),
                r.layer_range,
                "; ".join(r.holds) or "-",
                r.report.device.device,
                f"{p.predicted_bytes:,}",
                "-" if p.measured is None else f"{p.measured.cache_tensor_bytes:,}",
                human_bytes(p.weights_bytes, units),
                human_bytes(p.available_bytes, units),
                "yes" if p.predicted_fits else "no",
                "yes" if p.fits else "OUT OF MEMORY",
                _probe_text(r),
            )
        )
    _left_out(console, print_table(console, "Ranks", rank_columns, rank_rows))
    for r in report.ranks:
        p = r.plan
        notes = [p.note] if p.note else []
        if p.out_of_memory is not None:
            notes.append(p.out_of_memory.describe())
        if p.measured is not None:
            notes += list(p.measured.notes)
        if p.timing is not None and p.timing.median_seconds is not None:
            notes.append(f"decode step {p.timing.median_seconds * 1e3:,.2f} ms over {p.timing.layers} layers")
        for note in notes:
            say(console, Text(f"  rank {r.rank} (pid {r.pid}): {note}", style="dim"))
    measured_total = sum(r.cache_bytes for r in report.ranks)
    say(
        console,
        f"deployment: predicted {exact_and_human(report.predicted_deployment_bytes, units)}, the ranks hold "
        f"{exact_and_human(measured_total, units)}",
    )
    for r in report.out_of_memory:
        say(console, Text(f"rank {r.rank} ran out of memory: the plan does not fit on its device", style="bold"))
    say(console)
    _render_checks(console, report.checks)


def render_report(report: object, units: str = "iec") -> None:
    """Render any command's report as text: the one entry the CLI calls (kvplan/cli/emit.py). Keyed by the
    report's class name, so rendering a size report imports neither the solver nor verify."""
    renderers: dict[str, Callable[[Any, str], None]] = {
        "SizeReport": render_size,
        "CapacityReport": render_capacity,
        "FitReport": render_fit,
        "PickGReport": render_pick_g,
        "VerifyReport": render_verify,
        "RanksReport": render_ranks,
    }
    renderers[type(report).__name__](report, units)

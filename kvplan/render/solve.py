"""``kvplan pick-g`` and ``kvplan fit``: the budget per GPU, every G with its numbers, the ways to make a G
fit, the memory chart, and what fits on the GPUs asked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvplan.errors import Param, spell
from kvplan.layout import CacheLayout
from kvplan.render.capacity import render_launch
from kvplan.render.console import Column, _left_out, print_table, say, stdout_console
from kvplan.units import exact_and_human, human_bytes

if TYPE_CHECKING:
    from kvplan.gpus import Budget, GpuSelection
    from kvplan.solver import Chart, FitReport, GpusAnswer, Lever, PickGCell, PickGReport, Way


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
    limit = report.context_limit.tokens if report.context_limit is not None else None
    for k, series in enumerate(chart.series):
        choice = report.choice(series.g)
        if series.max_ctx is None:
            reach = "fits at any context"
        elif series.max_ctx == 0:
            reach = "does not fit at any context"
        else:
            reach = f"fits up to {series.max_ctx:,} tokens"
        if limit is not None and (series.max_ctx is None or series.max_ctx > limit):
            reach = f"{reach} by memory; the model's limit is {limit:,}"
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

"""``kvplan verify``: the progress bar, the plans measured on a device (or on each rank), and the checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from kvplan.render.console import Column, _left_out, print_table, say, stderr_console, stdout_console
from kvplan.units import exact_and_human, human_bytes

if TYPE_CHECKING:
    from rich.progress import Progress

    from kvplan.verify import Check, VerifyReport
    from kvplan.verify.ranks import RankResult, RanksReport


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

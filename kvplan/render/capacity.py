"""``kvplan capacity``: what an engine's KV pool holds; and the launch command that capacity, pick-g and fit
print."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kvplan.plan import CapacityReport
from kvplan.render.console import say, shell_lines, stdout_console
from kvplan.units import exact_and_human


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

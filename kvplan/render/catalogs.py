"""``kvplan models`` and ``kvplan gpus``: the bundled catalogs as tables."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from kvplan.errors import Param, spell
from kvplan.plan import CatalogRow
from kvplan.render.console import _KIND_SHORT, Column, _left_out, print_table, say, stdout_console
from kvplan.units import human_bytes

if TYPE_CHECKING:
    from kvplan.gpus import GpuRow


def _kinds_text(kinds: Iterable[str]) -> str:
    return "+".join(_KIND_SHORT.get(k, k) for k in kinds)


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

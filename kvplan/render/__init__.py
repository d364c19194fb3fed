"""Human output: rich tables and the arithmetic, in IEC (GiB = 2^30) or SI (GB = 10^9) units.

The only package that prints. Data goes to stdout, messages to stderr. Byte counts are always shown exact
(``1,342,177,280 B``) beside their converted, labelled form; conversion happens only here.

One module per concern: ``console`` (the safe console, wrapping, tables, stderr messages), ``size``,
``catalogs`` (models, gpus), ``solve`` (pick-g, fit), ``capacity`` (and the launch command), ``verify``.
:func:`render_report` picks the renderer by the report's class name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvplan.render.capacity import render_capacity, render_launch
from kvplan.render.catalogs import render_gpus, render_models
from kvplan.render.console import (
    Column,
    SafeConsole,
    debug_enabled,
    emit,
    escape_control,
    print_error,
    print_info,
    print_note,
    print_table,
    print_warnings,
    say,
    shell_lines,
    stderr_console,
    stdout_console,
)
from kvplan.render.size import (
    print_explanation,
    render_breakdown,
    render_engine,
    render_size,
    render_spectrum,
    shape_line,
)
from kvplan.render.solve import (
    chart_lines,
    lever_text,
    render_chart,
    render_fit,
    render_g_matrix,
    render_g_table,
    render_pick_g,
    render_recommendation,
    render_way,
)
from kvplan.render.verify import render_ranks, render_verify, verify_progress
from kvplan.units import product_text  # as before the split: tests/test_formula.py imports it from here

__all__ = [
    "Column",
    "SafeConsole",
    "chart_lines",
    "debug_enabled",
    "emit",
    "escape_control",
    "lever_text",
    "print_error",
    "print_explanation",
    "print_info",
    "print_note",
    "print_table",
    "print_warnings",
    "product_text",
    "render_breakdown",
    "render_capacity",
    "render_chart",
    "render_engine",
    "render_fit",
    "render_g_matrix",
    "render_g_table",
    "render_gpus",
    "render_launch",
    "render_models",
    "render_pick_g",
    "render_ranks",
    "render_recommendation",
    "render_report",
    "render_size",
    "render_spectrum",
    "render_verify",
    "render_way",
    "say",
    "shape_line",
    "shell_lines",
    "stderr_console",
    "stdout_console",
    "verify_progress",
]


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

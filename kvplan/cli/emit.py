"""The tail every command shares: what the reader did not understand on stderr, then the result, as JSON on
stdout (``--json``) or as text. JSON output imports neither rich nor the renderers."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kvplan.cli.options import Units
    from kvplan.layout import ConfigWarning


def warn(warnings: Sequence[ConfigWarning]) -> None:
    """One stderr line per warning (none: nothing is imported)."""
    if warnings:
        from kvplan.render import print_warnings

        print_warnings(warnings)


def write_json(document: object) -> None:
    """``document`` (a report, or schema.models / schema.gpus's) as JSON on stdout."""
    from kvplan import schema

    sys.stdout.write(schema.dump(document) + "\n")


def emit(report: object, *, json: bool, units: Units, warnings: Sequence[ConfigWarning] = ()) -> None:
    """Warnings, then the report as JSON or text."""
    warn(warnings)
    if json:
        write_json(report)
        return
    from kvplan.render import render_report

    render_report(report, units.value)

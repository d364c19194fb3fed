"""The typer app and the one place that maps kvplan's exceptions to a stderr line and an exit code.

A :class:`~kvplan.errors.KvplanError` prints one line on stderr and exits with its code (2 for user errors,
1 for refuted predictions / plans that do not fit); KVPLAN_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from kvplan.errors import KvplanError


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


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="kvplan")
    except KeyboardInterrupt:  # pragma: no cover - interactive
        raise SystemExit(130) from None

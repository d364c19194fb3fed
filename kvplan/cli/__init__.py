"""The ``kvplan`` command line: parses flags, calls the library, hands results to render. Nothing else.

:mod:`kvplan.cli.core` holds the typer app and maps errors to messages and exit codes in one place;
:mod:`kvplan.cli.options` declares the shared options once; one module per command group registers its commands.
``from kvplan.cli import app`` is the whole app, every command registered (in the order ``kvplan --help`` lists
them); the console script (:func:`main`) registers only the command it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvplan.cli.core import COMMAND_MODULES, load_commands, main
from kvplan.errors import ExitCode

if TYPE_CHECKING:
    import typer

    app: typer.Typer

__all__ = ["COMMAND_MODULES", "ExitCode", "app", "main"]


def __getattr__(name: str) -> Any:
    if name == "app":
        return load_commands(None)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

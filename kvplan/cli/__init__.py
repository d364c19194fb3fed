"""The ``kvplan`` command line: parses flags, calls the library, hands results to render. Nothing else.

:mod:`kvplan.cli.app` holds the typer app and maps errors to messages and exit codes in one place;
:mod:`kvplan.cli.options` declares the shared options once; one module per command group registers its commands
(imported here in the order ``kvplan --help`` lists them).
"""

from __future__ import annotations

from importlib import import_module

from kvplan.cli.app import app, main
from kvplan.errors import ExitCode

#: Command modules, in the order ``kvplan --help`` lists their commands (importing one registers its commands).
COMMAND_MODULES = ("size", "catalogs", "solve", "capacity", "verify")
for _name in COMMAND_MODULES:
    import_module(f"kvplan.cli.{_name}")

__all__ = ["ExitCode", "app", "main"]

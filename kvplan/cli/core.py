"""The typer app and the one place that maps kvplan's exceptions to a stderr line and an exit code.

A :class:`~kvplan.errors.KvplanError` prints one line on stderr and exits with its code (2 for user errors,
1 for refuted predictions / plans that do not fit); KVPLAN_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kvplan.errors import ExitCode, KvplanError, spelling


class KvplanGroup(TyperGroup):
    """Maps kvplan's exceptions to one stderr line and a named exit code."""

    def invoke(self, ctx: Any) -> Any:  # typer vendors its own click; the Context type is private
        from kvplan.cli.flags import FLAGS

        try:
            with spelling(FLAGS):  # the core's messages name flags, spelled as cli/flags.py says
                return super().invoke(ctx)
        except KvplanError as err:
            from kvplan.cli.flags import cli_message
            from kvplan.render import debug_enabled, print_error

            if debug_enabled():
                import traceback

                traceback.print_exc()
            print_error(cli_message(err))
            ctx.exit(int(err.exit_code))


app = typer.Typer(
    cls=KvplanGroup,
    name="kvplan",
    help="Exact KV-cache memory planning: bytes per token, per sequence and per GPU, and which G to pick.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: it wraps to the terminal and never cuts an option name to "…" (rich's panels do at
    # 80 columns, where --enable-prefix-caching/--no-enable-prefix-caching leaves no room for its help).
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from kvplan import __version__

        typer.echo(f"kvplan {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print kvplan's version and exit."),
    ] = False,
) -> None:
    """Exact KV-cache memory planning: bytes per token, per sequence and per GPU, and which G to pick."""


#: Command -> the module that registers it, in the order ``kvplan --help`` lists them.
COMMANDS = {
    "size": "size",
    "models": "catalogs",
    "gpus": "catalogs",
    "pick-g": "solve",
    "fit": "solve",
    "capacity": "capacity",
    "verify": "verify",
}
#: The command modules, in that order (importing one registers its commands).
COMMAND_MODULES = tuple(dict.fromkeys(COMMANDS.values()))


def load_commands(command: str | None) -> typer.Typer:
    """The app with ``command``'s module registered, or every command module when ``command`` is None or not a
    command (``kvplan --help``, a typo: the full list answers). Registering only the command a run needs saves
    typer building every other command's parameters, about a sixth of a planning command's start."""
    from importlib import import_module

    for name in (COMMANDS[command],) if command in COMMANDS else COMMAND_MODULES:
        import_module(f"kvplan.cli.{name}")
    return app


#: Write failures of stdout: a closed pipe, a full disk (/dev/full), a vanished terminal or file system.
_OUTPUT_ERRNOS = frozenset({errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EBADF, errno.EFBIG, errno.EDQUOT})


def main() -> None:
    """Console-script entry point. A closed or full stdout ends the run cleanly, not with a traceback."""
    if sys.stdout is None:  # started with stdout closed (`kvplan ... >&-`): Python leaves no stream at all
        raise SystemExit(_output_failed(OSError(errno.EBADF, "stdout is closed")))
    try:
        try:
            load_commands(sys.argv[1] if len(sys.argv) > 1 else None)(prog_name="kvplan")
        finally:
            if sys.stdout is not None:
                sys.stdout.flush()
    except KeyboardInterrupt:  # pragma: no cover - interactive
        raise SystemExit(130) from None
    except OSError as err:
        if err.errno not in _OUTPUT_ERRNOS:
            raise
        raise SystemExit(_output_failed(err)) from None


def _output_failed(err: OSError) -> int:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again (the Python docs' "Note on
    SIGPIPE", signal module), say what happened unless the reader just went away, and return the exit code."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    if err.errno == errno.EPIPE:
        return 1  # the reader closed the pipe (`kvplan models | head -1`): nothing to say
    with contextlib.suppress(OSError, AttributeError):  # stderr may be closed too
        sys.stderr.write(f"kvplan: error: cannot write the output to stdout: {err.strerror or err}\n")
        sys.stderr.flush()
    return int(ExitCode.USAGE)

"""The core names parameters, the CLI names flags: library errors carry a Param, kvplan/cli/flags.py maps each
to its flag in one table, every flag in that table exists, and every flag any message in the package names is
one kvplan has (or another tool's, named as such)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import kvplan
from kvplan.cli import app
from kvplan.cli.flags import FLAGS, cli_message
from kvplan.errors import OptionError, Param

ROOT = Path(__file__).parent.parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
#: Flags of other tools (the engines themselves, pip) that kvplan's messages cite: not kvplan options.
OTHER_TOOLS_FLAGS = {
    "--page-size": "SGLang",
    "--mem-fraction-static": "SGLang",
    "--force-reinstall": "pip",
    "--index-url": "pip",
}


def kvplan_flags() -> set[str]:
    group = typer.main.get_command(app)
    flags = {"--help", "--version"}
    for command in group.commands.values():  # type: ignore[attr-defined]
        for param in command.params:
            flags.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    return flags


def messages(path: Path) -> list[str]:
    """String literals of a module that are not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        n.value
        for n in ast.walk(tree)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings
    ]


def test_every_param_has_a_spelling() -> None:
    assert set(FLAGS) == set(Param)


def test_every_flag_in_the_table_exists() -> None:
    real = kvplan_flags()
    for param, flag in FLAGS.items():
        if flag is not None and flag.startswith("--"):
            assert flag in real, (param, flag)


def test_every_flag_a_message_names_exists() -> None:
    real = kvplan_flags() | set(OTHER_TOOLS_FLAGS)
    named = {}
    for path in (ROOT / "kvplan").rglob("*.py"):
        for text in messages(path):
            for flag in FLAG.findall(text):
                named.setdefault(flag, path.relative_to(ROOT).as_posix())
    missing = {flag: where for flag, where in named.items() if flag not in real}
    assert not missing, missing


def test_the_check_can_fail() -> None:
    assert FLAG.findall("use --tp 2 or --repeats 3") == ["--tp", "--repeats"]
    assert not {"--tp", "--repeats", "--weight-dtype"} & kvplan_flags()


def test_a_library_error_names_the_parameter_and_the_cli_the_flag() -> None:
    with pytest.raises(OptionError) as err:
        kvplan.fit("meta-llama/Meta-Llama-3.1-8B", gpu="h100", weights_dtype="foo")
    assert err.value.param is Param.WEIGHTS_DTYPE
    assert str(err.value).startswith("weights_dtype: unknown dtype 'foo'")
    assert cli_message(err.value).startswith("--dtype: unknown dtype 'foo'")


def test_fit_dtype_foo_names_dtype() -> None:
    result = CliRunner().invoke(app, ["fit", "meta-llama/Meta-Llama-3.1-8B", "--gpu", "h100", "--dtype", "foo"])
    assert result.exit_code == 2
    assert result.stderr.startswith("kvplan: error: --dtype: unknown dtype 'foo'")

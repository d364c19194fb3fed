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
from kvplan.engines import EngineOptions
from kvplan.engines.registry import ENGINE_CLASSES
from kvplan.errors import OptionError, Param

ROOT = Path(__file__).parent.parent
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9_-]*")
#: Flags of other tools (the engines themselves, pip) that kvplan's messages cite: not kvplan options.
OTHER_TOOLS_FLAGS = {
    "--page-size": "SGLang",
    "--mem-fraction-static": "SGLang",
    "--speculative-config": "vLLM (the EAGLE draft checkpoint a launch note asks for)",
    "--spec-draft-n-max": "llama.cpp",
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


def server_flags(path: Path) -> set[str]:
    """The server flags of the engines a module defines: an engine's module may name its own server's flags
    (launch commands, notes), no other module may."""
    module = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
    return {flag for cls in ENGINE_CLASSES.values() if cls.__module__ == module for flag in cls.SERVER_FLAGS}


def test_every_flag_a_message_names_exists() -> None:
    real = kvplan_flags() | set(OTHER_TOOLS_FLAGS)
    missing: dict[str, str] = {}
    for path in (ROOT / "kvplan").rglob("*.py"):
        own = server_flags(path)
        for text in messages(path):
            for flag in FLAG.findall(text):
                if flag not in real and flag not in own:
                    missing.setdefault(flag, path.relative_to(ROOT).as_posix())
    assert not missing, missing


def test_the_core_writes_no_flag() -> None:
    """Outside kvplan/cli/ no message spells one of kvplan's flags: the core names a Param through
    kvplan.errors.spell, and the CLI's one table (cli/flags.py) says how it is written. An engine's module may
    name its own server's flags (its launch command), which can coincide with kvplan's (vLLM's --max-model-len)."""
    ours = kvplan_flags() - {"--help", "--version"}
    written: dict[str, str] = {}
    for path in (ROOT / "kvplan").rglob("*.py"):
        if "cli" in path.relative_to(ROOT).parts:
            continue
        own = server_flags(path)
        for text in messages(path):
            for flag in FLAG.findall(text):
                if flag in ours and flag not in own:
                    written.setdefault(flag, path.relative_to(ROOT).as_posix())
    assert not written, written


def test_library_messages_name_parameters_and_cli_messages_flags() -> None:
    model = "meta-llama/Meta-Llama-3.1-8B"
    with pytest.raises(OptionError) as err:
        kvplan.capacity(model)
    assert err.value.problem == "say where the KV memory comes from: gpu (e.g. h100) or kv_memory (e.g. 8GiB)"
    result = CliRunner().invoke(app, ["capacity", model])
    assert result.exit_code == 2
    assert "--gpu: say where the KV memory comes from: --gpu (e.g. h100) or --kv-memory (e.g. 8GiB)" in result.stderr
    with pytest.raises(OptionError) as again:  # the CLI's spelling lasts for its command only
        kvplan.capacity(model)
    assert "--gpu" not in again.value.problem


@pytest.mark.parametrize("engine", ["vllm", "sglang", "llama.cpp", "trtllm"])
@pytest.mark.parametrize(
    "model", ["meta-llama/Meta-Llama-3.1-8B", "deepseek-ai/DeepSeek-V2-Lite", "google/gemma-3-27b-it"]
)
def test_every_flag_of_a_launch_command_is_the_engines(engine: str, model: str) -> None:
    """The launch command fit prints uses only flags its engine's module lists (and cites) as the server's."""
    layers_split = engine == "llama.cpp"  # llama.cpp splits layers, not heads, and has no fp8 KV
    report = kvplan.fit(
        model,
        gpu="h200" if layers_split else "8xh200",
        ctx=8192,
        engine=engine,
        kv_cache_dtype="q8_0" if layers_split else "fp8",
        options=EngineOptions(pipeline_parallel_size=4 if layers_split else 1, n_ubatch=256),
    )
    assert report.launch_command, (engine, model)
    args = report.launch_command
    if args[:2] == ("python", "-m"):  # SGLang's server is a module: python's -m, then the server's flags
        args = args[3:]
    used = {arg for arg in args if arg.startswith("-")}
    assert used <= ENGINE_CLASSES[engine].SERVER_FLAGS, used - ENGINE_CLASSES[engine].SERVER_FLAGS


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

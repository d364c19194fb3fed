"""Every command reads at 80 columns and at 200: no line wider than the terminal, no cell cut to an ellipsis.

Tables choose their columns by width (and say which they left out), prose wraps with a hanging indent. Errors
stay one line on stderr by design and are not checked here.
"""

from __future__ import annotations

import shlex

import pytest
from typer.testing import CliRunner

from kvplan.cli import app

from .conftest import FIXTURES

COMMANDS = (
    "size meta-llama/Llama-2-70b",
    "size openai/gpt-oss-120b --ctx 128K --engine vllm -tp 2",
    "size Qwen/Qwen3-Next-80B-A3B --ctx 32K --engine sglang",
    "size deepseek-ai/DeepSeek-V3.2 --ctx 32K --engine trtllm",
    "size meta-llama/Llama-4-Scout-17B-16E-Instruct --ctx 1M --engine llama.cpp",
    "models",
    "gpus",
    "pick-g",
    "pick-g Qwen/Qwen3-8B --gpu h100 --ctx 32K --batch 16",
    "pick-g meta-llama/Llama-2-70b --gpu 8xh100 --ctx 32K --batch 64 --kv-cache-dtype fp8",
    "pick-g --ctx 4K,32K,128K --batch 1,8,32",
    "pick-g --chart",
    "fit meta-llama/Llama-2-70b --gpu h100 --ctx 32768",
    "fit meta-llama/Llama-3.1-8B --gpu h100",
    "fit Qwen/Qwen3-Next-80B-A3B --gpu 4xh100 --ctx 8K,256K --batch 1,64",
    "capacity openai/gpt-oss-120b --gpu h100 --ctx 128K",
    "capacity meta-llama/Llama-3.1-8B --kv-memory 10GiB --engine llama.cpp",
    "capacity nvidia/Nemotron-H-56B-Base-8K --gpu 2xh100 --engine sglang",
    *(f"{command} --help" for command in ("size", "models", "gpus", "pick-g", "fit", "capacity", "verify")),
)


def render(command: str, width: int) -> str:
    env = {"COLUMNS": str(width), "LINES": "50", "NO_COLOR": "1", "TERM": "dumb"}
    result = CliRunner().invoke(app, shlex.split(command), env=env)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def problems(text: str, width: int) -> list[str]:
    return [line for line in text.splitlines() if len(line.rstrip()) > width or "…" in line]


@pytest.mark.parametrize("width", [80, 200])
@pytest.mark.parametrize("command", COMMANDS)
def test_command_reads_at_width(command: str, width: int) -> None:
    text = render(command, width)
    assert text.strip()
    assert problems(text, width) == []


@pytest.mark.parametrize("width", [80, 200])
def test_verify_reads_at_width(width: int) -> None:
    pytest.importorskip("torch")
    command = f"verify {FIXTURES / 'gqa'} --device cpu --ctx 256 --max-bytes 100MiB --timing"
    text = render(command, width)
    assert "every prediction held" in text
    assert problems(text, width) == []


def test_the_check_can_fail() -> None:
    """A table squeezed by rich (no column choice) at 80 columns is caught."""
    import io

    from rich.console import Console
    from rich.table import Table

    console = Console(width=80, record=True, file=io.StringIO())
    table = Table(box=None)
    for name in ("a", "b", "c"):
        table.add_column(name, no_wrap=True)
    table.add_row("x" * 40, "y" * 40, "z" * 40)
    console.print(table)
    assert problems(console.export_text(), 80)


def test_narrow_output_says_what_it_left_out() -> None:
    text = render("models", 80)
    assert "left out at 80 columns: family" in text
    assert "= Llama-2-70b, Llama-2-70b-chat" in text  # the aliases it accepts
    wide = render("models", 200)
    assert "left out" not in wide
    assert "bfloat16" in wide


def test_pick_g_quality_labels_have_a_legend() -> None:
    text = render("pick-g Qwen/Qwen3-8B --gpu h100 --ctx 32K --batch 16", 80)
    assert " 4  GQA" in text and "yes <-" in text
    assert "near-MHA = GQA with at most 8 query heads per KV head" in " ".join(text.split())

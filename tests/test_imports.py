"""`size`, `pick-g` and `fit` stay fast: they never import torch, transformers or huggingface_hub's download
machinery."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from kvplan.cli import app
try:
    app(args=sys.argv[1:], prog_name="kvplan", standalone_mode=False)
finally:
    sys.stdout.flush()
    print("\\nMODULES=" + json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def loaded_modules(*args: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("MODULES="))
    return set(json.loads(line.removeprefix("MODULES=")))


@pytest.mark.parametrize(
    "args",
    [
        ("size", "meta-llama/Llama-2-70b"),
        ("size", "Qwen/Qwen3-8B", "--json"),
        ("models",),
        ("pick-g",),
        ("pick-g", "--json", "--chart"),
        ("fit", "meta-llama/Llama-2-70b", "--gpu", "h100", "--ctx", "32768"),
        ("fit", "Qwen/Qwen3-8B", "--gpu", "a100-80g", "--json"),
    ],
)
def test_no_heavy_imports(args: tuple[str, ...]) -> None:
    modules = loaded_modules(*args)
    for heavy in ("torch", "transformers", "huggingface_hub.file_download", "numpy"):
        assert heavy not in modules, heavy


def test_plain_size_does_not_need_pydantic() -> None:
    assert "pydantic" not in loaded_modules("size", "meta-llama/Llama-2-70b")


def test_size_json_imports_nothing_beyond_the_serializer() -> None:
    """--json adds kvplan.schema (stdlib json and dataclasses) and nothing else: no pydantic."""
    plain = loaded_modules("size", "meta-llama/Llama-2-70b")
    as_json = loaded_modules("size", "meta-llama/Llama-2-70b", "--json")
    assert as_json - plain == {"kvplan.schema"}


def test_the_console_script_registers_only_the_command_it_runs() -> None:
    """kvplan.cli.main imports the size command's module and no other command's (typer then builds one
    command's parameters, not seven); `from kvplan.cli import app` is still the whole app."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.argv = ['kvplan', 'size', 'meta-llama/Llama-2-70b', '--json']\n"
            "from kvplan.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('kvplan.cli.')), file=sys.stderr)",
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"HF_HUB_OFFLINE": "1", "PATH": ""},
    )
    assert json.loads(done.stdout)["total_bytes"] == 2 * 80 * 8 * 128 * 2 * 4096  # Llama-2-70B, fp16, ctx 4,096
    commands = {m.rsplit(".", 1)[1] for m in eval(done.stderr.strip().splitlines()[-1])}
    assert commands & {"catalogs", "solve", "capacity", "verify"} == set()
    assert "size" in commands
    import typer

    from kvplan.cli import app

    every = {"size", "models", "gpus", "pick-g", "fit", "capacity", "verify"}
    assert set(typer.main.get_command(app).commands) == every  # type: ignore[attr-defined]

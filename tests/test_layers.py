"""The layers hold: pyproject's import-linter contract (resolve -> readers -> layout -> formula / engines -> solver
-> schema / render -> cli) is kept, and the same check breaks when the layers are stated upside down (so it can
fail)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
pytest.importorskip("importlinter", reason="import-linter is in the dev extra")


def lint(config: Path) -> subprocess.CompletedProcess[str]:
    code = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run(
        [sys.executable, "-c", code, "--config", str(config), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def write_config(path: Path, layers: list[str]) -> Path:
    lines = ["[importlinter]", "root_package = kvplan", "", "[importlinter:contract:layers]", "name = layers"]
    lines += ["type = layers", "containers = kvplan", "layers =", *(f"    {layer}" for layer in layers)]
    path.write_text("\n".join(lines) + "\n")
    return path


def contract_layers() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = data["tool"]["importlinter"]["contracts"]
    layers: list[str] = contract["layers"]
    return layers


def test_the_layer_contract_is_kept(tmp_path: Path) -> None:
    done = lint(write_config(tmp_path / "ok.ini", contract_layers()))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_breaks_when_the_layers_are_reversed(tmp_path: Path) -> None:
    done = lint(write_config(tmp_path / "reversed.ini", contract_layers()[::-1]))
    assert done.returncode != 0
    assert "BROKEN" in done.stdout

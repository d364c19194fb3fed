"""Golden outputs: a fixed set of commands (every README example; size / capacity / fit / pick-g for one model per
attention family under every engine) prints exactly what tests/golden/ holds, byte for byte: stdout, stderr and
the exit code. A refactor must leave them alone; a change that means to move a number regenerates them with
``python scripts/golden.py`` in the same commit and says which outputs changed and why."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).parent.parent


def load_golden() -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden", ROOT / "scripts" / "golden.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GOLDEN = load_golden()
FILES: dict[str, str] = GOLDEN.expected()


@pytest.mark.parametrize("name", sorted(FILES))
def test_golden_output(name: str) -> None:
    path = GOLDEN.GOLDEN / name
    assert path.exists(), f"missing tests/golden/{name}: run python scripts/golden.py"
    assert GOLDEN.run(FILES[name]) == path.read_text(), f"{FILES[name]} changed: see python scripts/golden.py --check"


def test_no_stray_golden_files() -> None:
    stray = sorted(p.name for p in GOLDEN.GOLDEN.glob("*.txt") if p.name not in FILES)
    assert not stray, f"golden files no command writes: {stray}"


def test_golden_set_covers_every_engine_and_readme_example() -> None:
    commands = set(FILES.values())
    assert set(GOLDEN.readme_commands()) <= commands
    for engine in GOLDEN.ENGINES:
        assert any(f"--engine {engine} --json" in c and c.startswith("kvplan size") for c in commands), engine

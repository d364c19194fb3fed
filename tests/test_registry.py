"""The engine registry: a new engine is one module (tests/toy_engine.py) plus one registry line, and then size,
capacity, verify and --help all use it; a class that leaves out a piece is refused at registration."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.engines import registry
from kvplan.engines.base import Engine, Workload
from kvplan.engines.budget import KvBudget

from .conftest import FIXTURES
from .toy_engine import ToyEngine

ROOT = Path(__file__).parent.parent
GQA = str(FIXTURES / "gqa")  # 4 layers, 4 KV heads, head_dim 64, bf16: 4 x 2 x 4 x 64 x 2 = 4,096 B per token
runner = CliRunner()


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "ENGINE_CLASSES", dict(registry.ENGINE_CLASSES))
    registry.register(ToyEngine)  # the one registry line


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.usefixtures("toy")
def test_size_uses_the_toy_engine() -> None:
    code, out, err = run("size", GQA, "--ctx", "250", "--engine", "toy", "--json")
    assert code == 0, err
    engine = json.loads(out)["engine"]
    assert engine["name"] == "toy"
    assert engine["per_gpu_bytes"] == 300 * 4096  # 250 tokens held in 3 slabs of 100


@pytest.mark.usefixtures("toy")
def test_capacity_uses_the_toy_engine() -> None:
    code, out, err = run("capacity", GQA, "--kv-memory", "1MiB", "--ctx", "250", "--engine", "toy", "--json")
    assert code == 0, err
    cap = json.loads(out)
    assert cap["engine"] == "toy"
    assert cap["num_blocks"] == 2**20 // (100 * 4096)  # 2 slabs
    assert cap["kv_tokens"] == 200


@pytest.mark.usefixtures("toy")
def test_verify_allocates_the_toy_layout() -> None:
    pytest.importorskip("torch")
    args = ("verify", "--device", "cpu", "--model", GQA, "--ctx", "250", "--engine", "toy", "--no-timing")
    code, out, err = run(*args, "--no-probe", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] is True
    (plan,) = report["plans"]
    assert plan["engine"] == "toy"
    assert plan["measured_bytes"] == 300 * 4096


def test_help_lists_the_toy_engine() -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from tests.toy_engine import ToyEngine; from kvplan.engines.registry import register; register(ToyEngine);"
        "from kvplan.cli import app; app([sys.argv[2], '--help'], prog_name='kvplan')"
    )
    for command in ("size", "capacity", "verify"):
        done = subprocess.run(
            [sys.executable, "-c", code, str(ROOT), command],
            capture_output=True,
            text=True,
            check=False,
            env={"COLUMNS": "200", "PATH": "", "HF_HUB_OFFLINE": "1"},
        )
        assert done.returncode == 0, done.stderr
        assert "toy" in done.stdout, command


def test_an_engine_without_a_capacity_rule_is_refused() -> None:
    class Half(Engine):
        name = "half"
        summary = "no capacity, no tensors"
        label = "half"

        def kv_budget(
            self,
            usable: int,
            weights: int,
            reserve: int | None,
            fraction: Fraction | None,
            work: Workload | None = None,
        ) -> KvBudget:
            return self.whole_gpu_budget(usable, weights, reserve, fraction, work)

    with pytest.raises(TypeError, match="capacity, launch_command, stage_tensors"):
        registry.register(Half)


def test_an_engine_without_a_label_or_with_a_taken_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "ENGINE_CLASSES", dict(registry.ENGINE_CLASSES))

    class Nameless(ToyEngine):
        label = ""

    class Clash(ToyEngine):
        name = "vllm"

    class Undocumented(ToyEngine):
        name = "undocumented"
        rules_text = ""

    with pytest.raises(TypeError, match="no label"):
        registry.register(Nameless)
    with pytest.raises(TypeError, match="no rules_text"):
        registry.register(Undocumented)
    with pytest.raises(TypeError, match="vllm already names another engine"):
        registry.register(Clash)


def test_every_builtin_engine_states_every_piece() -> None:
    for cls in registry.BUILTIN:
        assert not getattr(cls, "__abstractmethods__", None), cls
        for piece in ("capacity", "kv_budget", "stage_tensors", "launch_command", "rules_text"):
            assert piece in vars(cls), f"{cls.__name__} inherits {piece} instead of stating it"

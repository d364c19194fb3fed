"""Golden outputs: the text and ``--json`` output of a fixed set of commands, saved so a refactor that changes a
number or a layout is caught byte for byte (tests/test_golden.py).

``python scripts/golden.py`` regenerates tests/golden/ (and deletes files no command writes any more);
``--check`` exits 1 when one differs. Commands run in-process through typer's CliRunner, from the repository
root, offline, with a fixed width and an empty user config dir. Regenerate only in a commit that means to change
an output, and say in its message which outputs changed and why.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
ENGINES = ("ideal", "hf", "vllm", "sglang", "llama.cpp", "trtllm")

# One model per attention family (bundled configs, and one fixture for the family no bundled model has), each
# with the GPU it is planned on and whether pick-g applies (a model with per-head K/V to choose G for).
MODELS: tuple[tuple[str, str, bool], ...] = (
    ("meta-llama/Meta-Llama-3.1-8B", "h100", True),  # GQA
    ("tiiuae/falcon-7b", "a100-80g", True),  # MQA
    ("openai/gpt-oss-20b", "h100", True),  # sliding + sinks
    ("google/gemma-2-9b-it", "l40s", True),  # alternating sliding
    ("google/gemma-3-27b-it", "h100", False),  # 5:1 sliding pattern
    ("mistralai/Mistral-7B-v0.1", "a100-80g", True),  # sliding everywhere
    ("deepseek-ai/DeepSeek-V3", "8xh200", False),  # MLA
    ("deepseek-ai/DeepSeek-V3.2", "8xb200", False),  # MLA + indexer
    ("Qwen/Qwen3-Next-80B-A3B", "4xh100", False),  # hybrid: gated delta net + full
    ("nvidia/Nemotron-H-56B-Base-8K", "2xh100", False),  # hybrid: mamba2 + full
    ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "4xh100", False),  # chunked + no-rope full
    ("tests/fixtures/configs/gemma3n_shared", "h100", False),  # shared-KV layers
)

ENV = {"COLUMNS": "120", "LINES": "50", "HF_HUB_OFFLINE": "1", "NO_COLOR": "1", "TERM": "dumb", "KVPLAN_DEBUG": ""}


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"<!-- output: (kvplan [^>]+?) -->", text)


def model_commands() -> Iterator[str]:
    for i, (model, gpu, pick) in enumerate(MODELS):
        rotated = ENGINES[i % len(ENGINES)]
        other = ENGINES[(i + 3) % len(ENGINES)]
        yield f"kvplan size {model} --ctx 32K"
        yield f"kvplan size {model} --ctx 32K --engine {rotated}"
        for engine in ENGINES:
            yield f"kvplan size {model} --ctx 32K --batch 4 --engine {engine} --json"
        yield f"kvplan capacity {model} --gpu {gpu} --ctx 8K --engine {rotated}"
        for engine in (rotated, other):
            yield f"kvplan capacity {model} --gpu {gpu} --ctx 8K --engine {engine} --json"
        yield f"kvplan fit {model} --gpu {gpu} --ctx 8K --engine {other}"
        yield f"kvplan fit {model} --gpu {gpu} --ctx 4K,32K --batch 1,8 --engine {rotated} --json"
        if pick:
            yield f"kvplan pick-g --model {model} --gpu {gpu} --ctx 32K --batch 8 --engine {other} --json"


def extra_commands() -> list[str]:
    return [
        # The fit / capacity budget for TensorRT-LLM (issue 8: one budget rule).
        "kvplan fit meta-llama/Meta-Llama-3.1-8B --gpu h100 --ctx 8K --engine trtllm",
        "kvplan capacity meta-llama/Meta-Llama-3.1-8B --gpu h100 --ctx 8K --engine trtllm",
        "kvplan capacity meta-llama/Meta-Llama-3.1-8B --kv-memory 20GiB --ctx 8K --engine vllm --json",
        "kvplan pick-g --gpu a100-80g --ctx 4K,32K --batch 1,32",
        "kvplan pick-g --model meta-llama/Meta-Llama-3.1-8B --gpu h100 --ctx 32K --batch 8",
        "kvplan size meta-llama/Llama-2-70b --units si --kv-cache-dtype fp8",
        "kvplan size meta-llama/Meta-Llama-3.1-8B --engine vllm -tp 2 -pp 2 --ctx 8K",
        "kvplan size meta-llama/Meta-Llama-3.1-8B --engine llama.cpp --cache-type-k q8_0 --cache-type-v q4_0",
        "kvplan --help",
        *(f"kvplan {c} --help" for c in ("size", "models", "gpus", "pick-g", "fit", "capacity", "verify")),
        "kvplan models --json",
        "kvplan gpus",
        "kvplan gpus --json",
        # User mistakes: one line on stderr, exit 2.
        "kvplan size no-such-org/no-such-model",
        "kvplan size meta-llama/Meta-Llama-3.1-8B --engine nope",
        "kvplan size meta-llama/Meta-Llama-3.1-8B --ctx 12x",
        "kvplan size meta-llama/Meta-Llama-3.1-8B --kv-cache-dtype foo",
        "kvplan fit meta-llama/Meta-Llama-3.1-8B --gpu h100 --dtype foo",
        "kvplan fit meta-llama/Meta-Llama-3.1-8B --gpu nope",
        "kvplan capacity meta-llama/Meta-Llama-3.1-8B",
        "kvplan pick-g --model deepseek-ai/DeepSeek-V3 --gpu 8xh100",
    ]


def commands() -> list[str]:
    return [*readme_commands(), *model_commands(), *extra_commands()]


def slug(command: str) -> str:
    """A file name from the command's words (the command's short hash when they would be too long)."""
    words = re.sub(r"[^A-Za-z0-9.]+", "-", command.removeprefix("kvplan ")).strip("-") or "root"
    if len(words) > 100:
        words = words[:90] + "-" + hashlib.sha256(command.encode()).hexdigest()[:8]
    return words + ".txt"


def run(command: str) -> str:
    """The command's exit code, stdout and stderr, as the golden file holds them."""
    from typer.testing import CliRunner

    from kvplan.cli import app

    args = shlex.split(command)
    assert args[0] == "kvplan", command
    with tempfile.TemporaryDirectory() as home:
        env = {**ENV, "HF_HOME": f"{home}/hf", "KVPLAN_CONFIG_DIR": f"{home}/cfg", "XDG_CONFIG_HOME": f"{home}/x"}
        cwd = Path.cwd()
        os.chdir(ROOT)
        try:
            result = CliRunner().invoke(app, args[1:], env=env)
        finally:
            os.chdir(cwd)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return f"$ {command}\nexit {result.exit_code}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def expected() -> dict[str, str]:
    """File name -> command, for every golden file."""
    files = {slug(c): c for c in commands()}
    assert len(files) == len(commands()), "two golden commands map to one file name"
    return files


def main(argv: list[str]) -> int:
    os.environ["HF_HUB_OFFLINE"] = "1"
    files = expected()
    stale = []
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for name, command in files.items():
        path = GOLDEN / name
        fresh = run(command)
        if not path.exists() or path.read_text() != fresh:
            stale.append(name)
            if "--check" not in argv:
                path.write_text(fresh)
    extra = sorted(p.name for p in GOLDEN.glob("*.txt") if p.name not in files)
    if "--check" in argv:
        for name in stale + extra:
            print(f"golden output differs: tests/golden/{name}", file=sys.stderr)
        return 1 if stale or extra else 0
    for name in extra:
        (GOLDEN / name).unlink()
    print(f"{len(files)} golden outputs, {len(stale)} rewritten, {len(extra)} removed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

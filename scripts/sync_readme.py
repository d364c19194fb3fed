"""Regenerate the example output in README.md so it never drifts from what kvplan prints.

README blocks look like::

    <!-- output: kvplan size meta-llama/Llama-2-70b --ctx 4096 -->
    ```text
    ...
    ```

The engine table between ``<!-- engines -->`` and ``<!-- /engines -->`` is written from the engine registry:
each engine's name, the version its module reads, its ``rules_text`` and, as the worked example, the arithmetic
its own ``capacity`` prints for Llama-3.1-8B and 10 GiB of KV memory at 8,192 tokens.

``python scripts/sync_readme.py`` rewrites them; ``--check`` exits 1 when one is stale (tests/test_readme.py
runs the check). Commands run in-process, offline, at the width the README states: WIDTH columns.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
#: The width the README says its examples are rendered at.
WIDTH = 100
BLOCK = re.compile(r"(<!-- output: (?P<cmd>[^>]+?) -->\n```text\n)(?P<body>.*?)(```)", re.S)


def run(command: str) -> str:
    from typer.testing import CliRunner

    from kvplan.cli import app

    args = shlex.split(command)
    assert args[0] == "kvplan", command
    env = {"COLUMNS": str(WIDTH), "HF_HUB_OFFLINE": "1", "NO_COLOR": "1"}
    result = CliRunner().invoke(app, args[1:], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    text = result.stdout + result.stderr
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


ENGINES = re.compile(r"(<!-- engines -->\n)(?P<body>.*?)(<!-- /engines -->)", re.S)
#: The worked example every engine row computes: Llama-3.1-8B (32 layers, 8 KV heads, head_dim 128, bf16).
EXAMPLE_MODEL, EXAMPLE_MEMORY, EXAMPLE_CTX = "meta-llama/Meta-Llama-3.1-8B", 10 * 2**30, 8192


def engine_table() -> str:
    """The README's engine table, one row per registered engine, in registry order."""
    import kvplan
    from kvplan.engines.registry import ENGINE_CLASSES

    example = "worked example: 10 GiB of Llama-3.1-8B KV memory, 8,192-token requests"
    rows = [f"| engine | rules (version read) | {example} |", "|---|---|---|"]
    for name, cls in ENGINE_CLASSES.items():
        version = f" ({cls.VERSION})" if cls.VERSION else ""
        cap = kvplan.capacity(EXAMPLE_MODEL, kv_memory=EXAMPLE_MEMORY, max_model_len=EXAMPLE_CTX, engine=name)
        rows.append(f"| `{name}`{version} | {cls.rules_text} | {'; '.join(cap.capacity.lines)} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    text = ENGINES.sub(lambda m: m.group(1) + engine_table() + m.group(3), text)
    return BLOCK.sub(lambda m: m.group(1) + run(m.group("cmd")) + m.group(4), text)


def main(argv: list[str]) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    current = README.read_text()
    fresh = render(current)
    if "--check" in argv:
        if fresh != current:
            print("README.md output blocks are stale: run python scripts/sync_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

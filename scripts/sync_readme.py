"""Regenerate the example output in README.md so it never drifts from what kvplan prints.

README blocks look like::

    <!-- output: kvplan size meta-llama/Llama-2-70b --ctx 4096 -->
    ```text
    ...
    ```

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


def render(text: str) -> str:
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

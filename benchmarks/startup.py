"""Startup: `kvplan size meta-llama/Llama-2-70b` against transformers' AutoConfig on the same config folder.

Both are measured in this one run, as whole processes (interpreter start included), the median of N runs
after one warm-up each. Goal (issue 2): kvplan at most 0.25 s and at least 12x faster than the AutoConfig route.

    python benchmarks/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs" / "models" / "meta-llama" / "Llama-2-70b-chat-hf"


def kvplan_command() -> list[str]:
    exe = shutil.which("kvplan")
    base = [exe] if exe else [sys.executable, "-m", "kvplan"]
    return [*base, "size", "meta-llama/Llama-2-70b"]


def autoconfig_command() -> list[str]:
    code = f"from transformers import AutoConfig; AutoConfig.from_pretrained({str(CONFIG_DIR)!r})"
    return [sys.executable, "-c", code]


def median_seconds(command: list[str], runs: int) -> tuple[float, float, float]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    subprocess.run(command, check=True, capture_output=True, env=env)  # warm-up: .pyc files, page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    rows = [("kvplan size meta-llama/Llama-2-70b", kvplan_command())]
    try:
        import importlib.util

        if importlib.util.find_spec("transformers") is not None:
            rows.append(("AutoConfig.from_pretrained(same folder)", autoconfig_command()))
    except ImportError:  # pragma: no cover
        pass
    results = [(name, *median_seconds(cmd, args.runs)) for name, cmd in rows]
    print(f"startup, median of {args.runs} runs after one warm-up ({sys.platform}, {os.cpu_count()} CPUs)")
    print(f"{'command':<42} {'median s':>9} {'min s':>7} {'max s':>7} {'ratio':>7}")
    ours = results[0][1]
    for name, med, lo, hi in results:
        print(f"{name:<42} {med:>9.3f} {lo:>7.3f} {hi:>7.3f} {med / ours:>6.1f}x")
    if len(results) == 1:
        print("(transformers is not installed: the comparison row is missing)")
    goal_time = ours <= 0.25
    goal_ratio = len(results) > 1 and results[1][1] / ours >= 12
    print(f"goal: <= 0.25 s: {'met' if goal_time else 'NOT met'}; >= 12x faster: {'met' if goal_ratio else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

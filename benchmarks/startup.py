"""Startup: `kvplan size` and `kvplan size --json` on a bundled model, against `hf-mem --help` (the nearest
Python peer printing only its help, when hf-mem is installed) and transformers' AutoConfig on the same folder.

All rows are measured in this one run, as whole processes (interpreter start included), with alternating
repeats (one of each command per round, so a busy machine slows them alike), the median of N rounds after one
warm-up round. Goals: `size` at most 0.25 s and at least 12x faster than AutoConfig (issue 2); `size --json` at
most 1.1x `size` and at most 1.0x `hf-mem --help` (issue 8).

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


def kvplan_command(*args: str) -> list[str]:
    exe = shutil.which("kvplan")
    base = [exe] if exe else [sys.executable, "-m", "kvplan"]
    return [*base, "size", "meta-llama/Llama-2-70b", *args]


def hf_mem_command() -> list[str] | None:
    exe = shutil.which("hf-mem")
    return [exe, "--help"] if exe else None


def autoconfig_command() -> list[str]:
    code = f"from transformers import AutoConfig; AutoConfig.from_pretrained({str(CONFIG_DIR)!r})"
    return [sys.executable, "-c", code]


def alternating_seconds(commands: list[list[str]], runs: int) -> list[list[float]]:
    """Per command, ``runs`` wall times, measured one command after the other in each round."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for command in commands:  # warm-up: .pyc files, page cache
        subprocess.run(command, check=True, capture_output=True, env=env)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, command in enumerate(commands):
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=env)
            times[i].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    import importlib.util

    rows = [("kvplan size meta-llama/Llama-2-70b", kvplan_command()), ("... --json", kvplan_command("--json"))]
    hf_mem = hf_mem_command()
    if hf_mem is not None:
        rows.append(("hf-mem --help", hf_mem))
    if importlib.util.find_spec("transformers") is not None:
        rows.append(("AutoConfig.from_pretrained(same folder)", autoconfig_command()))
    times = alternating_seconds([cmd for _, cmd in rows], args.runs)
    medians = {name: statistics.median(t) for (name, _), t in zip(rows, times, strict=True)}
    where = f"{sys.platform}, {os.cpu_count()} CPUs"
    print(f"startup, median of {args.runs} alternating rounds after one warm-up ({where})")
    print(f"{'command':<42} {'median s':>9} {'min s':>7} {'max s':>7} {'vs size':>8}")
    ours = medians[rows[0][0]]
    for (name, _), t in zip(rows, times, strict=True):
        print(f"{name:<42} {medians[name]:>9.3f} {min(t):>7.3f} {max(t):>7.3f} {medians[name] / ours:>7.2f}x")
    json_s = medians["... --json"]
    goals = [
        ("size <= 0.25 s", ours <= 0.25),
        ("size --json <= 1.1x size", json_s <= 1.1 * ours),
    ]
    if hf_mem is not None:
        goals.append(("size --json <= 1.0x hf-mem --help", json_s <= medians["hf-mem --help"]))
    if "AutoConfig.from_pretrained(same folder)" in medians:
        goals.append((">= 12x faster than AutoConfig", medians["AutoConfig.from_pretrained(same folder)"] / ours >= 12))
    print("goals: " + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in goals))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

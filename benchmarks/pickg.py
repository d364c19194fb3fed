"""Speed of the pick-g solver: the full table for the reference model, every G x 50 contexts x 50 batches x 3 KV
dtypes (float16, fp8 = fp8_e4m3, float32), with every cell's KV, weights, fit, headroom, max batch and max ctx.

Goal (issue 4): at most 0.5 s for the whole sweep on a 2-core machine. Each run starts cold: it reads the scenario,
the model's config and the GPU catalog, then builds new cost functions, weight counts and budgets per dtype.

    python benchmarks/pickg.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from kvplan.readers.config import read_model_config
from kvplan.resolve import resolve
from kvplan.solver import load_scenario, pick_g_for_layout, select_gpu

DTYPES = ("float16", "fp8", "float32")
GOAL_S = 0.5


def contexts(n: int = 50) -> list[int]:
    """n contexts, geometric from 512 to 1,048,576 tokens."""
    return [round(512 * 2048 ** (i / (n - 1))) for i in range(n)]


def batches(n: int = 50) -> list[int]:
    return list(range(1, n + 1))


def sweep() -> tuple[float, int]:
    """Seconds and cells for the whole sweep: reading the scenario, the config and the GPU, then every report."""
    start = time.perf_counter()
    scenario = load_scenario()
    source = resolve(scenario.model)
    read = read_model_config(source.raw, source.model_id, source.describe())
    gpu = select_gpu(scenario.gpu)
    ctxs, bs = contexts(), batches()
    cells = 0
    for dtype in DTYPES:
        report = pick_g_for_layout(read, source, gpu, ctxs, bs, kv_cache_dtype=dtype, ways=False)
        cells += sum(len(cell.options) for cell in report.cells)
    return time.perf_counter() - start, cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sweep()  # warm-up: imports, the bundled GPU catalog
    results = [sweep() for _ in range(args.runs)]
    times = [t for t, _ in results]
    cells = results[0][1]
    med = statistics.median(times)
    sc = load_scenario()
    print(
        f"pick-g sweep: {sc.model} on {sc.gpu}, every G x {len(contexts())} contexts x {len(batches())} batches "
        f"x {len(DTYPES)} KV dtypes ({', '.join(DTYPES)}); median of {args.runs} runs after one warm-up "
        f"({sys.platform}, {os.cpu_count()} CPUs)"
    )
    print(f"{'':<12} {'time s':>8} {'cells':>8} {'cells/s':>10}")
    for name, t in (("median", med), ("min", min(times)), ("max", max(times))):
        print(f"{name:<12} {t:>8.3f} {cells:>8,} {cells / t:>10,.0f}")
    print(f"goal: <= {GOAL_S} s: {'met' if med <= GOAL_S else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Decode-attention timing over the allocated cache."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass
from kvplan.verify.arena import _Arena, _is_oom
from kvplan.verify.common import ProgressCallback
from kvplan.verify.plans import VerifyPlan
from kvplan.verify.results import TimingResult
from kvplan.verify.tensors import LayerTensors

_TIMED_DTYPES = ("float16", "bfloat16", "float32")


def _attention_views(
    torch: Any, plan: VerifyPlan, layer: LayerTensors, named: dict[str, Any]
) -> tuple[Any, Any] | None:
    """K and V of one layer as [batch, kv_heads, tokens, head_dim] views of the allocated cache, or None."""
    if not layer.attended or not layer.q_heads:
        return None
    b, s = plan.batch, layer.attended
    if "kv" in named:  # vLLM FlashAttention pages: [2, blocks, block, heads, dim]
        kv = named["kv"]
        if str(kv.dtype).removeprefix("torch.") not in _TIMED_DTYPES:
            return None
        heads, dim = kv.shape[-2], kv.shape[-1]
        k = kv[0].reshape(b, -1, heads, dim)[:, :s].transpose(1, 2)
        v = kv[1].reshape(b, -1, heads, dim)[:, :s].transpose(1, 2)
        return k, v
    k, v = named.get("k"), named.get("v")
    if k is None or v is None or str(k.dtype).removeprefix("torch.") not in _TIMED_DTYPES or k.dtype != v.dtype:
        return None
    if k.dim() == 3:  # SGLang token pool: [slots, heads, dim]
        k = k.reshape(b, -1, k.shape[1], k.shape[2])[:, :s].transpose(1, 2)
        v = v.reshape(b, -1, v.shape[1], v.shape[2])[:, :s].transpose(1, 2)
    if k.dim() != 4 or layer.q_heads % k.shape[1]:
        return None
    return k, v


def _sync(torch: Any, dev: Any) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


def _time_decode(
    torch: Any,
    dev: Any,
    plan: VerifyPlan,
    tensors: Sequence[LayerTensors],
    arena: _Arena,
    repeats: int,
    warmup: int,
    budget_s: float,
    bandwidth_tbps: float | None,
    on_progress: ProgressCallback | None,
) -> TimingResult:
    """One decode step: for every attention layer, SDPA of q [B, H, 1, D] over k / v [B, G, S, D] with
    enable_gqa=True. Warm-up, then up to ``repeats`` timed steps (CUDA events; synchronised wall clock
    elsewhere) within ``budget_s`` seconds (at least one); the median."""
    catalog_bps = None if bandwidth_tbps is None or dev.type == "cpu" else bandwidth_tbps * 1e12
    # Only this list holds the views and queries (no loop variable does), so clearing it in ``finally`` lets the
    # arena free the cache even while a Ctrl-C traceback still references this frame.
    triples: list[tuple[Any, Any, Any, int]] = []
    try:
        triples.extend(_decode_inputs(torch, dev, plan, tensors, arena))
        return _time_steps(torch, dev, plan, triples, repeats, warmup, budget_s, catalog_bps, on_progress)
    except Exception as err:
        if not _is_oom(torch, err):
            raise
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        note = f"not timed: out of memory for the query / attention workspace beside the cache ({first})"
        return TimingResult(plan.name, plan.kv_heads, 0, plan.batch, 0, 0, None, 0, warmup, None, catalog_bps, note)
    finally:
        triples.clear()


def _decode_inputs(
    torch: Any, dev: Any, plan: VerifyPlan, tensors: Sequence[LayerTensors], arena: _Arena
) -> list[tuple[Any, Any, Any, int]]:
    """(q, k, v, tokens) per timed layer: q [B, H, 1, D], k / v [B, G, S, D] views of the allocated cache."""
    out = []
    for layer in tensors:
        views = _attention_views(torch, plan, layer, arena.layers.get(layer.index, {}))
        if views is not None:
            q = torch.randn(plan.batch, layer.q_heads, 1, views[0].shape[-1], dtype=views[0].dtype, device=dev)
            out.append((q, views[0], views[1], layer.attended))
    return out


def _time_steps(
    torch: Any,
    dev: Any,
    plan: VerifyPlan,
    triples: list[tuple[Any, Any, Any, int]],
    repeats: int,
    warmup: int,
    budget_s: float,
    catalog_bps: float | None,
    on_progress: ProgressCallback | None,
) -> TimingResult:
    read = sum(k.nelement() * k.element_size() + v.nelement() * v.element_size() for _, k, v, _ in triples)
    tokens = max((n for *_, n in triples), default=0)

    def result(median: float | None, n: int, note: str) -> TimingResult:
        achieved = read / median if median else None
        if dev.type == "cpu":
            note = "; ".join(x for x in (note, "CPU: no catalog bandwidth to compare") if x)
        elif catalog_bps is None:
            note = "; ".join(x for x in (note, "no catalog bandwidth for this device") if x)
        return TimingResult(
            plan.name,
            plan.kv_heads,
            len(triples),
            plan.batch,
            tokens,
            read,
            median,
            n,
            warmup,
            achieved,
            catalog_bps,
            note,
        )

    if not triples:
        return result(
            None,
            0,
            f"not timed: verify times softmax attention over {'/'.join(_TIMED_DTYPES)} K/V; this cache has none "
            "(MLA latents, state, quantized rows, or a layout without per-sequence K/V views)",
        )
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def step() -> None:
        for i in range(len(triples)):  # by index: no local outlives an interrupted step
            sdpa(triples[i][0], triples[i][1], triples[i][2], enable_gqa=True)

    task = f"{plan.name}: timing"
    try:
        with torch.no_grad():
            for _ in range(warmup):
                step()
            _sync(torch, dev)
            times: list[float] = []
            spent = time.perf_counter()
            while len(times) < repeats and (not times or time.perf_counter() - spent < budget_s):
                if dev.type == "cuda":
                    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    start.record()
                    step()
                    end.record()
                    end.synchronize()
                    times.append(start.elapsed_time(end) / 1000)
                else:
                    t0 = time.perf_counter()
                    step()
                    _sync(torch, dev)
                    times.append(time.perf_counter() - t0)
                if on_progress is not None:
                    on_progress(task, len(times), repeats)
    except TypeError as err:  # torch < 2.5: no enable_gqa
        return result(None, 0, f"not timed: this torch's scaled_dot_product_attention has no enable_gqa ({err})")
    note = "" if len(times) == repeats else f"{len(times)} of {repeats} repeats within the {budget_s:g} s budget"
    return result(statistics.median(times), len(times), note)

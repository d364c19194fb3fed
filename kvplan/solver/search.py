"""The cost function and the searches: exact integer gallops and bisections against the budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kvplan.layout import CacheLayout, LayerSpec

if TYPE_CHECKING:
    from kvplan.engines import Engine, EngineOptions
    from kvplan.formula import CacheTypes

#: A context that still fits at 2^50 tokens (a petabyte per GPU at one byte per token) means the cache stopped
#: growing (state or windowed layers only): the largest context is "unbounded".


#: A context that still fits at 2^50 tokens (a petabyte per GPU at one byte per token) means the cache stopped
#: growing (state or windowed layers only): the largest context is "unbounded".
CTX_CAP = 2**50


#: Likewise for a batch: only a cache that costs nothing per sequence fits 2^50 of them.
BATCH_CAP = 2**50


#: Context at which the affine guess of a search is taken (past every sliding window of the bundled models).
_PROBE = 2**20


def _grouped(layers: Sequence[LayerSpec]) -> tuple[tuple[LayerSpec, int], ...]:
    """Layers that store the same thing (equal but for their index), one of them each with how many there are."""
    first: dict[LayerSpec, LayerSpec] = {}
    count: dict[LayerSpec, int] = {}
    for layer in layers:
        key = replace(layer, index=0)
        first.setdefault(key, layer)
        count[key] = count.get(key, 0) + 1
    return tuple((first[key], n) for key, n in count.items())


def _largest(fits: Callable[[int], bool], guess: int, cap: int) -> int | None:
    """The largest x in [1, cap] with ``fits(x)``, for ``fits`` true up to some point and false after it.

    0 when not even 1 fits; None when ``cap`` still fits (unbounded). Gallops from ``guess`` (doubling steps)
    to bracket the answer, then bisects: O(log |answer - guess|) evaluations.
    """
    if not fits(1):
        return 0
    if fits(cap):
        return None
    x = min(max(guess, 1), cap)
    step = 1
    if fits(x):
        lo = x
        while True:
            hi = min(lo + step, cap)
            if not fits(hi):
                break
            lo, step = hi, step * 2
    else:
        hi = x
        while True:
            lo = max(hi - step, 1)
            if fits(lo):
                break
            hi, step = lo, step * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


class KvCost:
    """The per-GPU KV bytes of one layout under one engine, KV dtype and tensor-parallel size, as an exact,
    memoized function of (ctx, batch), with the searches over it.

    The first estimate (ctx 1, batch 1) goes through :meth:`Engine.estimate <kvplan.engines.Engine.estimate>`,
    so every option is validated as ``kvplan size`` validates it. After that, the cheapest exact route the engine
    allows: an engine that keeps the base ``estimate`` and ``stage_costs`` is costed from ``engine.layer_cost``
    over groups of identical layers; one that keeps only ``estimate`` (vLLM's hybrid groups) from its
    ``stage_costs``; any other through its ``estimate``. tests/test_solver.py checks every route against the
    engine's own ``per_gpu_bytes`` for every engine and bundled model.
    """

    def __init__(
        self,
        layout: CacheLayout,
        engine: Engine,
        kv_cache_dtype: str = "auto",
        tp: int = 1,
        opts: EngineOptions | None = None,
    ) -> None:
        from dataclasses import replace

        from kvplan.engines import Engine as BaseEngine
        from kvplan.engines import EngineOptions

        self.layout = layout
        self.engine = engine
        self.kv_cache_dtype = kv_cache_dtype
        self.tp = tp
        self.opts: EngineOptions = replace(opts or EngineOptions(), tensor_parallel_size=tp)
        first = engine.estimate(layout, 1, 1, kv_cache_dtype=kv_cache_dtype, opts=self.opts)
        self.types: CacheTypes = first.types
        self.linear: bool = engine.linear_in_batch
        self._memo: dict[tuple[int, int], int] = {(1, 1): first.per_gpu_bytes}
        kind = type(engine)
        #: "layers" (grouped layer_cost), "stages" (engine.stage_costs) or "estimate".
        self.route = "estimate"
        self._stages: tuple[tuple[tuple[LayerSpec, int], ...], ...] = ()
        if kind.estimate is BaseEngine.estimate:
            self.route = "stages"
            if kind.stage_costs is BaseEngine.stage_costs:
                self._stages = tuple(_grouped(stage) for stage in engine.stage_layers(layout, self.opts))
                self.route = "layers"
            if self._compute(1, 1) != first.per_gpu_bytes:  # pragma: no cover - a guard, never seen
                self.route = "estimate"

    def _compute(self, ctx: int, batch: int) -> int:
        engine, types, opts = self.engine, self.types, self.opts
        if self.route == "layers":
            cost = engine.layer_cost
            return max(
                sum(n * cost(layer, ctx, batch, types, opts).total for layer, n in stage) for stage in self._stages
            )
        if self.route == "stages":
            return max(
                sum(c.total for c in stage) for stage in engine.stage_costs(self.layout, ctx, batch, types, opts)
            )
        return engine.estimate(self.layout, ctx, batch, kv_cache_dtype=self.kv_cache_dtype, opts=opts).per_gpu_bytes

    def bytes(self, ctx: int, batch: int = 1) -> int:
        """Per-GPU KV bytes (the largest GPU) for ``batch`` sequences of ``ctx`` tokens."""
        if self.linear and batch != 1:
            return self.bytes(ctx, 1) * batch
        key = (ctx, batch)
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = self._compute(ctx, batch)
        return value

    def max_batch(self, ctx: int, limit: int) -> int | None:
        """The largest batch whose KV at ``ctx`` is at most ``limit`` bytes per GPU: 0 when not even one
        sequence fits, None when a sequence costs nothing."""
        one = self.bytes(ctx, 1)
        if one > limit:
            return 0
        if self.linear:
            return None if one == 0 else limit // one
        return _largest(lambda b: self.bytes(ctx, b) <= limit, limit // max(one, 1), BATCH_CAP)

    def max_ctx(self, batch: int, limit: int) -> int | None:
        """The largest context whose KV for ``batch`` sequences is at most ``limit`` bytes per GPU: 0 when not
        even one token fits, None (unbounded) when the cache stops growing before it reaches the limit."""
        if limit < 0:
            return 0
        if self.linear:
            # seq(ctx) x batch <= limit  <=>  seq(ctx) <= limit // batch (integers, batch >= 1)
            per_seq = limit // batch
            return _largest(lambda c: self.bytes(c, 1) <= per_seq, self._guess(1, per_seq), CTX_CAP)
        return _largest(lambda c: self.bytes(c, batch) <= limit, self._guess(batch, limit), CTX_CAP)

    def _guess(self, batch: int, limit: int) -> int:
        """Where an affine cost through two probes reaches ``limit`` (a starting point, not an answer)."""
        low, high = self.bytes(_PROBE, batch), self.bytes(2 * _PROBE, batch)
        slope = high - low
        if slope <= 0:
            return _PROBE
        return _PROBE + (limit - low) * _PROBE // slope

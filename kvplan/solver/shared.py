"""What pick-g and fit share: GPU selection, tensor-parallel sizes, the per-G setup and the hardware budget."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kvplan.errors import OptionError, Param, spell
from kvplan.formula import check_positive, divisors
from kvplan.layout import CacheLayout

if TYPE_CHECKING:
    from kvplan.engines import Engine, EngineOptions
    from kvplan.gpus import Budget, GpuSelection
    from kvplan.weights import WeightEstimate

#: A context that still fits at 2^50 tokens (a petabyte per GPU at one byte per token) means the cache stopped
#: growing (state or windowed layers only): the largest context is "unbounded".
from kvplan.solver.search import KvCost

#: Query heads per KV head up to which GQA stays close to MHA quality (Ainslie et al. 2023).
SAFE_GROUP = 8


#: Tensor-parallel sizes tried for a model without attention heads (pure SSM).
_SSM_TP = (1, 2, 4, 8, 16, 32, 64)


class FitsBudget:
    """What a KV figure against its budget says (per GPU): whether it fits and by how much. Mixed into the
    frozen report dataclasses that carry ``kv_bytes`` and ``kv_budget_bytes`` (a fit check, a G option)."""

    kv_bytes: int
    kv_budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.kv_bytes <= self.kv_budget_bytes

    @property
    def headroom_bytes(self) -> int:
        """KV budget left over per GPU (negative: how much is missing)."""
        return self.kv_budget_bytes - self.kv_bytes


def gpu_hint() -> str:
    gpu = spell(Param.GPU)
    return f"which GPU? e.g. {gpu} a100-80g, {gpu} 8xh100 or {gpu} 80GiB (`kvplan gpus` lists the catalog)"


GQA_PAPER = "Ainslie et al. 2023, GQA, arXiv:2305.13245"


def quality_note(g: int, h: int) -> str:
    """What G KV heads for H query heads mean for quality, in one line (Ainslie et al. 2023)."""
    if g == h:
        return "MHA: full quality"
    if g == 1:
        return "MQA: measurable quality loss on harder tasks"
    if h // g <= SAFE_GROUP:
        return f"GQA, {h // g} heads per KV head: near-MHA quality"
    return f"GQA, {h // g} heads per KV head: more than {SAFE_GROUP}, expect some loss"


def cap_ctx(longest: int | None, limit: int | None) -> int | None:
    """The longest context memory allows (None: unbounded), capped at the model's context limit when it has one."""
    if limit is None or (longest is not None and longest <= limit):
        return longest
    return limit


def quality_label(g: int, h: int) -> str:
    """:func:`quality_note` in a table cell's few words (QUALITY_LEGEND says what each means)."""
    if g == h:
        return "MHA"
    if g == 1:
        return "MQA loss"
    return "near-MHA" if h // g <= SAFE_GROUP else "some loss"


#: What the short quality labels mean (Ainslie et al. 2023).
QUALITY_LEGEND = (
    f"quality: MHA = full quality; near-MHA = GQA with at most {SAFE_GROUP} query heads per KV head; some loss = "
    f"more than {SAFE_GROUP}; MQA loss = measurable quality loss on harder tasks ({GQA_PAPER})"
)


def select_gpu(gpu: str | GpuSelection, *, num_gpus: int | None = None, gpu_files: Sequence[Path] = ()) -> GpuSelection:
    """``--gpu`` (a catalog name, a raw size, ``8xh100``) with ``--num-gpus``, or a selection as it is."""
    from kvplan.gpus import GpuSelection, load_catalog, parse_gpu

    if isinstance(gpu, GpuSelection):
        if num_gpus is not None:
            return replace(gpu, count=check_positive(Param.NUM_GPUS, num_gpus))
        return gpu
    return parse_gpu(gpu, load_catalog(gpu_files), num_gpus)


def engine_options(options: EngineOptions | None, gpu: GpuSelection, tp: int) -> EngineOptions:
    """The plan's engine options on ``gpu`` at ``tp``: the GPU's memory and name feed the engine's defaults
    (vLLM's max_num_batched_tokens)."""
    from kvplan.engines import EngineOptions

    base = options or EngineOptions()
    return replace(base, tensor_parallel_size=tp, device_memory_bytes=gpu.usable_bytes, device_name=gpu.title)


def tensor_parallel(gpu: GpuSelection, tp: int | None) -> tuple[GpuSelection, int]:
    """The plan's tensor-parallel size (default: the GPU count) and the GPUs it runs on (count = tp)."""
    if tp is None:
        return gpu, gpu.count
    check_positive(Param.TENSOR_PARALLEL_SIZE, tp)
    if gpu.count not in (1, tp):
        raise OptionError(
            Param.TENSOR_PARALLEL_SIZE,
            f"{tp} ranks, but {spell(Param.GPU)} / {spell(Param.NUM_GPUS)} give {gpu.count} GPUs; kvplan plans one "
            "tensor-parallel group, "
            "so give the number once",
        )
    return replace(gpu, count=tp), tp


def check_one_stage(engine: Engine, gpus: int, pp: int = 1) -> None:
    """Refuse a GPU budget split into pipeline stages, which is not planned yet: each stage holds other weights
    (the embedding on the first, the LM head on the last) and its own layers' KV, and vLLM gives every worker the
    smallest stage's block count, so one per-GPU budget would be wrong. An engine that splits layers, not heads
    (llama.cpp), over several GPUs is such a split. A given per-GPU KV memory (capacity) plans it exactly."""
    if pp > 1 or (gpus > 1 and not engine.shards_heads):
        split = "" if engine.shards_heads else f"{engine.name} splits layers across GPUs, not heads, so "
        raise OptionError(
            Param.PIPELINE_PARALLEL_SIZE if pp > 1 else Param.GPU,
            f"{split}{gpus if pp == 1 else pp} pipeline stages from a GPU budget are not planned yet (each stage "
            "holds other weights and its own layers' KV): plan one GPU, or give one GPU's KV memory with "
            f"kvplan capacity ... {spell(Param.PIPELINE_PARALLEL_SIZE)} N {spell(Param.KV_MEMORY)} BYTES",
        )


def allowed_tp(layout: CacheLayout, engine: Engine) -> tuple[int, ...]:
    """Tensor-parallel sizes this engine accepts for this layout, ascending: tp divides the query heads and
    tp | H_kv or H_kv | tp (engines.check_tp); a model without attention heads tries powers of two to 64."""
    from kvplan.engines import EngineOptions

    h = layout.query_heads
    candidates = list(divisors(h)) if h else list(_SSM_TP)
    out = []
    for tp in candidates:
        try:
            engine.validate(layout, EngineOptions(tensor_parallel_size=tp))
        except OptionError:
            continue
        out.append(tp)
    return tuple(out)


def _as_counts(value: int | Sequence[int], option: Param) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values:
        raise OptionError(option, "expected one or more counts")
    return tuple(check_positive(option, v) for v in values)


@dataclass(frozen=True)
class _Setup:
    """One (layout, KV dtype, tp) on the plan's hardware: weights, budget and cost. Internal."""

    layout: CacheLayout
    tp: int
    budget: Budget
    cost: KvCost

    @property
    def limit(self) -> int:
        return self.budget.kv_bytes_per_gpu


@dataclass(frozen=True)
class _Hardware:
    """What every setup of one plan shares: the engine and its options, the kind of GPU and the budget terms
    (None: the engine's default fraction / the engine's own terms). Internal."""

    engine: Engine
    gpu: GpuSelection
    utilization: float | None
    reserve_bytes: int | None
    #: The engine options of the plan (tp is set per setup) and the longest request it plans for.
    options: EngineOptions
    max_model_len: int

    def opts(self, tp: int) -> EngineOptions:
        return engine_options(self.options, self.gpu, tp)

    def setup(self, layout: CacheLayout, tp: int, kv_cache_dtype: str, weights: WeightEstimate) -> _Setup:
        from kvplan.engines import Workload
        from kvplan.gpus import budget
        from kvplan.weights import forward_shape

        opts = self.opts(tp)
        work = Workload(layout, forward_shape(layout, weights), self.max_model_len, opts)
        b = budget(
            replace(self.gpu, count=tp),
            weights_bytes_per_gpu=weights.bytes_per_gpu(tp),
            utilization=self.utilization,
            reserve_bytes=self.reserve_bytes,
            engine=self.engine,
            work=work,
        )
        return _Setup(layout, tp, b, KvCost(layout, self.engine, kv_cache_dtype, tp, opts))

    def fewest_gpus(
        self,
        layout: CacheLayout,
        ctx: int,
        batch: int,
        kv_cache_dtype: str,
        weights: WeightEstimate,
        *,
        above: int = 0,
        cache: dict[int, _Setup] | None = None,
    ) -> tuple[_Setup | None, tuple[int, ...]]:
        """The setup with the fewest tensor-parallel GPUs (more than ``above``) where ``batch`` x ``ctx`` fits,
        and the tp values tried. Per-GPU weights and KV never grow with tp, so the first that fits is it."""
        cache = {} if cache is None else cache
        tried = tuple(t for t in allowed_tp(layout, self.engine) if t > above)
        for tp in tried:
            if tp not in cache:
                cache[tp] = self.setup(layout, tp, kv_cache_dtype, weights)
            s = cache[tp]
            if s.cost.bytes(ctx, batch) <= s.limit:
                return s, tried
        return None, tried

"""Pick G, the largest context, the largest batch and the fewest GPUs: exact integer searches against the budget.

Everything is per GPU. For one choice of G (KV heads), KV dtype, engine and tensor-parallel size ``tp``::

    KV(ctx, batch) = the engine's per-GPU cache for ``batch`` sequences of ``ctx`` tokens   (engines.py)
    weights        = weight_bytes(layout, kv_heads=G).bytes_per_gpu(tp)   (the K/V projections shrink with G)
    KV budget      = ceil(usable x utilization) - weights - reserve      (gpus.budget)
    fits           = KV(ctx, batch) <= KV budget

``KV`` is monotone non-decreasing in ``ctx`` and in ``batch``, so every "largest that fits" answer is an exact
search on integers, and "fewest GPUs" is a scan over the tensor-parallel sizes the model allows (per-GPU weights
and KV never grow with tp, so the first one that fits is the answer).

The hot path is :class:`KvCost`. It costs one sequence per context (batch 1) and, when the engine is
``linear_in_batch``, multiplies by the batch (exact: every layer's slots and state scale with the batch). For an
engine that assembles its estimate from per-layer costs (it keeps :meth:`Engine.estimate
<kvplan.engines.Engine.estimate>`), it sums ``engine.layer_cost`` over groups of identical layers instead of
building a whole :class:`~kvplan.engines.EngineEstimate` with its explanation; other engines (vLLM's hybrid
groups) are asked for their estimate. Searches gallop from an affine guess and then bisect, memoizing every
cost, so a whole sweep costs a few thousand integer evaluations.

Quality of a G (Ainslie et al. 2023, "GQA: Training Generalized Multi-Query Transformer Models from Multi-Head
Checkpoints", arXiv:2305.13245): G = H is multi-head attention; 1 < G < H is grouped-query attention, close to
MHA quality for groups of up to about 8 query heads per KV head, reached from an MHA checkpoint by mean-pooling
the K/V heads of each group and uptraining on about 5% of the pretraining compute; G = 1 is multi-query
attention, with a measurable quality loss on harder tasks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from kvplan.errors import CatalogFileError, OptionError
from kvplan.formula import attention_kind_name, check_positive, valid_kv_heads, with_kv_heads
from kvplan.layout import CacheLayout, LayerSpec
from kvplan.plan import default_context
from kvplan.resolve import ModelSource, resolve

if TYPE_CHECKING:
    from kvplan.engines import Engine, EngineOptions
    from kvplan.formula import CacheTypes
    from kvplan.gpus import Budget, GpuSelection
    from kvplan.weights import WeightEstimate

#: A context that still fits at 2^50 tokens (a petabyte per GPU at one byte per token) means the cache stopped
#: growing (state or windowed layers only): the largest context is "unbounded".
CTX_CAP = 2**50
#: Likewise for a batch: only a cache that costs nothing per sequence fits 2^50 of them.
BATCH_CAP = 2**50
#: Query heads per KV head up to which GQA stays close to MHA quality (Ainslie et al. 2023).
SAFE_GROUP = 8
#: Context at which the affine guess of a search is taken (past every sliding window of the bundled models).
_PROBE = 2**20
#: Tensor-parallel sizes tried for a model without attention heads (pure SSM).
_SSM_TP = (1, 2, 4, 8, 16, 32, 64)

_GPU_HINT = "which GPU? e.g. --gpu a100-80g, --gpu 8xh100 or --gpu 80GiB (`kvplan gpus` lists the catalog)"
GQA_PAPER = "Ainslie et al. 2023, GQA, arXiv:2305.13245"


# ----------------------------------------------------------------------------------------------------------
# The reference scenario (configs/scenarios/reference.yaml)


@dataclass(frozen=True)
class Scenario:
    """A named planning question shipped with kvplan: a model, a GPU, a context and a batch."""

    name: str
    description: str
    model: str
    gpu: str
    ctx: int
    batch: int
    #: Where it was read (``kvplan:configs/scenarios/<name>.yaml``).
    location: str


def load_scenario(name: str = "reference") -> Scenario:
    """A bundled scenario by name; ``reference`` is what ``pick-g`` plans when no model is given."""
    from typing import Annotated

    import yaml
    from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

    from kvplan.catalog import data_root

    class ScenarioFile(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

        name: Annotated[str, Field(min_length=1)]
        description: Annotated[str, Field(min_length=1)]
        model: Annotated[str, Field(min_length=1)]
        gpu: Annotated[str, Field(min_length=1)]
        ctx: Annotated[StrictInt, Field(gt=0)]
        batch: Annotated[StrictInt, Field(gt=0)]

    where = f"kvplan:configs/scenarios/{name}.yaml"
    path = data_root().joinpath("scenarios", f"{name}.yaml")
    if not path.is_file():
        raise OptionError("scenario", f"no bundled scenario named {name!r}")
    try:
        data = yaml.safe_load(path.read_text("utf-8"))
        parsed = ScenarioFile.model_validate(data)
    except yaml.YAMLError as err:
        raise CatalogFileError(where, [f"(file): not valid YAML: {err}"]) from err
    except ValidationError as err:
        lines = [
            f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in err.errors(include_url=False)
        ]
        raise CatalogFileError(where, lines) from err
    return Scenario(**parsed.model_dump(), location=where)


# ----------------------------------------------------------------------------------------------------------
# The cost function and the searches


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

    def __init__(self, layout: CacheLayout, engine: Engine, kv_cache_dtype: str = "auto", tp: int = 1) -> None:
        from kvplan.engines import Engine as BaseEngine
        from kvplan.engines import EngineOptions

        self.layout = layout
        self.engine = engine
        self.kv_cache_dtype = kv_cache_dtype
        self.tp = tp
        self.opts: EngineOptions = EngineOptions(tensor_parallel_size=tp)
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


# ----------------------------------------------------------------------------------------------------------
# Shared pieces


def quality_note(g: int, h: int) -> str:
    """What G KV heads for H query heads mean for quality, in one line (Ainslie et al. 2023)."""
    if g == h:
        return "MHA: full quality"
    if g == 1:
        return "MQA: measurable quality loss on harder tasks"
    if h // g <= SAFE_GROUP:
        return f"GQA, {h // g} heads per KV head: near-MHA quality"
    return f"GQA, {h // g} heads per KV head: more than {SAFE_GROUP}, expect some loss"


def select_gpu(gpu: str | GpuSelection, *, num_gpus: int | None = None, gpu_files: Sequence[Path] = ()) -> GpuSelection:
    """``--gpu`` (a catalog name, a raw size, ``8xh100``) with ``--num-gpus``, or a selection as it is."""
    from kvplan.gpus import GpuSelection, load_catalog, parse_gpu

    if isinstance(gpu, GpuSelection):
        if num_gpus is not None:
            return replace(gpu, count=check_positive("--num-gpus", num_gpus))
        return gpu
    return parse_gpu(gpu, load_catalog(gpu_files), num_gpus)


def tensor_parallel(gpu: GpuSelection, tp: int | None) -> tuple[GpuSelection, int]:
    """The plan's tensor-parallel size (default: the GPU count) and the GPUs it runs on (count = tp)."""
    if tp is None:
        return gpu, gpu.count
    check_positive("--tensor-parallel-size", tp)
    if gpu.count not in (1, tp):
        raise OptionError(
            "--tensor-parallel-size",
            f"{tp} ranks, but --gpu / --num-gpus give {gpu.count} GPUs; kvplan plans one tensor-parallel group, "
            "so give the number once",
        )
    return replace(gpu, count=tp), tp


def allowed_tp(layout: CacheLayout, engine: Engine) -> tuple[int, ...]:
    """Tensor-parallel sizes this engine accepts for this layout, ascending: tp divides the query heads and
    tp | H_kv or H_kv | tp (engines.check_tp); a model without attention heads tries powers of two to 64."""
    from kvplan.engines import EngineOptions

    h = layout.query_heads
    candidates = [t for t in range(1, h + 1) if h % t == 0] if h else list(_SSM_TP)
    out = []
    for tp in candidates:
        try:
            engine.validate(layout, EngineOptions(tensor_parallel_size=tp))
        except OptionError:
            continue
        out.append(tp)
    return tuple(out)


def _as_counts(value: int | Sequence[int], option: str) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values:
        raise OptionError(option, "expected one or more counts")
    return tuple(check_positive(option, v) for v in values)


def _reserve(reserve_bytes: int | None) -> int:
    from kvplan.gpus import DEFAULT_RESERVE

    return DEFAULT_RESERVE if reserve_bytes is None else reserve_bytes


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
    """What every setup of one plan shares: the engine, the kind of GPU and the budget terms. Internal."""

    engine: Engine
    gpu: GpuSelection
    utilization: float
    reserve_bytes: int

    def setup(self, layout: CacheLayout, tp: int, kv_cache_dtype: str, weights: WeightEstimate) -> _Setup:
        from kvplan.gpus import budget

        b = budget(
            replace(self.gpu, count=tp),
            weights_bytes_per_gpu=weights.bytes_per_gpu(tp),
            utilization=self.utilization,
            reserve_bytes=self.reserve_bytes,
        )
        return _Setup(layout, tp, b, KvCost(layout, self.engine, kv_cache_dtype, tp))

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


# ----------------------------------------------------------------------------------------------------------
# pick-g: results


@dataclass(frozen=True)
class GChoice:
    """One G (number of KV heads) on the plan's GPUs: what it is, its weights and its KV budget per GPU."""

    g: int
    #: MHA (G = H), GQA or MQA (G = 1).
    attention: str
    #: H / G, exact (G divides H).
    compression: int
    quality: str
    is_model: bool
    #: G < tp: every rank keeps one whole KV head, so the heads are copied tp / G times.
    copies_heads: bool
    weights: WeightEstimate
    budget: Budget

    @property
    def weights_bytes(self) -> int:
        """Weight bytes per GPU."""
        return self.budget.weights_bytes

    @property
    def kv_budget_bytes(self) -> int:
        """What the KV cache may use per GPU (negative: weights and reserve alone do not fit)."""
        return self.budget.kv_bytes_per_gpu


@dataclass(frozen=True)
class GOption:
    """One G at one (ctx, batch). Bytes are per GPU."""

    g: int
    kv_bytes: int
    weights_bytes: int
    kv_budget_bytes: int
    #: The most sequences of this ctx that fit (0: not even one; None: a sequence costs nothing).
    max_batch: int | None
    #: The longest context at this batch that fits (0: not even one token; None: unbounded).
    max_ctx: int | None

    @property
    def total_bytes(self) -> int:
        """KV + weights per GPU."""
        return self.kv_bytes + self.weights_bytes

    @property
    def fits(self) -> bool:
        return self.kv_bytes <= self.kv_budget_bytes

    @property
    def headroom_bytes(self) -> int:
        """KV budget left over per GPU (negative: how much is missing)."""
        return self.kv_budget_bytes - self.kv_bytes


@dataclass(frozen=True)
class PickGCell:
    """One (ctx, batch) of a pick-g plan: every G, largest first, and the recommendation."""

    ctx: int
    batch: int
    options: tuple[GOption, ...]
    #: The largest G that fits (most quality under the budget); None when none does.
    recommended_g: int | None

    def option(self, g: int) -> GOption:
        return next(o for o in self.options if o.g == g)


@dataclass(frozen=True)
class Lever:
    """One way to make a G fit at the asked (ctx, batch), with its number.

    kind: ``fp8`` (KV in fp8), ``tp`` (more tensor-parallel GPUs), ``fp8+tp``, ``batch`` (fewer sequences) or
    ``ctx`` (a shorter context). ``value`` is the tp, batch or context that gets there (None when this way
    cannot; for ``fp8`` the KV bytes in fp8).
    """

    kind: str
    value: int | None
    fits: bool
    #: Per-GPU KV bytes and KV budget with this change (at ``value`` where there is one).
    kv_bytes: int
    kv_budget_bytes: int
    note: str = ""


@dataclass(frozen=True)
class Way:
    """How to reach a G that does not fit: the model's own, or the smallest quality-safe one (H/G <= 8)."""

    g: int
    reason: str
    option: GOption
    levers: tuple[Lever, ...]


@dataclass(frozen=True)
class ChartSeries:
    """Per-GPU memory (weights + reserve + KV) of one G at each context of the chart."""

    g: int
    totals: tuple[int, ...]
    max_ctx: int | None


@dataclass(frozen=True)
class Chart:
    """Memory against context for every G at one batch, with the line it must stay under."""

    batch: int
    ctxs: tuple[int, ...]
    #: ceil(usable x utilization): weights + reserve + KV must stay at or below it.
    limit_bytes: int
    reserve_bytes: int
    series: tuple[ChartSeries, ...]
    #: The contexts that were asked for (marked on the axis).
    marks: tuple[int, ...]


@dataclass(frozen=True)
class PickGReport:
    """Everything ``kvplan pick-g`` shows."""

    source: ModelSource
    layout: CacheLayout
    #: The bundled scenario when no model was given, and what the command changed of it (GPU, ctx, batch).
    scenario: Scenario | None
    scenario_changes: tuple[str, ...]
    #: The GPUs of one tensor-parallel group (count = tp).
    gpu: GpuSelection
    engine: str
    tp: int
    kv_types: CacheTypes
    #: The weights' storage, in words.
    weights_dtype: str
    utilization: float
    reserve_bytes: int
    query_heads: int
    own_g: int | None
    ctx_source: str
    ctxs: tuple[int, ...]
    batches: tuple[int, ...]
    #: Every G the tensor-parallel size allows, largest first.
    choices: tuple[GChoice, ...]
    #: G values that divide H but that tp cannot split evenly, with why.
    skipped: tuple[tuple[int, str], ...]
    #: One per (ctx, batch), ctx-major.
    cells: tuple[PickGCell, ...]
    ways: tuple[Way, ...]
    charts: tuple[Chart, ...]
    notes: tuple[str, ...]

    @property
    def single(self) -> PickGCell | None:
        """The cell when one ctx and one batch were asked for."""
        return self.cells[0] if len(self.cells) == 1 else None

    def choice(self, g: int) -> GChoice:
        return next(c for c in self.choices if c.g == g)

    @property
    def focus(self) -> GChoice:
        """The G whose budget the output spells out: the recommendation, else the smallest G."""
        cell = self.single
        if cell is not None and cell.recommended_g is not None:
            return self.choice(cell.recommended_g)
        return self.choices[-1]

    @property
    def all_fit(self) -> bool:
        """Some G fits at every (ctx, batch) asked for."""
        return all(c.recommended_g is not None for c in self.cells)


# ----------------------------------------------------------------------------------------------------------
# pick-g: the computation


def pick_g(
    model: str | None = None,
    *,
    gpu: str | GpuSelection | None = None,
    ctx: int | Sequence[int] | None = None,
    batch: int | Sequence[int] | None = None,
    kv_cache_dtype: str = "auto",
    engine: str = "ideal",
    tensor_parallel_size: int | None = None,
    num_gpus: int | None = None,
    utilization: float = 0.90,
    reserve_bytes: int | None = None,
    weights_dtype: str | None = None,
    gpu_files: Sequence[Path] = (),
    chart: bool = False,
    revision: str | None = None,
    token: str | None = None,
) -> PickGReport:
    """How many KV heads G a model can afford on ``gpu`` at ``ctx`` x ``batch`` (lists make a sweep).

    Without ``model`` this plans the bundled reference scenario (configs/scenarios/reference.yaml), whose GPU,
    context and batch are the defaults of ``gpu``, ``ctx`` and ``batch``.
    """
    scenario = None
    if model is None:
        scenario = load_scenario()
        model = scenario.model
        gpu = scenario.gpu if gpu is None else gpu
    if gpu is None:
        raise OptionError("--gpu", _GPU_HINT)
    source = resolve(model, revision=revision, token=token)
    from kvplan.config_reader import read_config

    layout = read_config(source.raw, source.model_id, source.describe())
    if ctx is None and scenario is not None:
        ctx, ctx_source = scenario.ctx, f"the {scenario.name} scenario"
    elif ctx is None:
        ctx, ctx_source = default_context(layout, None)
    else:
        ctx_source = "--ctx"
    if batch is None:
        batch = scenario.batch if scenario is not None else 1
    selection = select_gpu(gpu, num_gpus=num_gpus, gpu_files=gpu_files)
    changes: list[str] = []
    if scenario is not None:
        theirs = select_gpu(scenario.gpu, gpu_files=gpu_files)
        count = selection.count if tensor_parallel_size is None else tensor_parallel_size
        if (selection.label, selection.usable_bytes, count) != (theirs.label, theirs.usable_bytes, theirs.count):
            changes.append(f"{replace(selection, count=count).title} instead of {theirs.title}")
        for name, asked, own in (("ctx", ctx, scenario.ctx), ("batch", batch, scenario.batch)):
            values = _as_counts(asked, f"--{name}")
            if values != (own,):
                changes.append(f"{name} {', '.join(f'{v:,}' for v in values)} instead of {own:,}")
    return pick_g_for_layout(
        layout,
        source,
        selection,
        ctx,
        batch,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        utilization=utilization,
        reserve_bytes=reserve_bytes,
        weights_dtype=weights_dtype,
        chart=chart,
        scenario=scenario,
        scenario_changes=tuple(changes),
        ctx_source=ctx_source,
    )


def pick_g_for_layout(
    layout: CacheLayout,
    source: ModelSource,
    gpu: GpuSelection,
    ctx: int | Sequence[int],
    batch: int | Sequence[int],
    *,
    kv_cache_dtype: str = "auto",
    engine: str = "ideal",
    tensor_parallel_size: int | None = None,
    utilization: float = 0.90,
    reserve_bytes: int | None = None,
    weights_dtype: str | None = None,
    chart: bool = False,
    ways: bool = True,
    scenario: Scenario | None = None,
    scenario_changes: tuple[str, ...] = (),
    ctx_source: str = "--ctx",
) -> PickGReport:
    """:func:`pick_g` for a layout already read. ``ways=False`` skips the ways to reach a G (single cell only)."""
    from kvplan.engines import EngineOptions, get_engine
    from kvplan.weights import weight_bytes

    ctxs, batches = _as_counts(ctx, "--ctx"), _as_counts(batch, "--batch")
    gpu, tp = tensor_parallel(gpu, tensor_parallel_size)
    hw = _Hardware(get_engine(engine), gpu, utilization, _reserve(reserve_bytes))
    if not layout.attention_layers:
        kinds = ", ".join(k.value for k in layout.kinds)
        raise OptionError("--model", f"{layout.model} has no per-head K/V to choose G for (layers: {kinds})")
    h = min(layer.q_heads for layer in layout.attention_layers)
    own = layout.kv_heads
    gs = sorted(valid_kv_heads(layout), reverse=True)
    opts = EngineOptions(tensor_parallel_size=tp)
    hw.engine.validate(with_kv_heads(layout, gs[0]), opts)  # tp must divide the query heads

    choices: list[GChoice] = []
    setups: list[_Setup] = []
    skipped: list[tuple[int, str]] = []
    for g in gs:
        layout_g = with_kv_heads(layout, g)
        try:
            hw.engine.validate(layout_g, opts)
        except OptionError as err:
            skipped.append((g, err.message.removeprefix(f"{err.option}: ")))
            continue
        weights = weight_bytes(layout, dtype=weights_dtype, kv_heads=g)
        s = hw.setup(layout_g, tp, kv_cache_dtype, weights)
        setups.append(s)
        choices.append(
            GChoice(
                g=g,
                attention=attention_kind_name(g, h),
                compression=h // g,
                quality=quality_note(g, h),
                is_model=g == own,
                copies_heads=g < tp,
                weights=weights,
                budget=s.budget,
            )
        )

    cells = _cells(setups, ctxs, batches)
    report_ways: tuple[Way, ...] = ()
    if ways and len(cells) == 1:
        report_ways = _ways(hw, cells[0], choices, setups, own, kv_cache_dtype)
    charts = tuple(_chart(setups, ctxs, b, hw.reserve_bytes) for b in batches) if chart else ()
    types = setups[0].cost.types
    return PickGReport(
        source=source,
        layout=layout,
        scenario=scenario,
        scenario_changes=scenario_changes,
        gpu=gpu,
        engine=hw.engine.name,
        tp=tp,
        kv_types=types,
        weights_dtype=choices[0].weights.dtype,
        utilization=utilization,
        reserve_bytes=hw.reserve_bytes,
        query_heads=h,
        own_g=own,
        ctx_source=ctx_source,
        ctxs=ctxs,
        batches=batches,
        choices=tuple(choices),
        skipped=tuple(skipped),
        cells=cells,
        ways=report_ways,
        charts=charts,
        notes=_pick_notes(choices, own, tp, types, gpu),
    )


def _cells(setups: Sequence[_Setup], ctxs: tuple[int, ...], batches: tuple[int, ...]) -> tuple[PickGCell, ...]:
    """The hot path: every G x ctx x batch, integers only, one engine cost per (G, ctx) when linear."""
    per_g: list[list[GOption]] = []
    for s in setups:
        cost, limit, g, weights = s.cost, s.limit, s.layout.kv_heads or 0, s.budget.weights_bytes
        ctx_at = [cost.max_ctx(b, limit) for b in batches]
        column: list[GOption] = []
        for c in ctxs:
            most = cost.max_batch(c, limit)
            if cost.linear:
                one = cost.bytes(c, 1)
                column.extend(
                    GOption(g, one * b, weights, limit, most, m) for b, m in zip(batches, ctx_at, strict=True)
                )
            else:
                column.extend(
                    GOption(g, cost.bytes(c, b), weights, limit, most, m) for b, m in zip(batches, ctx_at, strict=True)
                )
        per_g.append(column)
    cells = []
    for i, options in enumerate(zip(*per_g, strict=True)):
        best = next((o.g for o in options if o.kv_bytes <= o.kv_budget_bytes), None)
        cells.append(PickGCell(ctxs[i // len(batches)], batches[i % len(batches)], options, best))
    return tuple(cells)


def _ways(
    hw: _Hardware,
    cell: PickGCell,
    choices: Sequence[GChoice],
    setups: Sequence[_Setup],
    own: int | None,
    kv_cache_dtype: str,
) -> tuple[Way, ...]:
    """For the model's own G and the smallest quality-safe G, when they do not fit: each lever with its number."""
    best = cell.recommended_g or 0
    safe = min(c.g for c in choices if c.compression <= SAFE_GROUP)
    targets: list[tuple[int, str]] = []
    if own is not None and own > best and any(c.g == own for c in choices):
        targets.append((own, "the model's own G"))
    if safe > best and safe != own:
        targets.append((safe, f"the smallest quality-safe G: at most {SAFE_GROUP} query heads per KV head"))
    by_g = {c.g: (c, s) for c, s in zip(choices, setups, strict=True)}
    out = []
    for g, reason in targets:
        choice, s = by_g[g]
        levers = _levers(hw, s, choice.weights, cell.ctx, cell.batch, kv_cache_dtype)
        out.append(Way(g, reason, cell.option(g), levers))
    return tuple(out)


def _levers(
    hw: _Hardware, s: _Setup, weights: WeightEstimate, ctx: int, batch: int, kv_cache_dtype: str
) -> tuple[Lever, ...]:
    """fp8 KV, more GPUs, fp8 and more GPUs, a smaller batch, a shorter context: each alone, with its number."""
    levers: list[Lever] = []
    kv = s.cost.bytes(ctx, batch)
    fp8: _Setup | None = None
    try:
        fp8 = hw.setup(s.layout, s.tp, "fp8", weights)
    except OptionError as err:
        levers.append(Lever("fp8", None, False, kv, s.limit, f"not available: {err.message}"))
    if fp8 is not None and fp8.cost.bytes(ctx, batch) < kv:
        kv8 = fp8.cost.bytes(ctx, batch)
        levers.append(Lever("fp8", kv8, kv8 <= fp8.limit, kv8, fp8.limit))
    else:
        fp8 = None
    more, tried = hw.fewest_gpus(s.layout, ctx, batch, kv_cache_dtype, weights, above=s.tp)
    levers.append(_tp_lever("tp", more, tried, s, ctx, batch))
    if fp8 is not None and not levers[0].fits:
        both, tried8 = hw.fewest_gpus(s.layout, ctx, batch, "fp8", weights, above=s.tp)
        if both is not None and (more is None or both.tp < more.tp):
            levers.append(_tp_lever("fp8+tp", both, tried8, s, ctx, batch))
    most = s.cost.max_batch(ctx, s.limit)
    levers.append(Lever("batch", most or None, bool(most), s.cost.bytes(ctx, most) if most else kv, s.limit))
    longest = s.cost.max_ctx(batch, s.limit)
    levers.append(
        Lever("ctx", longest or None, bool(longest), s.cost.bytes(longest, batch) if longest else kv, s.limit)
    )
    return tuple(levers)


def _tp_lever(kind: str, found: _Setup | None, tried: tuple[int, ...], s: _Setup, ctx: int, batch: int) -> Lever:
    if found is None:
        upto = f"tp up to {tried[-1]}" if tried else "no larger tp is allowed"
        return Lever(kind, None, False, s.cost.bytes(ctx, batch), s.limit, f"does not fit with {upto}")
    note = f"tp {found.tp} spans more than one 8-GPU node" if found.tp > 8 else ""
    return Lever(kind, found.tp, True, found.cost.bytes(ctx, batch), found.limit, note)


def _chart_contexts(ctxs: tuple[int, ...], points: int = 64) -> tuple[int, ...]:
    """Geometric steps from an eighth of the smallest asked context to eight times the largest."""
    lo, hi = max(1, min(ctxs) // 8), max(ctxs) * 8
    steps = {round(lo * (hi / lo) ** (i / (points - 1))) for i in range(points)}
    return tuple(sorted(steps | set(ctxs)))


def _chart(setups: Sequence[_Setup], ctxs: tuple[int, ...], batch: int, reserve: int) -> Chart:
    xs = _chart_contexts(ctxs)
    series = tuple(
        ChartSeries(
            g=s.layout.kv_heads or 0,
            totals=tuple(s.budget.weights_bytes + reserve + s.cost.bytes(c, batch) for c in xs),
            max_ctx=s.cost.max_ctx(batch, s.limit),
        )
        for s in setups
    )
    return Chart(batch, xs, setups[0].budget.requested_bytes, reserve, series, ctxs)


def _pick_notes(
    choices: Sequence[GChoice], own: int | None, tp: int, types: CacheTypes, gpu: GpuSelection
) -> tuple[str, ...]:
    notes = []
    gs = [c.g for c in choices]
    if own is not None and any(g < own for g in gs):
        notes.append(
            f"G below the model's own {own}: mean-pool each group of K/V heads into one and uptrain on about 5% of "
            f"the pretraining compute ({GQA_PAPER}); up to {SAFE_GROUP} query heads per KV head stay near MHA "
            "quality, G = 1 (MQA) loses measurably on harder tasks"
        )
    if own is not None and any(g > own for g in gs):
        notes.append(f"G above the model's own {own}: needs a checkpoint trained with that many KV heads")
    if own is None:
        notes.append("the model's layers differ in KV heads; every row sets all attention layers to G")
    if any(c.copies_heads for c in choices):
        notes.append(
            f"G < tp {tp}: every rank keeps one whole KV head, so the heads are copied and KV per GPU stops "
            "shrinking below G = tp"
        )
    if types.note:
        notes.append(types.note)
    if types.k.block_bytes == 1 and gpu.entry is not None and gpu.entry.fp8 is False:
        notes.append(
            f"{gpu.label} has no fp8 arithmetic: a 1-byte KV cache is stored in 8 bits and converted for attention; "
            "check that your engine's attention backend supports it on this GPU"
        )
    weights_notes = {n for c in choices for n in c.weights.notes}
    notes.extend(sorted(weights_notes))
    if not all(c.weights.exact for c in choices):
        notes.append("weights are an estimate for this model (see `kvplan size` notes)")
    return tuple(notes)


# ----------------------------------------------------------------------------------------------------------
# fit: results


@dataclass(frozen=True)
class CtxAnswer:
    """The longest context that fits at one batch."""

    batch: int
    #: None: unbounded (the cache stops growing); 0: not even one token fits.
    ctx: int | None
    #: Per-GPU KV at that context (at the plateau when unbounded, at ctx 1 when nothing fits).
    kv_bytes: int
    kv_budget_bytes: int

    @property
    def missing_bytes(self) -> int:
        """Per GPU, what is missing for one token when nothing fits (else 0)."""
        return max(0, self.kv_bytes - self.kv_budget_bytes) if self.ctx == 0 else 0


@dataclass(frozen=True)
class BatchAnswer:
    """The most concurrent sequences that fit at one context."""

    ctx: int
    #: None: a sequence costs nothing; 0: not even one fits.
    batch: int | None
    #: Per-GPU KV at that batch (of one sequence when nothing fits).
    kv_bytes: int
    kv_budget_bytes: int

    @property
    def missing_bytes(self) -> int:
        return max(0, self.kv_bytes - self.kv_budget_bytes) if self.batch == 0 else 0


@dataclass(frozen=True)
class GpusAnswer:
    """The fewest tensor-parallel GPUs on which ``batch`` x ``ctx`` fits."""

    ctx: int
    batch: int
    #: None: no allowed tp fits.
    tp: int | None
    #: The tp values the model and engine allow (those tried, ascending).
    tried: tuple[int, ...]
    #: At ``tp`` (or at the largest tried when none fits): per-GPU KV and budget.
    kv_bytes: int
    budget: Budget | None
    #: At ``tp``: the longest context at this batch and the most sequences at this ctx.
    max_ctx: int | None
    max_batch: int | None


@dataclass(frozen=True)
class FitCheck:
    """Whether ``batch`` x ``ctx`` fits on the plan's GPUs."""

    ctx: int
    batch: int
    kv_bytes: int
    kv_budget_bytes: int

    @property
    def fits(self) -> bool:
        return self.kv_bytes <= self.kv_budget_bytes

    @property
    def headroom_bytes(self) -> int:
        return self.kv_budget_bytes - self.kv_bytes


@dataclass(frozen=True)
class FitReport:
    """Everything ``kvplan fit`` shows. Bytes are per GPU."""

    source: ModelSource
    layout: CacheLayout
    own_g: int | None
    gpu: GpuSelection
    engine: str
    tp: int
    kv_types: CacheTypes
    weights: WeightEstimate
    budget: Budget
    ctx_source: str
    ctxs: tuple[int, ...]
    batches: tuple[int, ...]
    #: One per batch: the longest context.
    max_ctx: tuple[CtxAnswer, ...]
    #: One per context: the most sequences.
    max_batch: tuple[BatchAnswer, ...]
    #: One per (ctx, batch): the fewest GPUs.
    min_gpus: tuple[GpusAnswer, ...]
    #: One per (ctx, batch): does it fit on the plan's GPUs.
    checks: tuple[FitCheck, ...]
    notes: tuple[str, ...]

    @property
    def fits(self) -> bool:
        return all(c.fits for c in self.checks)

    @property
    def grows_with_context(self) -> bool:
        return any(kind.grows_with_context for kind in self.layout.kinds)


def fit(
    model: str,
    *,
    gpu: str | GpuSelection | None,
    ctx: int | Sequence[int] | None = None,
    batch: int | Sequence[int] = 1,
    kv_cache_dtype: str = "auto",
    kv_heads: int | None = None,
    engine: str = "ideal",
    tensor_parallel_size: int | None = None,
    num_gpus: int | None = None,
    utilization: float = 0.90,
    reserve_bytes: int | None = None,
    weights_dtype: str | None = None,
    gpu_files: Sequence[Path] = (),
    revision: str | None = None,
    token: str | None = None,
) -> FitReport:
    """For an existing model on ``gpu``: the longest context at each batch, the most sequences at each context
    and the fewest GPUs for each (ctx, batch). ``ctx`` defaults to the model's max_position_embeddings."""
    if gpu is None:
        raise OptionError("--gpu", _GPU_HINT)
    source = resolve(model, revision=revision, token=token)
    from kvplan.config_reader import read_config

    layout = read_config(source.raw, source.model_id, source.describe())
    if ctx is None:
        ctx, ctx_source = default_context(layout, None)
    else:
        ctx_source = "--ctx"
    return fit_for_layout(
        layout,
        source,
        select_gpu(gpu, num_gpus=num_gpus, gpu_files=gpu_files),
        ctx,
        batch,
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        utilization=utilization,
        reserve_bytes=reserve_bytes,
        weights_dtype=weights_dtype,
        ctx_source=ctx_source,
    )


def fit_for_layout(
    layout: CacheLayout,
    source: ModelSource,
    gpu: GpuSelection,
    ctx: int | Sequence[int],
    batch: int | Sequence[int] = 1,
    *,
    kv_cache_dtype: str = "auto",
    kv_heads: int | None = None,
    engine: str = "ideal",
    tensor_parallel_size: int | None = None,
    utilization: float = 0.90,
    reserve_bytes: int | None = None,
    weights_dtype: str | None = None,
    ctx_source: str = "--ctx",
) -> FitReport:
    """:func:`fit` for a layout already read."""
    from kvplan.engines import get_engine
    from kvplan.weights import weight_bytes

    ctxs, batches = _as_counts(ctx, "--ctx"), _as_counts(batch, "--batch")
    gpu, tp = tensor_parallel(gpu, tensor_parallel_size)
    hw = _Hardware(get_engine(engine), gpu, utilization, _reserve(reserve_bytes))
    own = layout.kv_heads if layout.attention_layers else None
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    weights = weight_bytes(layout, dtype=weights_dtype, kv_heads=kv_heads)
    s = hw.setup(layout, tp, kv_cache_dtype, weights)
    cost, limit = s.cost, s.limit

    ctx_answers = []
    for b in batches:
        longest = cost.max_ctx(b, limit)
        at = CTX_CAP if longest is None else max(longest, 1)
        ctx_answers.append(CtxAnswer(b, longest, cost.bytes(at, b), limit))
    batch_answers = []
    for c in ctxs:
        most = cost.max_batch(c, limit)
        batch_answers.append(BatchAnswer(c, most, cost.bytes(c, max(most or 1, 1)), limit))
    by_tp: dict[int, _Setup] = {tp: s}
    gpu_answers, checks = [], []
    for c in ctxs:
        for b in batches:
            checks.append(FitCheck(c, b, cost.bytes(c, b), limit))
            found, tried = hw.fewest_gpus(layout, c, b, kv_cache_dtype, weights, cache=by_tp)
            shown = found or (by_tp[tried[-1]] if tried else None)
            gpu_answers.append(
                GpusAnswer(
                    ctx=c,
                    batch=b,
                    tp=None if found is None else found.tp,
                    tried=tried,
                    kv_bytes=shown.cost.bytes(c, b) if shown else cost.bytes(c, b),
                    budget=shown.budget if shown else None,
                    max_ctx=found.cost.max_ctx(b, found.limit) if found else None,
                    max_batch=found.cost.max_batch(c, found.limit) if found else None,
                )
            )
    notes = list(weights.notes)
    if not weights.exact:
        notes.append("weights are an estimate for this model")
    if s.cost.types.note:
        notes.append(s.cost.types.note)
    g = layout.kv_heads if layout.attention_layers else None
    if g is not None and g < tp:
        notes.append(f"tp {tp} > {g} KV heads: every rank keeps one whole head, so the heads are copied {tp // g}x")
    return FitReport(
        source=source,
        layout=layout,
        own_g=own,
        gpu=gpu,
        engine=hw.engine.name,
        tp=tp,
        kv_types=s.cost.types,
        weights=weights,
        budget=s.budget,
        ctx_source=ctx_source,
        ctxs=ctxs,
        batches=batches,
        max_ctx=tuple(ctx_answers),
        max_batch=tuple(batch_answers),
        min_gpus=tuple(gpu_answers),
        checks=tuple(checks),
        notes=tuple(notes),
    )

"""pick-g: the results and the computation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from kvplan.errors import OptionError, Param, spell
from kvplan.formula import attention_kind_name, default_context, valid_kv_heads, with_kv_heads
from kvplan.layout import CacheLayout, ConfigWarning
from kvplan.readers.context import ContextLimit, beyond_limit_note, context_limit
from kvplan.readers.model import ReadModel
from kvplan.resolve import ModelSource, read_model, resolve

if TYPE_CHECKING:
    from kvplan.engines import EngineOptions
    from kvplan.formula import CacheTypes
    from kvplan.gpus import Budget, GpuSelection
    from kvplan.weights import WeightEstimate

from kvplan.solver.scenario import Scenario, load_scenario
from kvplan.solver.shared import (
    GQA_PAPER,
    SAFE_GROUP,
    FitsBudget,
    _as_counts,
    _Hardware,
    _Setup,
    cap_ctx,
    check_one_stage,
    gpu_hint,
    quality_note,
    select_gpu,
    tensor_parallel,
)


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
class GOption(FitsBudget):
    """One G at one (ctx, batch). Bytes are per GPU."""

    g: int
    kv_bytes: int
    weights_bytes: int
    kv_budget_bytes: int
    #: The most sequences of this ctx that fit (0: not even one; None: a sequence costs nothing).
    max_batch: int | None
    #: The longest context at this batch that fits, capped at the model's context limit (0: not even one token;
    #: None: unbounded).
    max_ctx: int | None
    #: What memory alone allows, before the cap (None: unbounded).
    max_ctx_by_memory: int | None

    @property
    def ctx_capped(self) -> bool:
        """The model's context limit, not memory, sets max_ctx."""
        return self.max_ctx != self.max_ctx_by_memory

    @property
    def total_bytes(self) -> int:
        """KV + weights per GPU."""
        return self.kv_bytes + self.weights_bytes


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
    #: The model's longest context, where max_ctx is capped (None: not stated, or the reference scenario, whose
    #: model is a shape planned at the scenario's context rather than the checkpoint).
    context_limit: ContextLimit | None
    #: Every G the tensor-parallel size allows, largest first.
    choices: tuple[GChoice, ...]
    #: G values that divide H but that tp cannot split evenly, with why.
    skipped: tuple[tuple[int, str], ...]
    #: One per (ctx, batch), ctx-major.
    cells: tuple[PickGCell, ...]
    ways: tuple[Way, ...]
    charts: tuple[Chart, ...]
    notes: tuple[str, ...]
    #: The command that serves the model at the largest asked context x batch when its own G fits there
    #: (None otherwise, or when the engine has no server), and what it needs besides its arguments.
    launch_command: tuple[str, ...] | None = None
    launch_notes: tuple[str, ...] = ()

    @property
    def warnings(self) -> tuple[ConfigWarning, ...]:
        """What the reader and the weight counter did not fully understand (weights: of the first G)."""
        weights = self.choices[0].weights.params.warnings if self.choices else ()
        return (*self.layout.warnings, *weights)

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


def pick_g(
    model: str | None = None,
    *,
    gpu: str | GpuSelection | None = None,
    ctx: int | Sequence[int] | None = None,
    batch: int | Sequence[int] | None = None,
    kv_cache_dtype: str = "auto",
    engine: str | None = None,
    tensor_parallel_size: int | None = None,
    num_gpus: int | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    options: EngineOptions | None = None,
    weights_dtype: str | None = None,
    gpu_files: Sequence[Path] = (),
    chart: bool = False,
    revision: str | None = None,
    token: str | None = None,
    images: int | None = None,
    strict: bool = False,
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
        raise OptionError(Param.GPU, gpu_hint())
    source = resolve(model, revision=revision, token=token)
    from kvplan.readers.config import refuse_not_understood

    read = read_model(source, images=images, strict=strict)
    layout = read.layout
    if ctx is None and scenario is not None:
        ctx, ctx_source = scenario.ctx, f"the {scenario.name} scenario"
    elif ctx is None:
        ctx, ctx_source = default_context(layout, None)
    else:
        ctx_source = spell(Param.CTX)
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
            values = _as_counts(asked, Param(name))
            if values != (own,):
                changes.append(f"{name} {', '.join(f'{v:,}' for v in values)} instead of {own:,}")
    report = pick_g_for_layout(
        read,
        source,
        selection,
        ctx,
        batch,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        tensor_parallel_size=tensor_parallel_size,
        utilization=utilization,
        reserve_bytes=reserve_bytes,
        options=options,
        weights_dtype=weights_dtype,
        chart=chart,
        scenario=scenario,
        scenario_changes=tuple(changes),
        ctx_source=ctx_source,
    )
    if strict:
        refuse_not_understood(layout.model, report.warnings)
    return report


def pick_g_for_layout(
    read: ReadModel,
    source: ModelSource,
    gpu: GpuSelection,
    ctx: int | Sequence[int],
    batch: int | Sequence[int],
    *,
    kv_cache_dtype: str = "auto",
    engine: str | None = None,
    tensor_parallel_size: int | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    options: EngineOptions | None = None,
    weights_dtype: str | None = None,
    chart: bool = False,
    ways: bool = True,
    scenario: Scenario | None = None,
    scenario_changes: tuple[str, ...] = (),
    ctx_source: str | None = None,
) -> PickGReport:
    """:func:`pick_g` for a model already read (:func:`kvplan.resolve.read_model`). ``ways=False`` skips the ways
    to reach a G (single cell only); ``engine`` None is ideal, or llama.cpp for a GGUF model."""
    from kvplan.engines import EngineOptions, engine_for, get_engine
    from kvplan.weights import weight_bytes

    layout = read.layout
    engine, engine_note = engine_for(layout, engine)
    ctxs, batches = _as_counts(ctx, Param.CTX), _as_counts(batch, Param.BATCH)
    gpu, tp = tensor_parallel(gpu, tensor_parallel_size)
    profile = get_engine(engine)
    check_one_stage(profile, gpu.count)
    hw = _Hardware(profile, gpu, utilization, reserve_bytes, options or EngineOptions(), max(ctxs))
    if not layout.attention_layers:
        kinds = ", ".join(k.value for k in layout.kinds)
        raise OptionError(Param.MODEL, f"{layout.model} has no per-head K/V to choose G for (layers: {kinds})")
    h = min(layer.q_heads for layer in layout.attention_layers)
    own = layout.kv_heads
    gs = sorted(valid_kv_heads(layout), reverse=True)
    opts = hw.opts(tp)
    hw.engine.validate(with_kv_heads(layout, gs[0]), opts)  # tp must divide the query heads

    choices: list[GChoice] = []
    setups: list[_Setup] = []
    skipped: list[tuple[int, str]] = []
    for g in gs:
        layout_g = with_kv_heads(layout, g)
        try:
            hw.engine.validate(layout_g, opts)
        except OptionError as err:
            skipped.append((g, err.problem))
            continue
        weights = weight_bytes(read, dtype=weights_dtype, kv_heads=g)
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

    model_limit = None if scenario is not None else context_limit(layout)
    cells = _cells(setups, ctxs, batches, None if model_limit is None else model_limit.tokens)
    report_ways: tuple[Way, ...] = ()
    if ways and len(cells) == 1:
        report_ways = _ways(hw, cells[0], choices, setups, own, kv_cache_dtype)
    held = setups[0].budget.reserve_bytes
    charts = tuple(_chart(setups, ctxs, b, held) for b in batches) if chart else ()
    types = setups[0].cost.types
    fraction = setups[0].budget.rule.fraction
    command, launch_notes = _launch(hw, layout, source.requested, kv_cache_dtype, cells, own, tp, fraction)
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
        utilization=setups[0].budget.utilization,
        reserve_bytes=held,
        query_heads=h,
        own_g=own,
        ctx_source=ctx_source or spell(Param.CTX),
        ctxs=ctxs,
        batches=batches,
        context_limit=model_limit,
        choices=tuple(choices),
        skipped=tuple(skipped),
        cells=cells,
        ways=report_ways,
        charts=charts,
        notes=((engine_note,) if engine_note else ())
        + _pick_notes(choices, own, tp, types, gpu, beyond_limit_note(model_limit, max(ctxs))),
        launch_command=command,
        launch_notes=launch_notes,
    )


def _cells(
    setups: Sequence[_Setup], ctxs: tuple[int, ...], batches: tuple[int, ...], ctx_limit: int | None
) -> tuple[PickGCell, ...]:
    """The hot path: every G x ctx x batch, integers only, one engine cost per (G, ctx) when linear."""
    per_g: list[list[GOption]] = []
    for s in setups:
        cost, limit, g, weights = s.cost, s.limit, s.layout.kv_heads or 0, s.budget.weights_bytes
        ctx_at = [(cap_ctx(m, ctx_limit), m) for m in (cost.max_ctx(b, limit) for b in batches)]
        column: list[GOption] = []
        for c in ctxs:
            most = cost.max_batch(c, limit)
            if cost.linear:
                one = cost.bytes(c, 1)
                column.extend(
                    GOption(g, one * b, weights, limit, most, m, mem)
                    for b, (m, mem) in zip(batches, ctx_at, strict=True)
                )
            else:
                column.extend(
                    GOption(g, cost.bytes(c, b), weights, limit, most, m, mem)
                    for b, (m, mem) in zip(batches, ctx_at, strict=True)
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
        levers.append(Lever("fp8", None, False, kv, s.limit, f"not available: {err.problem}"))
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
    choices: Sequence[GChoice], own: int | None, tp: int, types: CacheTypes, gpu: GpuSelection, beyond: str
) -> tuple[str, ...]:
    notes = [beyond] if beyond else []
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


def _launch(
    hw: _Hardware,
    layout: CacheLayout,
    model: str,
    kv_cache_dtype: str,
    cells: Sequence[PickGCell],
    own: int | None,
    tp: int,
    fraction: Fraction,
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The launch command for the model as it is, at the largest context and batch asked, when its own G fits."""
    from kvplan.engines import LaunchPlan

    if not hw.engine.has_server:
        return None, ()
    cell = max(cells, key=lambda c: (c.ctx, c.batch))
    option = next((o for o in cell.options if o.g == own), None)
    if option is None or not option.fits:
        return None, (f"no launch command: the model's own G does not fit {cell.batch} x {cell.ctx:,} tokens",)
    plan = LaunchPlan(
        model=model,
        max_model_len=cell.ctx,
        max_num_seqs=cell.batch,
        kv_cache_dtype=kv_cache_dtype,
        fraction=fraction,
        opts=hw.opts(tp),
    )
    return hw.engine.launch(layout, plan)

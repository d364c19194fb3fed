"""fit: the longest context, the most sequences and the fewest GPUs for a plan."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kvplan.errors import OptionError, Param, spell
from kvplan.formula import default_context, with_kv_heads
from kvplan.layout import CacheLayout, ConfigWarning
from kvplan.readers.context import ContextLimit, beyond_limit_note, context_limit
from kvplan.readers.model import ReadModel
from kvplan.resolve import ModelSource, read_model, resolve

if TYPE_CHECKING:
    from kvplan.engines import EngineOptions
    from kvplan.formula import CacheTypes
    from kvplan.gpus import Budget, GpuSelection
    from kvplan.weights import WeightEstimate

from kvplan.solver.search import CTX_CAP
from kvplan.solver.shared import (
    FitsBudget,
    _as_counts,
    _Hardware,
    _Setup,
    cap_ctx,
    check_one_stage,
    gpu_hint,
    select_gpu,
    tensor_parallel,
)


@dataclass(frozen=True)
class CtxAnswer:
    """The longest context that fits at one batch."""

    batch: int
    #: The answer: what memory allows, capped at the model's context limit. None: unbounded (the cache stops
    #: growing and the model states no limit); 0: not even one token fits.
    ctx: int | None
    #: Per-GPU KV at that context (at the plateau when unbounded, at ctx 1 when nothing fits).
    kv_bytes: int
    kv_budget_bytes: int
    #: What memory alone allows (None: unbounded), before the cap.
    by_memory: int | None = None
    #: The model's context limit (None: it states none).
    context_limit: int | None = None

    @property
    def capped(self) -> bool:
        """The model's limit, not memory, sets the answer."""
        return self.context_limit is not None and self.ctx == self.context_limit and self.by_memory != self.ctx

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
    #: At ``tp``: the longest context at this batch (capped at the model's limit), what memory alone allows
    #: (None: unbounded), and the most sequences at this ctx.
    max_ctx: int | None
    max_ctx_by_memory: int | None
    max_batch: int | None


@dataclass(frozen=True)
class FitCheck(FitsBudget):
    """Whether ``batch`` x ``ctx`` fits on the plan's GPUs."""

    ctx: int
    batch: int
    kv_bytes: int
    kv_budget_bytes: int


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
    #: The model's longest context (max_position_embeddings or its RoPE-scaled limit); None when not stated.
    context_limit: ContextLimit | None
    #: One per batch: the longest context.
    max_ctx: tuple[CtxAnswer, ...]
    #: One per context: the most sequences.
    max_batch: tuple[BatchAnswer, ...]
    #: One per (ctx, batch): the fewest GPUs.
    min_gpus: tuple[GpusAnswer, ...]
    #: One per (ctx, batch): does it fit on the plan's GPUs.
    checks: tuple[FitCheck, ...]
    notes: tuple[str, ...]
    #: The command that serves the largest asked context x batch on the fewest GPUs it fits on (None: nothing
    #: fits, or the engine has no server), and what it needs besides its arguments.
    launch_command: tuple[str, ...] | None = None
    launch_notes: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return all(c.fits for c in self.checks)

    @property
    def warnings(self) -> tuple[ConfigWarning, ...]:
        """What the reader and the weight counter did not fully understand."""
        return (*self.layout.warnings, *self.weights.params.warnings)

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
    engine: str | None = None,
    tensor_parallel_size: int | None = None,
    num_gpus: int | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    options: EngineOptions | None = None,
    weights_dtype: str | None = None,
    gpu_files: Sequence[Path] = (),
    revision: str | None = None,
    token: str | None = None,
    images: int | None = None,
    strict: bool = False,
) -> FitReport:
    """For an existing model on ``gpu``: the longest context at each batch, the most sequences at each context
    and the fewest GPUs for each (ctx, batch). ``ctx`` defaults to the model's context limit, and the longest
    context is capped there (each answer keeps what memory alone would allow)."""
    if gpu is None:
        raise OptionError(Param.GPU, gpu_hint())
    source = resolve(model, revision=revision, token=token)
    from kvplan.readers.config import refuse_not_understood

    read = read_model(source, images=images, strict=strict)
    layout = read.layout
    if ctx is None:
        ctx, ctx_source = default_context(layout, None)
    else:
        ctx_source = spell(Param.CTX)
    report = fit_for_layout(
        read,
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
        options=options,
        weights_dtype=weights_dtype,
        ctx_source=ctx_source,
    )
    if strict:
        refuse_not_understood(layout.model, report.warnings)
    return report


def fit_for_layout(
    read: ReadModel,
    source: ModelSource,
    gpu: GpuSelection,
    ctx: int | Sequence[int],
    batch: int | Sequence[int] = 1,
    *,
    kv_cache_dtype: str = "auto",
    kv_heads: int | None = None,
    engine: str | None = None,
    tensor_parallel_size: int | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    options: EngineOptions | None = None,
    weights_dtype: str | None = None,
    ctx_source: str | None = None,
) -> FitReport:
    """:func:`fit` for a model already read (:func:`kvplan.resolve.read_model`; ``engine`` None: ideal, or
    llama.cpp for a GGUF model)."""
    from kvplan.engines import EngineOptions, engine_for, get_engine
    from kvplan.weights import weight_bytes

    layout = read.layout
    engine, engine_note = engine_for(layout, engine)
    ctxs, batches = _as_counts(ctx, Param.CTX), _as_counts(batch, Param.BATCH)
    gpu, tp = tensor_parallel(gpu, tensor_parallel_size)
    profile = get_engine(engine)
    check_one_stage(profile, gpu.count)
    hw = _Hardware(profile, gpu, utilization, reserve_bytes, options or EngineOptions(), max(ctxs))
    own = layout.kv_heads if layout.attention_layers else None
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    weights = weight_bytes(read, dtype=weights_dtype, kv_heads=kv_heads)
    s = hw.setup(layout, tp, kv_cache_dtype, weights)
    cost, limit = s.cost, s.limit

    model_limit = context_limit(layout)
    cap = None if model_limit is None else model_limit.tokens
    ctx_answers = []
    for b in batches:
        longest = cost.max_ctx(b, limit)
        answer = cap_ctx(longest, cap)
        at = CTX_CAP if answer is None else max(answer, 1)
        ctx_answers.append(CtxAnswer(b, answer, cost.bytes(at, b), limit, longest, cap))
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
            there = found.cost.max_ctx(b, found.limit) if found else None
            gpu_answers.append(
                GpusAnswer(
                    ctx=c,
                    batch=b,
                    tp=None if found is None else found.tp,
                    tried=tried,
                    kv_bytes=shown.cost.bytes(c, b) if shown else cost.bytes(c, b),
                    budget=shown.budget if shown else None,
                    max_ctx=cap_ctx(there, cap) if found else None,
                    max_batch=found.cost.max_batch(c, found.limit) if found else None,
                    max_ctx_by_memory=there,
                )
            )
    notes = [engine_note] if engine_note else []
    notes += weights.notes
    beyond = beyond_limit_note(model_limit, max(ctxs))
    if beyond:
        notes.append(beyond)
    if not weights.exact:
        notes.append("weights are an estimate for this model")
    if s.cost.types.note:
        notes.append(s.cost.types.note)
    g = layout.kv_heads if layout.attention_layers else None
    if g is not None and g < tp:
        notes.append(f"tp {tp} > {g} KV heads: every rank keeps one whole head, so the heads are copied {tp // g}x")
    command, launch_notes = _launch(hw, layout, source.requested, kv_cache_dtype, gpu_answers, kv_heads)
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
        ctx_source=ctx_source or spell(Param.CTX),
        ctxs=ctxs,
        batches=batches,
        context_limit=model_limit,
        max_ctx=tuple(ctx_answers),
        max_batch=tuple(batch_answers),
        min_gpus=tuple(gpu_answers),
        checks=tuple(checks),
        notes=tuple(notes),
        launch_command=command,
        launch_notes=launch_notes,
    )


def _launch(
    hw: _Hardware,
    layout: CacheLayout,
    model: str,
    kv_cache_dtype: str,
    answers: Sequence[GpusAnswer],
    kv_heads: int | None,
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The launch command for the largest context and batch asked, on the fewest GPUs they fit on."""
    from kvplan.engines import LaunchPlan

    if not hw.engine.has_server:
        return None, ()
    target = max(answers, key=lambda a: (a.ctx, a.batch))
    if target.tp is None or target.budget is None:
        return None, (f"no launch command: {target.batch} x {target.ctx:,} tokens fits on no tp tried",)
    plan = LaunchPlan(
        model=model,
        max_model_len=target.ctx,
        max_num_seqs=target.batch,
        kv_cache_dtype=kv_cache_dtype,
        fraction=target.budget.rule.fraction,
        opts=hw.opts(target.tp),
    )
    command, notes = hw.engine.launch(layout, plan)
    if command is not None and kv_heads is not None:
        notes = (
            *notes,
            f"planned with the {spell(Param.KV_HEADS)} {kv_heads} what-if: the command serves the checkpoint as it is",
        )
    return command, notes

"""The typed core of each command: resolve a model, build its layout, cost it. The CLI only wires these."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kvplan.dtypes import AUTO
from kvplan.errors import OptionError, Param, spell
from kvplan.formula import (
    CacheEstimate,
    SpectrumPoint,
    check_positive,
    default_context,
    estimate,
    g_spectrum,
    resolve_types,
    with_kv_heads,
)
from kvplan.layout import CacheLayout, ConfigWarning
from kvplan.limits import MAX_COUNT
from kvplan.readers.context import ContextLimit, beyond_limit_note, context_limit
from kvplan.readers.model import ReadModel
from kvplan.resolve import ModelSource, read_layout, read_model, resolve

if TYPE_CHECKING:
    from kvplan.engines import Capacity, EngineEstimate, EngineOptions
    from kvplan.gpus import Budget

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)\s*$")
#: Digits a count may have before it is converted (MAX_COUNT has 19): no 4,300-digit int() conversions.
_MAX_DIGITS = 40
_MULTIPLIERS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "K": 2**10, "M": 2**20, "G": 2**30}


def parse_count(text: str | int, option: Param) -> int:
    """A token or sequence count: ``4096``, ``4k`` (4,000) or ``4K`` (4,096).

    Lower-case suffixes are decimal and upper-case binary, exactly as vLLM parses ``--max-model-len``.
    """
    if isinstance(text, int):
        return check_positive(option, text)
    match = _SIZE.match(text)
    if not match:
        raise OptionError(option, f"{text!r} is not a count (examples: 4096, 32k = 32,000, 32K = 32,768)")
    number, suffix = match.groups()
    if len(number) > _MAX_DIGITS:
        raise OptionError(option, f"a {len(number):,}-digit number is past the largest count, {MAX_COUNT:,}")
    value = float(number) * _MULTIPLIERS[suffix] if "." in number else int(number) * _MULTIPLIERS[suffix]
    if value != int(value):
        raise OptionError(option, f"{text!r} is not a whole number of tokens")
    return check_positive(option, int(value))


def parse_counts(text: str, option: Param) -> list[int]:
    """A comma-separated list of counts (``4k,32k,128K``)."""
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise OptionError(option, "expected one or more counts, e.g. 4096 or 4K,32K")
    return [parse_count(p, option) for p in parts]


@dataclass(frozen=True)
class SizeReport:
    """Everything ``kvplan size`` shows."""

    source: ModelSource
    layout: CacheLayout
    estimate: CacheEstimate
    spectrum: tuple[SpectrumPoint, ...]
    #: Where ctx came from: "--ctx" or the config key.
    ctx_source: str
    #: The model's own KV heads before a --kv-heads what-if (None when not uniform or not applicable).
    own_kv_heads: int | None
    #: The same plan under an engine's accounting (``ideal`` when none was asked for).
    engine: EngineEstimate
    #: That engine's figure for a single sequence at ctx (engines may pad or share across sequences).
    engine_sequence_bytes: int
    #: The model's context limit (None: the config states no length).
    context_limit: ContextLimit | None = None
    #: Why that engine when none was named (a GGUF model: llama.cpp), else empty.
    engine_note: str = ""

    @property
    def warnings(self) -> tuple[ConfigWarning, ...]:
        """What the reader did not fully understand (size reads no weights)."""
        return self.layout.warnings

    @property
    def notes(self) -> tuple[str, ...]:
        """The estimate's notes, and a warning when ctx passes the model's own maximum."""
        out = [self.engine_note] if self.engine_note else []
        out += self.estimate.notes
        note = beyond_limit_note(self.context_limit, self.estimate.ctx)
        if note:
            out.append(note)
        return tuple(out)


def load(
    model: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    images: int | None = None,
    strict: bool = False,
) -> ReadModel:
    """A model as every command reads it (its layout, and the config its weights are counted from):
    ``images`` per sequence for cross-attention models, and under ``strict`` a NotUnderstoodError instead of
    warnings for what the reader did not fully understand."""
    return read_model(resolve(model, revision=revision, token=token), images=images, strict=strict)


def size(
    model: str,
    *,
    ctx: int | None = None,
    batch: int = 1,
    kv_cache_dtype: str = AUTO,
    kv_heads: int | None = None,
    engine: str | None = None,
    options: EngineOptions | None = None,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
    revision: str | None = None,
    token: str | None = None,
    images: int | None = None,
    strict: bool = False,
) -> SizeReport:
    """Bytes per token, per sequence and in total for ``model`` at ``ctx`` x ``batch``, under ``engine``
    (None: ``ideal``, or llama.cpp for a GGUF model).

    ``images``: images per sequence for cross-attention models (None: the default); ``strict``: refuse a
    config the reader did not fully understand (NotUnderstoodError) instead of answering with warnings."""
    source = resolve(model, revision=revision, token=token)
    layout = read_layout(source, images=images, strict=strict)
    return size_of_layout(
        layout,
        source,
        ctx=ctx,
        batch=batch,
        kv_cache_dtype=kv_cache_dtype,
        kv_heads=kv_heads,
        engine=engine,
        options=options,
        k_dtype=k_dtype,
        v_dtype=v_dtype,
    )


def size_of_layout(
    layout: CacheLayout,
    source: ModelSource,
    *,
    ctx: int | None = None,
    batch: int = 1,
    kv_cache_dtype: str = AUTO,
    kv_heads: int | None = None,
    engine: str | None = None,
    options: EngineOptions | None = None,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
) -> SizeReport:
    from kvplan.engines import engine_for, get_engine

    engine, engine_note = engine_for(layout, engine)
    own = layout.kv_heads if layout.attention_layers else None
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    limit = context_limit(layout)  # a bad rope_scaling is an error now, not halfway through the output
    ctx_value, ctx_source = default_context(layout, ctx)
    check_positive(Param.BATCH, batch)
    profile = get_engine(engine)
    costed = profile.estimate(
        layout, ctx_value, batch, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=options
    )
    single = profile.estimate(
        layout, ctx_value, 1, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=options
    )
    return SizeReport(
        source=source,
        layout=layout,
        estimate=costed.ideal,
        spectrum=g_spectrum(layout, ctx_value, batch, costed.types, own=own),
        ctx_source=ctx_source,
        own_kv_heads=own,
        engine=costed,
        engine_sequence_bytes=single.deployment_bytes,
        context_limit=limit,
        engine_note=engine_note,
    )


@dataclass(frozen=True)
class CatalogRow:
    """One bundled model, as ``kvplan models`` lists it."""

    model_id: str
    family: str
    layers: int
    query_heads: int
    #: The distinct KV-head counts of the attention layers, ascending (empty: MLA, pure SSM).
    kv_heads: tuple[int, ...]
    #: The distinct per-token head dims of the layers that grow with context (MLA: the latent), ascending.
    head_dims: tuple[int, ...]
    kinds: tuple[str, ...]
    dtype: str
    bytes_per_token: int
    #: The other names that reach this config (aliases.yaml), as written there.
    aliases: tuple[str, ...]


def span_text(values: Sequence[int]) -> str:
    """``8``, ``1-8`` where layers differ, ``-`` for none."""
    if not values:
        return "-"
    return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"


def list_models() -> list[CatalogRow]:
    """Every bundled model with its shape and bytes per token at the serving dtype (``auto``)."""
    from kvplan import catalog
    from kvplan.catalog import load_json_text
    from kvplan.readers.config import read_config

    by_target: dict[str, list[str]] = {}
    for name in catalog.names():
        if name.is_alias:
            by_target.setdefault(name.entry.model_id, []).append(name.name)
    rows = []
    for _, entry in sorted(catalog.bundled_models().items()):
        layout = read_config(load_json_text(entry.read_text(), entry.location), entry.model_id, entry.location)
        types = resolve_types(layout)
        attention = layout.attention_layers
        dims = {layer.k_head_dim for layer in layout.layers if layer.kind.grows_with_context}
        rows.append(
            CatalogRow(
                model_id=entry.model_id,
                family=layout.family,
                layers=layout.num_layers,
                query_heads=layout.query_heads,
                kv_heads=tuple(sorted({layer.k_heads for layer in attention})),
                head_dims=tuple(sorted(dims)),
                kinds=tuple(k.value for k in layout.kinds),
                dtype=types.activation.name,
                bytes_per_token=estimate(layout, 1, 1, types).bytes_per_token,
                aliases=tuple(sorted(by_target.get(entry.model_id, []), key=str.lower)),
            )
        )
    return rows


@dataclass(frozen=True)
class CapacityReport:
    """Everything ``kvplan capacity`` shows: where the KV memory figure came from, and what the engine makes of it."""

    source: ModelSource
    layout: CacheLayout
    capacity: Capacity
    #: How the KV memory per GPU was obtained (--kv-memory, or the GPU budget arithmetic).
    memory_lines: tuple[str, ...]
    gpu_title: str | None
    tensor_parallel_size: int
    own_kv_heads: int | None
    #: Keys that can shape the weights and no rule read (when the budget came from a GPU's weights).
    weight_warnings: tuple[ConfigWarning, ...] = ()

    @property
    def warnings(self) -> tuple[ConfigWarning, ...]:
        return (*self.layout.warnings, *self.weight_warnings)

    #: The budget the KV memory came from (None with --kv-memory).
    budget: Budget | None = None
    #: The command that serves this plan on the engine (None: ideal and transformers have no server), and what
    #: it needs besides its arguments.
    launch_command: tuple[str, ...] | None = None
    launch_notes: tuple[str, ...] = ()


def capacity(
    model: str,
    *,
    kv_memory: int | None = None,
    gpu: str | None = None,
    max_model_len: int | None = None,
    engine: str | None = None,
    kv_cache_dtype: str = AUTO,
    kv_heads: int | None = None,
    options: EngineOptions | None = None,
    num_gpus: int | None = None,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    weights_dtype: str = AUTO,
    k_dtype: str | None = None,
    v_dtype: str | None = None,
    gpu_files: Sequence[Path] = (),
    revision: str | None = None,
    token: str | None = None,
    images: int | None = None,
    strict: bool = False,
) -> CapacityReport:
    """Blocks, tokens and concurrency ``engine`` (None: vLLM, or llama.cpp for a GGUF model) gets from
    ``kv_memory`` per GPU, or from a GPU's budget."""
    from kvplan.engines import EngineOptions, LaunchPlan, Workload, engine_for, get_engine
    from kvplan.engines import capacity as engine_capacity
    from kvplan.readers.config import refuse_not_understood

    if kv_memory is None and gpu is None:
        raise OptionError(
            Param.GPU,
            f"say where the KV memory comes from: {spell(Param.GPU)} (e.g. h100) or {spell(Param.KV_MEMORY)} "
            "(e.g. 8GiB)",
        )
    if kv_memory is not None and gpu is not None:
        raise OptionError(
            Param.KV_MEMORY, f"give {spell(Param.KV_MEMORY)} (e.g. 8GiB) or {spell(Param.GPU)} (e.g. h100), not both"
        )
    source = resolve(model, revision=revision, token=token)
    read = read_model(source, images=images, strict=strict)
    layout = read.layout
    engine, engine_note = engine_for(layout, engine, "vllm")
    own = layout.kv_heads if layout.attention_layers else None
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    length, length_source = default_context(layout, max_model_len)
    opts = options or EngineOptions()
    profile = get_engine(engine)
    gpu_title = None
    weight_warnings: tuple[ConfigWarning, ...] = ()
    plan_budget = None
    if kv_memory is not None:
        memory = check_positive(Param.KV_MEMORY, kv_memory)
        lines = [f"KV memory per GPU: {memory:,} B ({spell(Param.KV_MEMORY)})"]
    else:
        from kvplan.gpus import budget, budget_lines
        from kvplan.solver import engine_options, select_gpu, tensor_parallel
        from kvplan.solver.shared import check_one_stage
        from kvplan.weights import forward_shape, weight_bytes

        assert gpu is not None
        selection, tp = tensor_parallel(
            select_gpu(gpu, num_gpus=num_gpus, gpu_files=gpu_files),
            None if opts.tensor_parallel_size == 1 else opts.tensor_parallel_size,
        )
        check_one_stage(profile, selection.count, opts.pipeline_parallel_size)
        opts = engine_options(opts, selection, tp)
        weights = weight_bytes(read, dtype=None if weights_dtype == AUTO else weights_dtype, kv_heads=kv_heads)
        per_gpu_weights = weights.bytes_per_gpu(tp)
        weight_warnings = weights.params.warnings
        if strict:
            refuse_not_understood(layout.model, weight_warnings)
        work = Workload(layout, forward_shape(layout, weights), length, opts)
        plan_budget = budget(
            selection,
            weights_bytes_per_gpu=per_gpu_weights,
            utilization=utilization,
            reserve_bytes=reserve_bytes,
            engine=profile,
            work=work,
        )
        memory = plan_budget.kv_bytes_per_gpu
        gpu_title = selection.title
        lines = [f"{selection.title}; {selection.source}", f"KV memory per GPU = {plan_budget.rule.exact_text()}"]
        lines += [line for line in budget_lines(plan_budget)[2:] if not line.startswith(("KV cache", "usable"))]
        if memory <= 0:
            raise OptionError(
                Param.GPU,
                f"nothing is left for the KV cache on {selection.title}: weights "
                f"{per_gpu_weights:,} B and the engine's other terms {plan_budget.reserve_bytes:,} B exceed the "
                f"budget; use more GPUs ({spell(Param.NUM_GPUS)} / {spell(Param.TENSOR_PARALLEL_SIZE)}) or a bigger "
                "GPU",
            )
    lines.append(f"max_model_len {length:,} ({length_source})")
    if engine_note:
        lines.append(engine_note)
    cap = engine_capacity(
        engine, layout, memory, length, kv_cache_dtype=kv_cache_dtype, k_dtype=k_dtype, v_dtype=v_dtype, opts=opts
    )
    launch = LaunchPlan(
        model=model,
        max_model_len=length,
        max_num_seqs=max(1, cap.max_concurrent_requests),
        kv_cache_dtype=kv_cache_dtype,
        k_dtype=k_dtype,
        v_dtype=v_dtype,
        fraction=None if plan_budget is None else plan_budget.rule.fraction,
        kv_cache_memory_bytes=memory if kv_memory is not None else None,
        opts=opts,
    )
    command, notes = profile.launch(layout, launch)
    return CapacityReport(
        source,
        layout,
        cap,
        tuple(lines),
        gpu_title,
        opts.tensor_parallel_size,
        own,
        weight_warnings,
        plan_budget,
        command,
        notes,
    )

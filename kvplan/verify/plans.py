"""Plans: what verify allocates for a model, and how the self-check scales plans to the device."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from kvplan.engines import EngineEstimate, EngineOptions, LayerCost, engine_for, get_engine
from kvplan.errors import KvplanError, Param
from kvplan.formula import check_positive, with_kv_heads
from kvplan.layout import CacheLayout
from kvplan.readers.model import ReadModel
from kvplan.units import human_bytes

if TYPE_CHECKING:
    pass
from kvplan.verify.common import GiB, MiB, import_torch

#: Self-check scaling keeps this share of the available memory for the plan (the rest absorbs allocator
#: rounding and the timing's query / output tensors).
HEADROOM = (9, 10)


LLAMA2_7B = "meta-llama/Llama-2-7b-hf"


LLAMA2_13B = "meta-llama/Llama-2-13b-hf"


def auto_device() -> str:
    """``cuda`` when torch sees a CUDA device, else ``mps``, else ``cpu``."""
    torch = import_torch()
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@dataclass(frozen=True)
class VerifyPlan:
    """One cache to allocate: a layout (with any --kv-heads what-if applied), ctx, batch, KV dtype and engine."""

    name: str
    layout: CacheLayout
    ctx: int
    batch: int = 1
    kv_cache_dtype: str = "auto"
    engine: str = "ideal"
    opts: EngineOptions = field(default_factory=EngineOptions)
    #: Weight bytes per GPU to allocate before the cache (0: cache only).
    weights_bytes: int = 0
    #: A size the plan is known to have (the self-check's textbook 2 GiB, 512 MiB, 64 MiB), checked too.
    nominal_bytes: int | None = None
    #: Probe the largest batch that really fits at this ctx.
    probe: bool = False
    #: Time one decode step over the allocated cache.
    timing: bool = True
    #: How the plan was made or scaled, in words ("batch 32 -> 2 to fit 2.7 GiB; weights left out ...").
    note: str = ""
    #: The pipeline stage whose layers one GPU holds here (a rank of that stage); None: the largest stage.
    stage: int | None = None
    #: Weight bytes per GPU of each pipeline stage, when counted stage by stage (multi-rank verify).
    stage_weights: tuple[int, ...] = ()

    @property
    def kv_heads(self) -> int | None:
        return self.layout.kv_heads if self.layout.attention_layers else None

    @property
    def model(self) -> str:
        return self.layout.model

    def with_batch(self, batch: int) -> VerifyPlan:
        return replace(self, batch=batch)


def stage_costs(plan: VerifyPlan, est: EngineEstimate) -> tuple[LayerCost, ...]:
    """The layers one GPU of the plan's stage holds under ``est``: its own stage, else the largest."""
    return est.largest_stage if plan.stage is None else est.stages[plan.stage]


def stage_bytes(plan: VerifyPlan, est: EngineEstimate) -> int:
    """The cache bytes one GPU of the plan's stage holds under ``est`` (per_gpu_bytes for the largest)."""
    return est.per_gpu_bytes if plan.stage is None else est.stage_bytes[plan.stage]


def predict(plan: VerifyPlan, batch: int | None = None) -> EngineEstimate:
    """The engine's estimate for the plan (at ``batch`` when given): what verify checks the device against."""
    batch = plan.batch if batch is None else batch
    engine = get_engine(plan.engine)
    return engine.estimate(plan.layout, plan.ctx, batch, kv_cache_dtype=plan.kv_cache_dtype, opts=plan.opts)


def _weights_for(read: ReadModel, kv_heads: int | None, dtype: str | None, opts: EngineOptions) -> tuple[int, str]:
    """Weight bytes per GPU (0 and a note when the config does not say enough to count them)."""
    from kvplan.weights import weight_bytes

    try:
        est = weight_bytes(read, dtype=dtype, kv_heads=kv_heads)
    except KvplanError as err:
        return 0, f"weights not counted ({err}): cache only"
    per_gpu = est.bytes_per_gpu(opts.tensor_parallel_size)
    pp = opts.pipeline_parallel_size
    if pp > 1:
        return -(-per_gpu // pp), f"weights per GPU ~ ceil({per_gpu:,} / {pp} stages) (stages not weighed apart)"
    return per_gpu, ""


def _stage_weights(read: ReadModel, kv_heads: int | None, engine: str, opts: EngineOptions) -> tuple[int, ...]:
    """Weight bytes per GPU of each pipeline stage (empty when the config does not say enough to count them)."""
    from kvplan.weights import weight_bytes

    try:
        est = weight_bytes(read, kv_heads=kv_heads)
    except KvplanError:
        return ()
    sizes = tuple(len(stage) for stage in get_engine(engine).stage_layers(read.layout, opts))
    return est.bytes_per_stage(opts.tensor_parallel_size, sizes)


def plan_for_model(
    model: str | ReadModel,
    *,
    ctx: int | None = None,
    batch: int = 1,
    kv_cache_dtype: str = "auto",
    kv_heads: int | None = None,
    engine: str | None = None,
    opts: EngineOptions | None = None,
    weights: bool = True,
    probe: bool = True,
    name: str | None = None,
) -> VerifyPlan:
    """A plan for one model (a name :func:`kvplan.load_model` resolves, or a model already read), as ``kvplan verify
    --model`` builds it: the --kv-heads what-if applied, ctx defaulting to the model's maximum, weight bytes
    per GPU in the serving dtype (``weights=False``: cache only)."""
    from kvplan.formula import default_context
    from kvplan.resolve import load_read_model

    own = load_read_model(model) if isinstance(model, str) else model
    layout = own.layout
    engine, _ = engine_for(layout, engine)  # a GGUF model: llama.cpp unless another engine is named
    opts = opts or EngineOptions()
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    ctx_value, _ = default_context(layout, ctx)
    check_positive(Param.BATCH, batch)
    get_engine(engine)  # an unknown engine is a usage error now, not mid-run
    weights_bytes, note = _weights_for(own, kv_heads, None, opts) if weights else (0, "")
    multi_stage = weights and opts.pipeline_parallel_size > 1
    stage_weights = _stage_weights(own, kv_heads, engine, opts) if multi_stage else ()
    g = f" G={layout.kv_heads}" if layout.attention_layers and layout.kv_heads else ""
    label = name or f"{layout.model}{g} ctx {ctx_value:,} x {batch}"
    return VerifyPlan(
        name=label,
        layout=layout,
        ctx=ctx_value,
        batch=batch,
        kv_cache_dtype=kv_cache_dtype,
        engine=engine,
        opts=opts,
        weights_bytes=weights_bytes,
        probe=probe,
        note=note,
        stage_weights=stage_weights,
    )


def _budget(available_bytes: int) -> int:
    return available_bytes * HEADROOM[0] // HEADROOM[1]


def scale_to_fit(plan: VerifyPlan, available_bytes: int) -> VerifyPlan:
    """The plan scaled down to what ``available_bytes`` hold (90% of it, see HEADROOM): weights dropped when they
    take half the budget or more, then the batch halved, then ctx halved, until weights + cache fit. The note
    says what changed."""
    budget = _budget(available_bytes)
    steps: list[str] = []
    weights = plan.weights_bytes
    cache = predict(plan).per_gpu_bytes
    if weights + cache <= budget:
        return plan
    if weights and weights * 2 >= budget:
        steps.append(f"weights ({human_bytes(weights)}) left out")
        weights = 0
    batch, ctx = plan.batch, plan.ctx
    scaled = replace(plan, weights_bytes=weights)
    while weights + predict(scaled).per_gpu_bytes > budget and (batch > 1 or ctx > 1):
        if batch > 1:
            batch = max(1, batch // 2)
        else:
            ctx = max(1, ctx // 2)
        scaled = replace(scaled, batch=batch, ctx=ctx)
    if batch != plan.batch:
        steps.append(f"batch {plan.batch} -> {batch}")
    if ctx != plan.ctx:
        steps.append(f"ctx {plan.ctx:,} -> {ctx:,}")
    why = (
        f"scaled to fit {human_bytes(budget)} (90% of {human_bytes(available_bytes)} available): "
        f"{'; '.join(steps)}; the unscaled plan needs {human_bytes(plan.weights_bytes + cache)}"
    )
    return replace(scaled, note="; ".join(x for x in (plan.note, why) if x))


def self_check_plans(available_bytes: int) -> list[VerifyPlan]:
    """The self-check suite: Llama-2-7B's shape at G = 32, 8 and 1 (ctx 4,096, batch 1, fp16: 2 GiB, 512 MiB,
    64 MiB under transformers' layout, each timed), and the reference pick-g scenario (Llama-2-13B, ctx 65,536,
    batch 32, G = 1, fp16, vLLM pages) scaled to ``available_bytes``, with a capacity probe.

    Weights (fp16) are included where they fit beside the cache in 90% of ``available_bytes``; otherwise the
    plan is cache only and its note says so.
    """
    from kvplan.resolve import load_bundled

    budget = _budget(available_bytes)
    plans = []
    llama7 = load_bundled(LLAMA2_7B)
    for g, nominal in ((32, 2 * GiB), (8, 512 * MiB), (1, 64 * MiB)):
        weights, note = _weights_for(llama7, g, "float16", EngineOptions())
        if weights + nominal > budget:
            note = f"weights ({human_bytes(weights)}) left out: with the cache they pass {human_bytes(budget)}"
            weights = 0
        plans.append(
            VerifyPlan(
                name=f"Llama-2-7B G={g}",
                layout=with_kv_heads(llama7.layout, g),
                ctx=4096,
                batch=1,
                kv_cache_dtype="float16",
                engine="hf",
                weights_bytes=weights,
                nominal_bytes=nominal,
                note=note,
            )
        )
    llama13 = load_bundled(LLAMA2_13B)
    weights, note = _weights_for(llama13, 1, "float16", EngineOptions())
    pick_g = VerifyPlan(
        name="pick-g Llama-2-13B G=1",
        layout=with_kv_heads(llama13.layout, 1),
        ctx=65536,
        batch=32,
        kv_cache_dtype="float16",
        engine="vllm",
        weights_bytes=weights,
        probe=True,
        # Timed through the three G plans above; a 65,536-token step over 40 layers takes most of a minute on
        # a CPU, where no bandwidth figure exists to compare with anyway.
        timing=False,
        note=note,
    )
    plans.append(scale_to_fit(pick_g, available_bytes))
    return plans

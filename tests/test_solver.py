"""pick-g and fit: the reference scenario worked by hand, and hypothesis properties checked against the engine.

Expected figures are recomputed here from the model shapes and the GPU catalog's stated capacities, never copied
from the solver's output. Properties check the solver's answers with ``engine.estimate`` directly (not through
the solver's memoized cost function), ``weight_bytes`` and ``gpus.budget``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kvplan import catalog
from kvplan.engines import ENGINE_CLASSES, EngineOptions, get_engine
from kvplan.errors import KvplanError, OptionError
from kvplan.formula import valid_kv_heads, with_kv_heads
from kvplan.gpus import DEFAULT_RESERVE, GpuSelection
from kvplan.layout import CacheLayout
from kvplan.readers.config import read_model_config
from kvplan.readers.model import ReadModel
from kvplan.resolve import ModelSource, load_model, load_read_model, resolve
from kvplan.solver import (
    CTX_CAP,
    KvCost,
    allowed_tp,
    fit,
    fit_for_layout,
    load_scenario,
    pick_g,
    pick_g_for_layout,
    quality_note,
    select_gpu,
    tensor_parallel,
)
from kvplan.weights import weight_bytes

from .conftest import FIXTURES

GIB = 2**30
MIB = 2**20
A100_80G = 81_038 * MIB  # configs/gpus.yaml: torch total_memory, lowest observed
H100_SXM = 81_082 * MIB


def requested(usable: int) -> int:
    """ceil(usable x 0.90), exactly."""
    return -(-usable * 9 // 10)


def llama2_13b_weights(g: int) -> int:
    """fp16 bytes of Llama-2-13B with G KV heads: embedding + head 32000 x 5120 each, per layer q/o 5120^2,
    k/v 5120 x 128G, gate/up/down 5120 x 13824, two RMSNorms; one final norm."""
    hidden, layers, vocab, inter = 5120, 40, 32000, 13824
    per_layer = 2 * hidden * hidden + 2 * hidden * 128 * g + 3 * hidden * inter + 2 * hidden
    return 2 * (2 * vocab * hidden + layers * per_layer + hidden)


def kv_13b(g: int, ctx: int, batch: int, nbytes: int = 2) -> int:
    return 2 * 40 * g * 128 * ctx * batch * nbytes


# ----------------------------------------------------------------------------------------------------------
# The reference scenario


def test_reference_scenario_is_a_llama_2_13b_shape() -> None:
    sc = load_scenario()
    assert (sc.model, sc.gpu, sc.ctx, sc.batch) == ("meta-llama/Llama-2-13b-hf", "a100-80g", 65536, 32)
    assert "Llama-2-13B" in sc.description
    layout = load_model(sc.model)
    assert (layout.num_layers, layout.query_heads, layout.kv_heads, layout.head_dim) == (40, 40, 40, 128)


def test_unknown_scenario() -> None:
    with pytest.raises(OptionError, match="no bundled scenario"):
        load_scenario("nope")


def test_reference_fp16_recommends_g1() -> None:
    report = pick_g()
    cell = report.single
    assert cell is not None
    assert report.scenario is not None
    assert report.ctx_source == "the reference scenario"
    assert [o.g for o in cell.options] == [40, 20, 10, 8, 5, 4, 2, 1]
    # 2 x 40 layers x 1 KV head x 128 x 65,536 tokens x 32 seqs x 2 B = 40 GiB
    assert kv_13b(1, 65536, 32) == 42_949_672_960 == 40 * GIB
    g1, g2 = cell.option(1), cell.option(2)
    assert g1.kv_bytes == 42_949_672_960
    assert g2.kv_bytes == 2 * 42_949_672_960
    limit1 = requested(A100_80G) - llama2_13b_weights(1) - DEFAULT_RESERVE
    limit2 = requested(A100_80G) - llama2_13b_weights(2) - DEFAULT_RESERVE
    assert (g1.weights_bytes, g1.kv_budget_bytes) == (llama2_13b_weights(1), limit1)
    assert g2.kv_budget_bytes == limit2
    assert g1.fits
    assert not g2.fits
    assert cell.recommended_g == 1
    assert g1.headroom_bytes == limit1 - 40 * GIB
    assert g1.total_bytes == 40 * GIB + llama2_13b_weights(1)
    # max batch at 65,536: one sequence is 2 x 40 x 128 x 65,536 x 2 B; max ctx at 32: 20,480 B per token
    assert g1.max_batch == limit1 // (2 * 40 * 128 * 65536 * 2) == 39
    assert g1.max_ctx == limit1 // 32 // (2 * 40 * 128 * 2) == 79_936
    assert report.choice(40).is_model
    assert report.choice(40).attention == "MHA"
    assert report.choice(1).attention == "MQA"
    assert report.choice(1).compression == 40


def test_reference_fp8_recommends_g2() -> None:
    cell = pick_g(kv_cache_dtype="fp8").single
    assert cell is not None
    assert cell.recommended_g == 2
    assert cell.option(2).kv_bytes == kv_13b(2, 65536, 32, nbytes=1) == 40 * GIB
    assert not cell.option(4).fits


def test_reference_ways_to_reach_the_own_and_quality_safe_g() -> None:
    report = pick_g()
    assert [(w.g, w.reason.split(":")[0]) for w in report.ways] == [
        (40, "the model's own G"),
        (5, "the smallest quality-safe G"),
    ]
    safe = report.ways[1]
    levers = {lever.kind: lever for lever in safe.levers}
    limit5 = requested(A100_80G) - llama2_13b_weights(5) - DEFAULT_RESERVE
    # fp8 halves G = 5's 200 GiB to 100 GiB: not enough alone
    assert levers["fp8"].value == kv_13b(5, 65536, 32, nbytes=1) == 100 * GIB
    assert not levers["fp8"].fits
    # a smaller batch / shorter context, each alone
    assert levers["batch"].value == limit5 // kv_13b(5, 65536, 1)
    assert levers["ctx"].value == limit5 // 32 // (2 * 40 * 5 * 128 * 2)
    # more GPUs: tp must divide 40 and divide or be divided by G = 5 -> 5; at tp 5 each GPU holds one head
    assert levers["tp"].value == 5
    weights_tp5 = weight_bytes(load_read_model("meta-llama/Llama-2-13b-hf"), kv_heads=5).bytes_per_gpu(5)
    assert levers["tp"].kv_budget_bytes == requested(A100_80G) - weights_tp5 - DEFAULT_RESERVE
    assert levers["tp"].kv_bytes == kv_13b(1, 65536, 32)
    own = {lever.kind: lever for lever in report.ways[0].levers}
    assert own["batch"].value is None  # not even one sequence of MHA at 65,536 fits
    assert own["ctx"].value == (requested(A100_80G) - llama2_13b_weights(40) - DEFAULT_RESERVE) // 32 // (
        2 * 40 * 40 * 128 * 2
    )


def test_quality_notes() -> None:
    assert quality_note(40, 40).startswith("MHA")
    assert quality_note(1, 40).startswith("MQA")
    assert "near-MHA" in quality_note(5, 40)
    assert "more than 8" in quality_note(4, 40)


def test_tensor_parallel_flags_copied_heads_and_skips_g_it_cannot_split() -> None:
    report = pick_g(tensor_parallel_size=8)
    assert report.tp == 8
    assert report.gpu.count == 8
    assert {g for g, _ in report.skipped} == {20, 10, 5}  # 8 neither divides nor is divided by them
    assert {c.g for c in report.choices if c.copies_heads} == {4, 2, 1}
    cell = report.single
    assert cell is not None
    # G = 8 on 8 ranks: one head each; G = 1 copied: still one head each
    assert cell.option(8).kv_bytes == cell.option(1).kv_bytes == kv_13b(1, 65536, 32)
    weights = weight_bytes(load_read_model("meta-llama/Llama-2-13b-hf"), kv_heads=8).bytes_per_gpu(8)
    assert cell.option(8).weights_bytes == weights


def test_tp_that_does_not_divide_the_query_heads() -> None:
    with pytest.raises(OptionError, match="does not divide the 40 query heads"):
        pick_g(tensor_parallel_size=3)


def test_tp_and_gpu_count_must_agree() -> None:
    gpu = select_gpu("4xa100-80g")
    assert tensor_parallel(gpu, None)[1] == 4
    assert tensor_parallel(gpu, 4)[1] == 4
    with pytest.raises(OptionError, match=r"^tensor_parallel_size:"):
        tensor_parallel(gpu, 2)


def test_model_without_kv_heads_has_no_g() -> None:
    with pytest.raises(OptionError, match="no per-head K/V"):
        pick_g("deepseek-ai/DeepSeek-V3", gpu="h200")


def test_pick_g_with_a_model_needs_a_gpu() -> None:
    with pytest.raises(OptionError, match=r"^gpu:"):
        pick_g("meta-llama/Llama-2-7b-hf")


def test_sweep_cells_match_single_plans() -> None:
    ctxs, batches = [4096, 32768, 131072], [1, 8, 32]
    report = pick_g(ctx=ctxs, batch=batches)
    assert report.single is None
    assert [(c.ctx, c.batch) for c in report.cells] == [(c, b) for c in ctxs for b in batches]
    for cell in report.cells:
        one = pick_g(ctx=cell.ctx, batch=cell.batch).single
        assert one is not None
        assert one.recommended_g == cell.recommended_g
        assert one.options == cell.options
    assert not report.ways


def test_chart_series_are_weights_reserve_and_kv() -> None:
    report = pick_g(ctx=[8192, 65536], batch=4, chart=True)
    (chart,) = report.charts
    assert chart.limit_bytes == requested(A100_80G)
    assert set(chart.marks) <= set(chart.ctxs)
    assert list(chart.ctxs) == sorted(set(chart.ctxs))
    g1 = next(s for s in chart.series if s.g == 1)
    i = chart.ctxs.index(65536)
    assert g1.totals[i] == llama2_13b_weights(1) + DEFAULT_RESERVE + kv_13b(1, 65536, 4)


# ----------------------------------------------------------------------------------------------------------
# fit


def llama2_70b_weights() -> int:
    hidden, layers, vocab, inter, kv = 8192, 80, 32000, 28672, 8 * 128
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter + 2 * hidden
    return 2 * (2 * vocab * hidden + layers * per_layer + hidden)


def test_fit_llama_2_70b_on_h100() -> None:
    report = fit("meta-llama/Llama-2-70b", gpu="h100", ctx=32768)
    weights = llama2_70b_weights()
    assert report.weights.bytes_total == weights
    limit = requested(H100_SXM) - weights - DEFAULT_RESERVE
    assert limit < 0  # 128 GiB of weights on one 80 GB GPU
    per_token = 2 * 80 * 8 * 128 * 2  # 320 KiB
    (longest,) = report.max_ctx
    assert (longest.batch, longest.ctx) == (1, 0)
    assert longest.missing_bytes == per_token - limit
    (most,) = report.max_batch
    assert (most.ctx, most.batch) == (32768, 0)
    assert most.missing_bytes == per_token * 32768 - limit
    (fewest,) = report.min_gpus
    assert fewest.tp == 2
    assert fewest.tried == (1, 2, 4, 8, 16, 32, 64)
    norms = (2 * 80 + 1) * 8192 * 2
    weights_tp2 = norms + (weights - norms) // 2  # everything but the norms splits in two (all even)
    limit2 = requested(H100_SXM) - weights_tp2 - DEFAULT_RESERVE
    assert fewest.budget is not None
    assert fewest.budget.kv_bytes_per_gpu == limit2
    assert fewest.kv_bytes == per_token * 32768 // 2 <= limit2
    assert fewest.max_ctx_by_memory == limit2 // (per_token // 2)
    assert fewest.max_ctx == 4096  # capped at the config's max_position_embeddings
    assert fewest.max_batch == limit2 // (per_token * 32768 // 2)
    assert not report.fits


def test_fit_default_batch_and_ctx() -> None:
    report = fit("meta-llama/Llama-2-7b-hf", gpu="h100")
    assert report.ctxs == (4096,)
    assert report.ctx_source == "the model's max_position_embeddings"
    assert report.batches == (1,)
    limit = requested(H100_SXM) - report.weights.bytes_total - DEFAULT_RESERVE
    per_token = 2 * 32 * 32 * 128 * 2
    assert report.max_ctx[0].by_memory == limit // per_token
    assert report.max_ctx[0].ctx == 4096  # capped at max_position_embeddings
    assert report.max_ctx[0].capped
    assert report.max_batch[0].batch == limit // (per_token * 4096)
    assert report.min_gpus[0].tp == 1
    assert report.fits


def test_fit_pure_ssm_context_is_unbounded() -> None:
    report = fit(str(FIXTURES / "mamba2"), gpu="24GB", ctx=1000, batch=[1, 3])
    assert [a.ctx for a in report.max_ctx] == [None, None]
    # 19,840 B of state per layer per sequence x 4 layers (tests/fixtures/configs/mamba2/expect.json)
    assert [a.kv_bytes for a in report.max_ctx] == [79_360, 3 * 79_360]
    assert not report.grows_with_context
    limit = requested(24 * 10**9) - report.weights.bytes_total - DEFAULT_RESERVE
    assert report.max_batch[0].batch == limit // 79_360


def test_fit_windowed_model_is_unbounded_but_a_full_one_is_not() -> None:
    sliding = fit(str(FIXTURES / "sliding_all_layers"), gpu="80GiB", ctx=4096)
    assert sliding.max_ctx[0].by_memory is None  # memory: any context
    assert sliding.max_ctx[0].ctx == 32768  # the fixture's max_position_embeddings caps it
    full = fit("meta-llama/Llama-2-7b-hf", gpu="80GiB", ctx=4096)
    assert full.max_ctx[0].ctx is not None
    assert full.max_ctx[0].ctx < CTX_CAP


def test_fit_kv_heads_what_if_uses_smaller_weights() -> None:
    own = fit("meta-llama/Llama-2-7b-hf", gpu="h100", ctx=4096)
    gqa = fit("meta-llama/Llama-2-7b-hf", gpu="h100", ctx=4096, kv_heads=8)
    assert gqa.weights.bytes_total == own.weights.bytes_total - 2 * 32 * 4096 * 128 * 24 * 2
    assert gqa.own_g == 32
    assert gqa.layout.kv_heads == 8


# ----------------------------------------------------------------------------------------------------------
# The cost function equals the engine's own estimate (the contract behind the fast path)


@pytest.mark.parametrize("engine", list(ENGINE_CLASSES))
def test_fast_cost_equals_engine_estimate_for_every_bundled_model(engine: str) -> None:
    profile = get_engine(engine)
    for entry in catalog.bundled_models().values():
        layout = load_model(entry.model_id)
        for tp in allowed_tp(layout, profile)[:3]:
            try:
                cost = KvCost(layout, profile, "auto", tp)
            except KvplanError:
                continue
            for ctx in (1, 7, 4097, 65536, 300_001):
                for batch in (1, 3):
                    expected = profile.estimate(layout, ctx, batch, opts=EngineOptions(tensor_parallel_size=tp))
                    assert cost.bytes(ctx, batch) == expected.per_gpu_bytes, (entry.model_id, tp, ctx, batch)


# ----------------------------------------------------------------------------------------------------------
# Properties

HEADS = [4, 6, 8, 12, 16]


@st.composite
def llamas(draw: st.DrawFn) -> ReadModel:
    h = draw(st.sampled_from(HEADS))
    head_dim = draw(st.sampled_from([16, 32, 64]))
    raw: dict[str, Any] = {
        "model_type": "llama",
        "num_hidden_layers": draw(st.integers(1, 6)),
        "num_attention_heads": h,
        "num_key_value_heads": draw(st.sampled_from([g for g in range(1, h + 1) if h % g == 0])),
        "hidden_size": h * head_dim,
        "intermediate_size": draw(st.sampled_from([128, 256, 512])),
        "vocab_size": draw(st.sampled_from([1000, 32000])),
        "max_position_embeddings": 4096,
        "torch_dtype": "bfloat16",
    }
    if draw(st.booleans()):
        raw["model_type"] = "mistral"
        raw["sliding_window"] = draw(st.integers(16, 4096))
    return read_model_config(raw, "prop")


SOURCE = ModelSource("prop", "prop", "path", "prop", {})
# Per-GPU capacities on a log scale (1 MiB to 64 GiB), so that every outcome (nothing fits, some G, all) is common.
sizes = st.integers(20, 36).flatmap(lambda k: st.integers(2 ** (k - 1), 2**k))
ctxs = st.integers(1, 200_000)
batches = st.integers(1, 64)
dtypes = st.sampled_from(["auto", "fp8", "float32"])
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def gpu_of(usable: int) -> GpuSelection:
    return GpuSelection(None, "test", usable, 1, "test")


def kv_limit(read: ReadModel, usable: int, g: int | None, tp: int = 1, engine: str = "ideal") -> int:
    """The KV budget at utilization 0.9 and no reserve, written out: TensorRT-LLM takes 0.9 of what the weights
    leave free (KvCacheCreator._cal_max_memory), every other engine ceil(0.9 x usable) minus the weights."""
    weights = weight_bytes(read, kv_heads=g).bytes_per_gpu(tp)
    if engine == "trtllm":
        return (usable - weights) * 9 // 10
    return -(-usable * 9 // 10) - weights


def engine_kv(
    layout: CacheLayout,
    ctx: int,
    batch: int,
    dtype: str = "auto",
    tp: int = 1,
    engine: str = "ideal",
    usable: int | None = None,
) -> int:
    """Per-GPU KV as the engine costs it; on a GPU of ``usable`` bytes as the solver sees it (vLLM's batch
    defaults follow the GPU's memory)."""
    opts = EngineOptions(tensor_parallel_size=tp, device_memory_bytes=usable, device_name="test")
    return get_engine(engine).estimate(layout, ctx, batch, kv_cache_dtype=dtype, opts=opts).per_gpu_bytes


@st.composite
def plans(draw: st.DrawFn) -> tuple[ReadModel, int, int, int]:
    """A model, a per-GPU capacity, a context and a batch. Half the capacities are drawn around what the model
    needs (MQA weights plus half the MQA cache, up to MHA weights plus twice the MHA cache), so the interesting
    outcomes (some G fit, others not) are common."""
    read, ctx, batch = draw(llamas()), draw(ctxs), draw(batches)
    if draw(st.booleans()):
        return read, draw(sizes), ctx, batch
    layout = read.layout
    h = layout.query_heads
    light = weight_bytes(read, kv_heads=1).bytes_total + engine_kv(with_kv_heads(layout, 1), ctx, batch) // 2
    heavy = weight_bytes(read, kv_heads=h).bytes_total + 2 * engine_kv(with_kv_heads(layout, h), ctx, batch)
    return read, draw(st.integers(light, heavy)) * 10 // 9, ctx, batch


@PROPS
@given(plans(), dtypes)
def test_recommended_g_fits_and_the_next_larger_does_not(plan: tuple[ReadModel, int, int, int], dtype: str) -> None:
    read, usable, ctx, batch = plan
    layout = read.layout
    report = pick_g_for_layout(read, SOURCE, gpu_of(usable), ctx, batch, kv_cache_dtype=dtype, reserve_bytes=0)
    cell = report.single
    assert cell is not None
    valid = sorted(valid_kv_heads(layout))
    best = cell.recommended_g
    if best is not None:
        assert engine_kv(with_kv_heads(layout, best), ctx, batch, dtype) <= kv_limit(read, usable, best)
    larger = [g for g in valid if best is None or g > best]
    if larger:
        nxt = larger[0]
        assert engine_kv(with_kv_heads(layout, nxt), ctx, batch, dtype) > kv_limit(read, usable, nxt)


@PROPS
@given(plans(), st.integers(0, 4 * GIB))
def test_more_memory_never_gives_a_smaller_g(plan: tuple[ReadModel, int, int, int], more: int) -> None:
    read, usable, ctx, batch = plan
    cells = [
        pick_g_for_layout(read, SOURCE, gpu_of(u), ctx, batch, reserve_bytes=0, ways=False).single
        for u in (usable, usable + more)
    ]
    assert cells[0] is not None
    assert cells[1] is not None
    assert (cells[1].recommended_g or 0) >= (cells[0].recommended_g or 0)


ENGINES = st.sampled_from(list(ENGINE_CLASSES))


@PROPS
@given(plans(), ENGINES, dtypes)
def test_max_batch_fits_and_one_more_does_not(plan: tuple[ReadModel, int, int, int], engine: str, dtype: str) -> None:
    read, usable, ctx, batch = plan
    layout = read.layout
    try:
        report = fit_for_layout(
            read,
            SOURCE,
            gpu_of(usable),
            ctx,
            batch,
            engine=engine,
            kv_cache_dtype=dtype,
            reserve_bytes=0,
            utilization=0.9,
        )
    except OptionError:
        assume(False)
        return
    limit = kv_limit(read, usable, None, engine=engine)
    assert report.budget.kv_bytes_per_gpu == limit
    (answer,) = report.max_batch
    assert answer.batch is not None
    if answer.batch:
        assert engine_kv(layout, ctx, answer.batch, dtype, engine=engine, usable=usable) <= limit
    assert engine_kv(layout, ctx, answer.batch + 1, dtype, engine=engine, usable=usable) > limit


@PROPS
@given(plans(), ENGINES, dtypes)
def test_max_ctx_fits_and_one_more_does_not(plan: tuple[ReadModel, int, int, int], engine: str, dtype: str) -> None:
    read, usable, ctx, batch = plan
    layout = read.layout
    try:
        report = fit_for_layout(
            read,
            SOURCE,
            gpu_of(usable),
            ctx,
            batch,
            engine=engine,
            kv_cache_dtype=dtype,
            reserve_bytes=0,
            utilization=0.9,
        )
    except OptionError:
        assume(False)
        return
    limit = kv_limit(read, usable, None, engine=engine)
    (answer,) = report.max_ctx
    # ctx is capped at the model's max_position_embeddings; by_memory is what memory alone allows
    cap, memory = layout.max_context, answer.by_memory
    assert answer.ctx == (memory if cap is None or (memory is not None and memory <= cap) else cap)
    if memory is None:  # unbounded: the cache stopped growing (every layer windowed)
        assert engine_kv(layout, CTX_CAP, batch, dtype, engine=engine, usable=usable) <= limit
        return
    if memory:
        assert engine_kv(layout, memory, batch, dtype, engine=engine, usable=usable) <= limit
    assert engine_kv(layout, memory + 1, batch, dtype, engine=engine, usable=usable) > limit


@PROPS
@given(plans())
def test_fewest_gpus_fits_and_the_next_smaller_allowed_tp_does_not(plan: tuple[ReadModel, int, int, int]) -> None:
    read, usable, ctx, batch = plan
    layout = read.layout
    report = fit_for_layout(read, SOURCE, gpu_of(usable), ctx, batch, reserve_bytes=0)
    (answer,) = report.min_gpus
    allowed = [t for t in range(1, layout.query_heads + 1) if _tp_ok(layout, t)]
    assert answer.tried == tuple(allowed)
    if answer.tp is None:
        for t in allowed:
            assert engine_kv(layout, ctx, batch, tp=t) > kv_limit(read, usable, None, t)
        return
    assert engine_kv(layout, ctx, batch, tp=answer.tp) <= kv_limit(read, usable, None, answer.tp)
    smaller = [t for t in allowed if t < answer.tp]
    if smaller:
        t = smaller[-1]
        assert engine_kv(layout, ctx, batch, tp=t) > kv_limit(read, usable, None, t)


def _tp_ok(layout: CacheLayout, tp: int) -> bool:
    """tp divides the query heads and divides, or is a multiple of, the KV heads (written out here)."""
    h, g = layout.query_heads, layout.kv_heads
    assert g is not None
    return h % tp == 0 and (g % tp == 0 if g >= tp else tp % g == 0)


def test_the_reference_model_is_bundled() -> None:
    assert resolve("meta-llama/Llama-2-13b-hf").origin == "bundled"

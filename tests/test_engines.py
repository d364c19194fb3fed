"""Engine profiles: hand-derived cases for each rule (arithmetic written out) and properties over all engines."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.engines import ENGINES, EngineOptions, capacity, get_engine, split_layers
from kvplan.errors import OptionError
from kvplan.layout import CacheLayout, LayerKind, attention_layer
from kvplan.resolve import load_model

GiB = 2**30
LLAMA31_8B = "meta-llama/Meta-Llama-3.1-8B"  # 32 layers, 8 KV heads, head_dim 128, bf16


def per_gpu(engine: str, model: str, ctx: int, batch: int = 1, **opts: object) -> int:
    est = get_engine(engine).estimate(load_model(model), ctx, batch, opts=EngineOptions(**opts))  # type: ignore[arg-type]
    return est.per_gpu_bytes


# ---- vLLM ------------------------------------------------------------------------------------------------


def test_vllm_pages_for_llama31_8b() -> None:
    page = 16 * 8 * (128 + 128) * 2  # block 16 x 8 heads x (K + V dims) x 2 B = 65,536 B per layer
    assert page == 65_536
    assert per_gpu("vllm", LLAMA31_8B, 8192) == 32 * 512 * page  # cdiv(8192, 16) = 512 pages per layer
    assert per_gpu("vllm", LLAMA31_8B, 8000) == 32 * 500 * page  # 8000 = 500 whole pages: no waste
    assert per_gpu("vllm", LLAMA31_8B, 8001) == 32 * 501 * page  # one more token opens a page
    assert per_gpu("vllm", LLAMA31_8B, 8001, block_size=32) == 32 * 251 * 2 * page  # cdiv(8001, 32) = 251


def test_vllm_capacity_for_llama31_8b() -> None:
    cap = capacity("vllm", load_model(LLAMA31_8B), 10 * GiB, 8192)
    per_block = 32 * 65_536  # one page in each of the 32 layers of the single group
    assert cap.num_blocks == 10 * GiB // per_block == 5120
    assert cap.max_concurrency == Fraction(5120, 512) == 10  # 512 blocks per 8192-token request
    assert cap.kv_tokens == 81_920  # int(10.00 x 8192)
    cap = capacity("vllm", load_model(LLAMA31_8B), 10 * GiB, 8000)
    assert cap.max_concurrency == Fraction(5120, 500)
    assert cap.kv_tokens == 5120 * 8000 // 500 == 81_920


def test_vllm_copies_heads_when_tp_exceeds_kv_heads() -> None:
    """tp 16 > 8 KV heads: every rank keeps max(1, 8 // 16) = 1 whole head, so the node holds each head twice."""
    layout = load_model(LLAMA31_8B)
    est = get_engine("vllm").estimate(layout, 8192, 1, opts=EngineOptions(tensor_parallel_size=16))
    one_head_page = 16 * 1 * 256 * 2
    assert est.per_gpu_bytes == 32 * 512 * one_head_page
    assert est.deployment_bytes == 16 * 32 * 512 * one_head_page == 2 * est.ideal.total_bytes
    assert any("copied 2x" in rule for rule in est.rules)
    tp8 = get_engine("vllm").estimate(layout, 8192, 1, opts=EngineOptions(tensor_parallel_size=8))
    assert tp8.deployment_bytes == tp8.ideal.total_bytes  # 8 ranks x 1 head: no copies


def test_vllm_mla_is_not_split_by_tp() -> None:
    """DeepSeek-V3: one 576-value latent per token per layer, whole on every rank."""
    one = per_gpu("vllm", "deepseek-ai/DeepSeek-V3", 32768)
    assert one == 61 * 2048 * 16 * 576 * 2  # 61 layers x cdiv(32768, 16) pages x 16 tokens x 576 x 2 B
    assert per_gpu("vllm", "deepseek-ai/DeepSeek-V3", 32768, tensor_parallel_size=8) == one


def test_vllm_sliding_layers_reserve_window_plus_in_flight_tokens() -> None:
    """gpt-oss-20b: 12 full + 12 sliding (window 128) layers, 8 heads x 64 dims; 8192 batched tokens, 2 in flight."""
    page = 16 * 8 * (64 + 64) * 2  # 32,768 B
    full_pages = 131_072 // 16  # 8192
    sliding_pages = -(-min(128 - 1 + 2 * 8192, 131_072) // 16) + 1  # cdiv(16,511, 16) + 1 = 1033
    assert sliding_pages == 1033
    assert per_gpu("vllm", "openai/gpt-oss-20b", 131_072) == 12 * full_pages * page + 12 * sliding_pages * page
    sync = per_gpu("vllm", "openai/gpt-oss-20b", 131_072, async_scheduling=False)  # vLLM <= 0.11: 1 batch in flight
    assert sync == 12 * full_pages * page + 12 * (-(-(127 + 8192) // 16) + 1) * page


def test_vllm_hybrid_mamba_raises_the_attention_block() -> None:
    """Qwen3-Next: the attention block grows until one page holds a Gated DeltaNet state (vLLM pads the state).

    state = conv (2 x 16 x 128 + 32 x 128 = 8192 channels) x (4 - 1) x 2 B + recurrent 32 x 128 x 128 x 2 B
          = 49,152 + 1,048,576 = 1,097,728 B; one attention token = 2 heads x (256 + 256) x 2 B = 2,048 B;
    block = 16 x cdiv(1,097,728, 16 x 2,048) = 16 x 34 = 544 tokens; page = 544 x 2,048 = 1,114,112 B.
    """
    page = 544 * 2048
    full = 12 * -(-65_536 // 544) * page  # 12 full layers x cdiv(65536, 544) = 121 pages
    states = 36 * 2 * page  # 36 GDN layers x 2 pages (prefix-caching "align" mode)
    assert per_gpu("vllm", "Qwen/Qwen3-Next-80B-A3B", 65_536) == full + states
    no_prefix = per_gpu("vllm", "Qwen/Qwen3-Next-80B-A3B", 65_536, enable_prefix_caching=False)
    assert no_prefix == full + 36 * 1 * page


def test_vllm_padding_layers_in_hybrid_groups() -> None:
    """Gemma 3 27B: 10 full + 52 sliding layers; group size 10 (52 >= 1.5 x 10), so the sliding layers fill
    cdiv(52, 10) = 6 groups of 10 slots: 8 padding slots that reserve pages like a sliding layer."""
    est = get_engine("vllm").estimate(load_model("google/gemma-3-27b-it"), 4096, 1)
    page = 16 * 16 * (128 + 128) * 2
    sliding_pages = -(-min(1024 - 1 + 16_384, 4096) // 16) + 1  # 257
    full_pages = 4096 // 16
    assert est.per_gpu_bytes == 10 * full_pages * page + (52 + 8) * sliding_pages * page


def test_pipeline_split_matches_vllm() -> None:
    """get_pp_indices: 61 layers over 4 stages -> [15, 15, 16, 15] (the remainder goes to the second-to-last)."""
    layers = load_model("deepseek-ai/DeepSeek-V3").layers
    assert [len(s) for s in split_layers(layers, 4)] == [15, 15, 16, 15]
    assert [len(s) for s in split_layers(layers[:10], 4)] == [2, 3, 3, 2]


# ---- SGLang ----------------------------------------------------------------------------------------------


def test_sglang_cell_and_tokens() -> None:
    cap = capacity("sglang", load_model(LLAMA31_8B), 10 * GiB, 131_072)
    cell = 8 * (128 + 128) * 32 * 2  # heads x (K + V) x layers x 2 B = 131,072 B per token
    assert cap.kv_tokens == 10 * GiB // cell == 81_920
    assert cap.facts["max_running_requests"] == 2048  # clamp(int(81920 / 131072 x 512) = 320, 2048, 4096)


def test_sglang_mla_indexer_cell() -> None:
    """DeepSeek-V3.2: latent (512 + 64) x 2 B + indexer key 128 + 128/128 x 4 B (fp8 + scale) per layer."""
    cell = 61 * ((512 + 64) * 2 + 128 + 4)
    assert per_gpu("sglang", "deepseek-ai/DeepSeek-V3.2", 1000) == 1000 * cell


def test_sglang_swa_pool_split() -> None:
    """gpt-oss-20b: cell = full (12 x 8 x 128 x 2 B) + 0.8 x sliding (same); swa tokens = 0.8 x full tokens."""
    per_layer_group = 12 * 8 * (64 + 64) * 2  # 24,576 B
    cap = capacity("sglang", load_model("openai/gpt-oss-20b"), 10 * GiB, 131_072)
    full = int(Fraction(10 * GiB) // (per_layer_group + Fraction(8, 10) * per_layer_group))
    assert cap.kv_tokens == full == 242_725


# ---- llama.cpp -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "v", "row_k", "row_v"),
    [
        ("float16", "float16", 1024 * 2, 1024 * 2),
        ("q8_0", "q8_0", 1024 // 32 * 34, 1024 // 32 * 34),  # 34 B per 32 values
        ("q4_0", "q4_0", 1024 // 32 * 18, 1024 // 32 * 18),  # 18 B per 32 values
        ("q8_0", "q4_0", 1024 // 32 * 34, 1024 // 32 * 18),  # K and V apart
        ("q5_1", "iq4_nl", 1024 // 32 * 24, 1024 // 32 * 18),
    ],
)
def test_llamacpp_block_types(k: str, v: str, row_k: int, row_v: int) -> None:
    """Llama-3.1-8B -c 8192: rows of 8 heads x 128 = 1024 values per layer, 8192 cells, 32 layers."""
    est = get_engine("llama.cpp").estimate(load_model(LLAMA31_8B), 8192, 1, k_dtype=k, v_dtype=v)
    assert est.per_gpu_bytes == 32 * 8192 * (row_k + row_v)


def test_llamacpp_q8_0_and_q4_0_in_mib() -> None:
    layout = load_model(LLAMA31_8B)
    q8 = get_engine("llama.cpp").estimate(layout, 8192, 1, kv_cache_dtype="q8_0").per_gpu_bytes
    q4 = get_engine("llama.cpp").estimate(layout, 8192, 1, kv_cache_dtype="q4_0").per_gpu_bytes
    assert (q8, q4) == (544 * 2**20, 288 * 2**20)  # what llama.cpp logs: 544 MiB, 288 MiB


def test_llamacpp_pads_context_to_256_and_defaults_to_f16() -> None:
    est = get_engine("llama.cpp").estimate(load_model(LLAMA31_8B), 5000, 1)
    assert est.types.k.name == "float16"  # -ctk default, whatever the model dtype
    assert est.per_gpu_bytes == 32 * 5120 * 2 * 1024 * 2  # pad256(5000) = 5120 cells
    unified = get_engine("llama.cpp").estimate(load_model(LLAMA31_8B), 1000, 3).per_gpu_bytes
    assert unified == 32 * 3072 * 2 * 1024 * 2  # one stream: pad256(3 x 1000) = 3072 cells
    split = get_engine("llama.cpp").estimate(load_model(LLAMA31_8B), 1000, 3, opts=EngineOptions(kv_unified=False))
    assert split.per_gpu_bytes == 32 * 3 * 1024 * 2 * 1024 * 2  # 3 streams of pad256(1000) = 1024 cells


def test_llamacpp_swa_cells() -> None:
    """Gemma 2 9B, -c 8192: 21 full layers x 8192 cells; 21 sliding layers x pad256(min(8192, 4096 x 1 + 512))."""
    row = 8 * 256 * 2  # 8 KV heads x 256 dims x 2 B
    swa_cells = -(-min(8192, 4096 + 512) // 256) * 256  # 4608
    expect = 21 * 8192 * 2 * row + 21 * swa_cells * 2 * row
    assert per_gpu("llama.cpp", "google/gemma-2-9b-it", 8192) == expect
    assert per_gpu("llama.cpp", "google/gemma-2-9b-it", 8192, swa_full=True) == 42 * 8192 * 2 * row


def test_llamacpp_mla_keeps_k_only_and_states_in_fp32() -> None:
    assert per_gpu("llama.cpp", "deepseek-ai/DeepSeek-V2-Lite", 4096) == 27 * 4096 * 576 * 2  # latent K only
    # Qwen3-Next states in f32: conv 8192 x 3 + recurrent 32 x 128 x 128 values, x 4 B, 36 layers.
    state = (8192 * 3 + 32 * 128 * 128) * 4
    full = 12 * 4096 * 2 * 2 * 256 * 2
    assert per_gpu("llama.cpp", "Qwen/Qwen3-Next-80B-A3B", 4096) == full + 36 * state


def test_llamacpp_rejects_tensor_parallel_and_fp8() -> None:
    with pytest.raises(OptionError, match=r"^tensor_parallel_size: .* splits layers"):
        per_gpu("llama.cpp", LLAMA31_8B, 4096, tensor_parallel_size=2)
    with pytest.raises(OptionError, match="q8_0"):
        get_engine("llama.cpp").estimate(load_model(LLAMA31_8B), 4096, 1, kv_cache_dtype="fp8")


# ---- TensorRT-LLM ----------------------------------------------------------------------------------------


def test_trtllm_blocks_and_tp_estimator() -> None:
    layout = load_model(LLAMA31_8B)
    cap = capacity("trtllm", layout, 10 * GiB, 8192)
    assert cap.num_blocks == 10 * GiB // (2 * 32 * 1024 * 2) // 32 == 2560  # 131,072 B/token, 32-token blocks
    tp16 = capacity("trtllm", layout, 10 * GiB, 8192, opts=EngineOptions(tensor_parallel_size=16))
    estimator = 2 * 32 * (128 * 8 // 16) * 2  # floors 8 heads x 128 / 16 = 64 values: half a head
    assert tp16.kv_tokens == 10 * GiB // estimator // 32 * 32
    assert any("promises more tokens" in line for line in tp16.lines)
    allocator = get_engine("trtllm").estimate(layout, 8192, 1, opts=EngineOptions(tensor_parallel_size=16))
    assert allocator.per_gpu_bytes == 32 * 8192 * 2 * 1 * 128 * 2  # but one whole head is allocated


def test_trtllm_budget_is_a_fraction_of_free_memory() -> None:
    usable, weights, reserve = 80 * GiB, 16 * GiB, 2 * GiB
    trt = get_engine("trtllm").kv_budget(usable, weights, reserve, Fraction(9, 10))
    vllm = get_engine("vllm").kv_budget(usable, weights, reserve, Fraction(9, 10))
    assert trt.kv_bytes == (80 - 16 - 2) * GiB * 9 // 10
    assert trt.requested_bytes == weights + reserve + trt.kv_bytes
    assert vllm.kv_bytes == -(-80 * GiB * 9 // 10) - 16 * GiB - 2 * GiB
    assert vllm.requested_bytes == -(-80 * GiB * 9 // 10)


# ---- engine choice and errors ----------------------------------------------------------------------------


def test_unknown_engine_and_bad_dtype() -> None:
    with pytest.raises(OptionError, match=r"^engine:"):
        get_engine("deepspeed")
    with pytest.raises(OptionError, match="int8"):
        get_engine("vllm").estimate(load_model(LLAMA31_8B), 10, 1, kv_cache_dtype="int8")
    with pytest.raises(OptionError, match="one process"):
        get_engine("hf").estimate(load_model(LLAMA31_8B), 10, 1, opts=EngineOptions(tensor_parallel_size=2))


def test_vllm_per_token_head_scales() -> None:
    """int8_per_token_head: 1 B per value plus one fp32 scale per token per head, for K and for V."""
    row = 128 + 4
    est = get_engine("vllm").estimate(load_model(LLAMA31_8B), 16, 1, kv_cache_dtype="int8_per_token_head")
    assert est.per_gpu_bytes == 32 * 16 * 8 * 2 * row


# ---- properties ------------------------------------------------------------------------------------------

MODELS = [
    LLAMA31_8B,
    "openai/gpt-oss-20b",
    "google/gemma-3-4b-it",
    "Qwen/Qwen3-Next-80B-A3B",
    "deepseek-ai/DeepSeek-V2-Lite",
    "nvidia/Nemotron-H-56B-Base-8K",
    "meta-llama/Llama-4-Scout-17B-16E-Instruct",
    "XiaomiMiMo/MiMo-V2-Flash",
]
LAYOUTS = {m: load_model(m) for m in MODELS}


def windows_opened(layout: CacheLayout) -> CacheLayout:
    """The same model with every sliding / chunked layer turned into full attention."""
    layers = tuple(
        replace(layer, kind=LayerKind.FULL, window=None)
        if layer.kind in (LayerKind.SLIDING, LayerKind.CHUNKED)
        else layer
        for layer in layout.layers
    )
    return replace(layout, layers=layers)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ENGINES), st.sampled_from(MODELS), st.integers(1, 300_000), st.integers(1, 6))
def test_a_window_never_costs_more_than_full_attention(engine: str, model: str, ctx: int, batch: int) -> None:
    layout = LAYOUTS[model]
    eng = get_engine(engine)
    windowed = eng.estimate(layout, ctx, batch).ideal.total_bytes
    opened = eng.estimate(windows_opened(layout), ctx, batch).ideal.total_bytes
    assert windowed <= opened
    if engine in ("ideal", "hf", "sglang", "trtllm", "llama.cpp"):
        assert (
            eng.estimate(layout, ctx, batch).per_gpu_bytes
            <= eng.estimate(windows_opened(layout), ctx, batch).per_gpu_bytes
        )


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(ENGINES),
    st.sampled_from(MODELS),
    st.integers(1, 200_000),
    st.integers(1, 100_000),
    st.integers(1, 5),
    st.integers(0, 3),
)
def test_totals_never_shrink(engine: str, model: str, ctx: int, more: int, batch: int, extra: int) -> None:
    eng = get_engine(engine)
    layout = LAYOUTS[model]
    base = eng.estimate(layout, ctx, batch).deployment_bytes
    assert eng.estimate(layout, ctx + more, batch).deployment_bytes >= base
    assert eng.estimate(layout, ctx, batch + extra).deployment_bytes >= base


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ENGINES), st.integers(1, 100_000), st.integers(1, 100_000), st.integers(1, 4))
def test_state_layers_do_not_grow_with_context(engine: str, ctx: int, other: int, batch: int) -> None:
    layout = LAYOUTS["Qwen/Qwen3-Next-80B-A3B"]
    eng = get_engine(engine)

    def state_total(n: int) -> int:
        costs = [c for stage in eng.estimate(layout, n, batch).stages for c in stage]
        return sum(c.total for c in costs if c.spec.kind is LayerKind.STATE)

    assert state_total(ctx) == state_total(other)


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["ideal", "vllm", "sglang", "trtllm"]), st.sampled_from([1, 2, 4, 8, 16]), st.integers(1, 100_000)
)
def test_mla_per_gpu_bytes_do_not_change_with_tp(engine: str, tp: int, ctx: int) -> None:
    layout = LAYOUTS["deepseek-ai/DeepSeek-V2-Lite"]  # 16 query heads
    eng = get_engine(engine)
    one = eng.estimate(layout, ctx, 1).per_gpu_bytes
    assert eng.estimate(layout, ctx, 1, opts=EngineOptions(tensor_parallel_size=tp)).per_gpu_bytes == one


def test_every_engine_costs_every_bundled_model() -> None:
    from kvplan import catalog

    for entry in catalog.bundled_models().values():
        layout = load_model(entry.model_id)
        for engine in ENGINES:
            est = get_engine(engine).estimate(layout, 4096, 2)
            assert est.deployment_bytes >= 0


def test_tiny_model_full_attention_identity() -> None:
    """A plain GQA model costs the same under ideal, hf, sglang and trtllm when ctx fills whole blocks."""
    layout = CacheLayout("tiny", "llama", tuple(attention_layer(i, 8, 2, 64) for i in range(4)), 512, "bfloat16")
    figures = {
        e: get_engine(e).estimate(layout, 4096, 3).deployment_bytes for e in ("ideal", "hf", "sglang", "trtllm", "vllm")
    }
    assert set(figures.values()) == {2 * 4 * 2 * 64 * 4096 * 3 * 2}


def test_vllm_deepseek_v32_sparse_mla_and_fp8_indexer() -> None:
    """fp8_ds_mla: 512 fp8 + 512/128 x 4 B scales + 64 x 2 B rope = 656 B per token per layer; the DSA indexer
    key is fp8 with one fp32 scale per 128 values: 128 + 4 = 132 B. 61 layers, cdiv(1000, 16) = 63 pages."""
    est = get_engine("vllm").estimate(load_model("deepseek-ai/DeepSeek-V3.2"), 1000, 1, kv_cache_dtype="fp8_ds_mla")
    assert est.per_gpu_bytes == 61 * 63 * 16 * (656 + 132)

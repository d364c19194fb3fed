"""Each engine's terms before the KV cache, written out by hand from the engine's source (engines/<engine>.py
has the citations; tests/test_engine_calibration.py checks them against logged startups)."""

from __future__ import annotations

from fractions import Fraction

import pytest

import kvplan
from kvplan.engines import Engine, EngineOptions, Workload, get_engine
from kvplan.errors import OptionError
from kvplan.gpus import DEFAULT_RESERVE, budget_lines
from kvplan.resolve import load_read_model
from kvplan.weights import forward_shape, weight_bytes

MiB = 2**20
GiB = 2**30
LLAMA = "meta-llama/Meta-Llama-3.1-8B"  # hidden 4096, intermediate 14,336, vocab 128,256, 32 layers
H100 = 85_020_639_232  # h100-sxm-80g usable (torch total_memory)
WEIGHTS = 8_030_261_248 * 2


def terms(engine: str, model: str = LLAMA, tp: int = 1, **kw: object) -> dict[str, int]:
    read = load_read_model(model)
    layout = read.layout
    opts = EngineOptions(tensor_parallel_size=tp, device_memory_bytes=H100, device_name="NVIDIA H100 80GB HBM3", **kw)  # type: ignore[arg-type]
    shape = forward_shape(layout, weight_bytes(read))
    rule = get_engine(engine).kv_budget(H100, 1, None, None, Workload(layout, shape, 8192, opts))
    return {t.name: t.bytes for t in rule.terms[1:]}


def test_stated_reserve_is_one_figure() -> None:
    assert DEFAULT_RESERVE == Engine.STATED_RESERVE == 2 * GiB
    assert terms("ideal") == {"reserve": 2 * GiB}
    assert terms("llama.cpp") == {"reserve": 2 * GiB}


def test_vllm_terms_for_llama31_8b_on_an_h100() -> None:
    """vllm serve on an H100: T = 8,192, S = 1,024. sampler = 8,192 x 4,096 x 2 + 15 x 1,024 x 128,256 =
    2,037,121,024 B; forward = 8,192 x (3 x 14,336 + 4 x 4,096) x 2 = 973,078,528 B; the peak is the sampler's.
    CUDA graphs (vLLM >= 0.21): 320 MiB + 16 MiB x 32 layers."""
    t = terms("vllm")
    assert t["activation peak"] == 8192 * 4096 * 2 + 15 * 1024 * 128_256 == 2_037_121_024
    assert t["non-torch memory"] == 256 * MiB
    assert t["CUDA graphs"] == (320 + 16 * 32) * MiB
    assert "CUDA graphs" not in terms("vllm", enforce_eager=True)
    assert "CUDA graphs" not in terms("vllm", engine_version="0.19.0")  # 0.19 logs the estimate, does not subtract it


def test_vllm_activation_does_not_shrink_with_tp_but_nccl_grows() -> None:
    one, two, four = terms("vllm"), terms("vllm", tp=2), terms("vllm", tp=4)
    assert one["activation peak"] == two["activation peak"] == four["activation peak"]
    assert (two["non-torch memory"], four["non-torch memory"]) == (2150 * MiB, 2222 * MiB)


def test_vllm_small_gpu_defaults_shrink_the_peak() -> None:
    """Under 70 GiB vllm serve batches 2,048 tokens and 256 sequences: sampler = 2,048 x 4,096 x 2 + 15 x 256 x
    128,256 B (an A100 of 80 GB counts as small: PR #17885)."""
    read = load_read_model(LLAMA)
    layout = read.layout
    shape = forward_shape(layout, weight_bytes(read))
    opts = EngineOptions(device_memory_bytes=81_038 * MiB, device_name="NVIDIA A100-SXM4-80GB")
    rule = get_engine("vllm").kv_budget(81_038 * MiB, WEIGHTS, None, None, Workload(layout, shape, 8192, opts))
    assert rule.term("activation peak") == 2048 * 4096 * 2 + 15 * 256 * 128_256


def test_vllm_moe_workspaces_and_mxfp4() -> None:
    """Mixtral tp 2: + 8,192 x 2 x (3 x 14,336 / 2 + 4,096) x 2 B of fused-MoE caches; gpt-oss's MXFP4 experts
    add none (its sampler peak alone: 8,192 x 2,880 x 2 + 15 x 1,024 x 201,088)."""
    mixtral = terms("vllm", "mistralai/Mixtral-8x7B-v0.1", tp=2)
    sampler = 8192 * 4096 * 2 + 15 * 1024 * 32_000
    assert mixtral["activation peak"] == sampler + 8192 * 2 * (3 * 7168 + 4096) * 2
    gpt_oss = terms("vllm", "openai/gpt-oss-20b", tp=2)
    assert gpt_oss["activation peak"] == 8192 * 2880 * 2 + 15 * 1024 * 201_088


def test_vllm_before_017_is_refused() -> None:
    with pytest.raises(OptionError, match="not modelled"):
        terms("vllm", engine_version="0.16.0")


def test_reserve_replaces_every_engine_term() -> None:
    report = kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="vllm", reserve_bytes=3 * GiB)
    assert [t.name for t in report.budget.rule.terms] == ["weights", "reserve"]
    assert report.budget.kv_bytes_per_gpu == -(-H100 * 9 // 10) - WEIGHTS - 3 * GiB


def test_budget_lines_show_each_term_and_the_version() -> None:
    report = kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="vllm")
    lines = budget_lines(report.budget)
    assert "rules: vllm 0.33.0 (engine_version)" in lines  # the library names the parameter; the CLI its flag
    assert any(line.startswith("activation peak: 2,037,121,024 B") and "profile_run" in line for line in lines)
    assert any(line.startswith("CUDA graphs: 872,415,232 B") for line in lines)


def test_sglang_fraction_and_start_up_term() -> None:
    """SGLang on an H100 (81,082 MiB): mem_fraction_static 0.834 (ServerArgs._handle_gpu_memory_settings); the
    pool is 0.834 x (usable - 522 MiB in use at start) - weights, so the term is ceil(0.834 x 522 MiB)."""
    report = kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="sglang")
    rule = report.budget.rule
    assert rule.fraction == Fraction("0.834")
    assert rule.term("memory in use at start") == -(-522 * MiB * 834 // 1000)
    assert rule.kv_bytes == -(-H100 * 834 // 1000) - WEIGHTS - -(-522 * MiB * 834 // 1000)
    assert "mem_fraction_static" in rule.fraction_note
    explicit = kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="sglang", utilization=0.9).budget.rule
    assert explicit.fraction == Fraction(9, 10)


def test_sglang_default_fraction_by_gpu_bucket() -> None:
    """A 24 GiB card (24,564 MiB): chunked_prefill_size 2,048, cuda_graph_max_bs 24 at tp 1: reserved =
    512 + 3,072 + 48 + 128 = 3,760 MiB, round((24,564 - 3,760) / 24,564, 3) = 0.847."""
    read = load_read_model(LLAMA)
    layout = read.layout
    shape = forward_shape(layout, weight_bytes(read))
    memory = 24_564 * MiB
    work = Workload(layout, shape, 8192, EngineOptions(device_memory_bytes=memory))
    fraction, _ = get_engine("sglang").default_fraction(work)
    assert fraction == Fraction(str(round((24_564 - 3_760) / 24_564, 3))) == Fraction("0.847")


def test_trtllm_terms_and_free_basis() -> None:
    """TensorRT-LLM: (usable - weights - activation - non-torch) x 0.9, the activation the forward pass of 8,192
    tokens: 8,192 x (3 x 14,336 + 4 x 4,096) x 2 B; the CUDA context 512 MiB at tp 1."""
    report = kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="trtllm")
    rule = report.budget.rule
    activation = 8192 * (3 * 14_336 + 4 * 4096) * 2
    assert rule.term("activation peak") == activation
    assert rule.term("non-torch memory") == 512 * MiB
    assert rule.kv_bytes == (H100 - WEIGHTS - activation - 512 * MiB) * 9 // 10


def test_engine_version_is_refused_where_one_version_is_modelled() -> None:
    with pytest.raises(OptionError, match=r"^engine_version: "):
        kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="sglang", options=EngineOptions(engine_version="0.4.0"))

"""Engine rules that depend on the engine's version and setup: vLLM's batch defaults and async scheduling,
speculative-decoding layers, llama.cpp's recurrent rollback rows, TensorRT-LLM's block rounding. Each case is a
worked example from the engine's source (the arithmetic written out) or a figure from a cited public log."""

from __future__ import annotations

from fractions import Fraction

import pytest

from kvplan.engines import EngineOptions, capacity, get_engine
from kvplan.engines.vllm import VLLMEngine
from kvplan.errors import OptionError
from kvplan.layout import LayerKind
from kvplan.resolve import load_model

MiB = 2**20
GiB = 2**30
LLAMA31_8B = "meta-llama/Meta-Llama-3.1-8B"  # 32 layers, 8 KV heads, head_dim 128, bf16: 4,096 B per token-layer
GPT_OSS = "openai/gpt-oss-20b"  # 12 sliding layers (window 128) + 12 full, 8 KV heads, head_dim 64
H100_TORCH_TOTAL = 81_082 * MiB  # torch total_memory of an H100 80GB (the catalog's usable bytes)
A100_80G_TORCH_TOTAL = 81_038 * MiB


def vllm_opts(**kw: object) -> EngineOptions:
    return EngineOptions(**kw)  # type: ignore[arg-type]


# ---- vLLM: max_num_batched_tokens / max_num_seqs by GPU (EngineArgs.get_batch_defaults) -------------------


@pytest.mark.parametrize(
    ("memory", "name", "expected"),
    [
        (H100_TORCH_TOTAL, "NVIDIA H100 80GB HBM3", (8192, 1024)),  # >= 70 GiB, not an A100: 8192 / 1024
        (A100_80G_TORCH_TOTAL, "NVIDIA A100-SXM4-80GB", (2048, 256)),  # PR #17885: A100 keeps the small defaults
        (46_068 * MiB, "NVIDIA L40S", (2048, 256)),  # 45 GiB < 70 GiB
        (70 * GiB, "AMD Instinct MI300X", (8192, 1024)),  # exactly 70 GiB counts (>=)
        (70 * GiB - 1, "AMD Instinct MI300X", (2048, 256)),
    ],
)
def test_vllm_serve_batch_defaults_by_gpu(memory: int, name: str, expected: tuple[int, int]) -> None:
    vllm = get_engine("vllm")
    assert vllm.batch_limits(vllm_opts(device_memory_bytes=memory, device_name=name), 8192) == expected  # type: ignore[attr-defined]


def test_vllm_default_batched_tokens_capped_by_seqs_times_length() -> None:
    """_set_default_max_num_seqs_and_batched_tokens_args: a default budget is min(max_num_seqs x max_model_len,
    budget) and a default max_num_seqs min(seqs, budget): 1,024 x 4 = 4,096 tokens, seqs min(1,024, 4,096)."""
    vllm = get_engine("vllm")
    h100 = vllm_opts(device_memory_bytes=H100_TORCH_TOTAL, device_name="H100")
    assert vllm.batch_limits(h100, 4) == (4096, 1024)  # type: ignore[attr-defined]
    assert vllm.batch_limits(vllm_opts(max_num_seqs=2, device_memory_bytes=H100_TORCH_TOTAL), 4) == (8, 2)  # type: ignore[attr-defined]
    # an explicit --max-num-batched-tokens is kept as given, and caps a default max_num_seqs
    assert vllm.batch_limits(vllm_opts(max_num_batched_tokens=512, device_memory_bytes=H100_TORCH_TOTAL), 4) == (  # type: ignore[attr-defined]
        512,
        512,
    )


def test_vllm_sliding_layers_follow_the_gpu_default() -> None:
    """gpt-oss's sliding layers reserve window - 1 + 2 x max_num_batched_tokens tokens (async scheduling):
    cdiv(min(127 + 16,384, 131,072), 16) + 1 = 1,033 pages on an H100, cdiv(127 + 4,096, 16) + 1 = 265 on an A100."""
    vllm = get_engine("vllm")
    layout = load_model(GPT_OSS)
    sliding = next(layer for layer in layout.layers if layer.kind is LayerKind.SLIDING)
    h100 = vllm_opts(device_memory_bytes=H100_TORCH_TOTAL, device_name="NVIDIA H100 80GB HBM3")
    a100 = vllm_opts(device_memory_bytes=A100_80G_TORCH_TOTAL, device_name="NVIDIA A100-SXM4-80GB")
    assert vllm.pages_per_request(sliding, 16, 131_072, h100) == -(-(127 + 16_384) // 16) + 1 == 1033  # type: ignore[attr-defined]
    assert vllm.pages_per_request(sliding, 16, 131_072, a100) == -(-(127 + 4096) // 16) + 1 == 265  # type: ignore[attr-defined]


# ---- vLLM: async scheduling by version ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "flag", "batches"),
    [
        ("0.13.0", None, 1),  # off by default before 0.14.0
        ("0.14.0", None, 2),  # 0.14.0 release notes: "Async scheduling is now enabled by default"
        ("0.33", None, 2),
        ("0.33", False, 1),  # --no-async-scheduling
        ("0.11.2", True, 2),  # --async-scheduling on an old version
    ],
)
def test_vllm_async_scheduling_default_by_version(version: str, flag: bool | None, batches: int) -> None:
    vllm = get_engine("vllm")
    opts = vllm_opts(engine_version=version, async_scheduling=flag, max_num_batched_tokens=8192)
    assert vllm.in_flight(opts, 131_072) == 8192 * batches  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", ["0.10.0", "0.34", "latest", "1"])
def test_vllm_version_outside_the_modelled_range_is_refused(bad: str) -> None:
    with pytest.raises(OptionError, match=r"^engine_version: "):
        get_engine("vllm").estimate(load_model(LLAMA31_8B), 4096, 1, opts=vllm_opts(engine_version=bad))


# ---- speculative decoding ----------------------------------------------------------------------------------


def test_eagle_draft_layer_joins_the_vllm_pool() -> None:
    """One EAGLE draft layer with Llama-3.1-8B's attention shape: vLLM's KV spec covers 33 attention layers in one
    group, so a block holds 33 pages of 16 x 4,096 B and 10 GiB gives 10 x 2^30 // (33 x 65,536) = 4,964 blocks."""
    layout = load_model(LLAMA31_8B)
    cap = capacity("vllm", layout, 10 * GiB, 8192, opts=vllm_opts(speculative_layers=1))
    assert cap.num_blocks == 10 * GiB // (33 * 65_536) == 4964
    plain = capacity("vllm", layout, 10 * GiB, 8192)
    assert plain.num_blocks == 10 * GiB // (32 * 65_536) == 5120
    est = get_engine("vllm").estimate(layout, 8192, 1, opts=vllm_opts(speculative_layers=2))
    assert est.per_gpu_bytes == 34 * 512 * 65_536
    assert any("2 EAGLE-style draft" in rule for rule in est.rules)


def test_mtp_layers_are_what_speculative_layers_counts() -> None:
    """DeepSeek-V3 ships num_nextn_predict_layers = 1: one MLA layer of 576 values (1,152 B bf16) per token."""
    layout = load_model("deepseek-ai/DeepSeek-V3")
    assert len(layout.mtp_layers) == 1
    ideal = get_engine("ideal")
    base = ideal.estimate(layout, 4096, 1).per_gpu_bytes
    assert base == 61 * 4096 * 1152
    assert ideal.estimate(layout, 4096, 1, opts=vllm_opts(speculative_layers=1)).per_gpu_bytes == 62 * 4096 * 1152
    with pytest.raises(OptionError, match="1 multi-token-prediction layer"):
        ideal.estimate(layout, 4096, 1, opts=vllm_opts(speculative_layers=2))


def test_draft_layers_sit_on_the_last_pipeline_stage() -> None:
    """split_layers keeps vLLM's stage sizes for the target (32 layers: 16 + 16); the draft joins stage 1."""
    est = get_engine("vllm").estimate(
        load_model(LLAMA31_8B), 8192, 1, opts=vllm_opts(pipeline_parallel_size=2, speculative_layers=1)
    )
    assert [len(stage) for stage in est.stages] == [16, 17]


def test_llamacpp_keeps_rollback_rows_for_qwen35_mtp() -> None:
    """llama_memory_recurrent allocates mem_size x (1 + n_rs_seq) rows per layer, n_rs_seq = the draft's n_max
    (common_params_speculative::need_n_rs_seq; n_max defaults to 3) on QWEN35 archs; the MTP layer is cached too."""
    layout = load_model("Qwen/Qwen3.5-27B")
    engine = get_engine("llama.cpp")
    plain = engine.estimate(layout, 4096, 1)
    state = sum(c.fixed_bytes for c in plain.largest_stage if c.spec.kind is LayerKind.STATE)
    assert state > 0
    mtp = engine.estimate(layout, 4096, 1, opts=vllm_opts(speculative_layers=1))
    mtp_state = sum(c.fixed_bytes for c in mtp.largest_stage if c.spec.kind is LayerKind.STATE)
    assert mtp_state == 4 * state  # 1 + n_rs_seq 3
    five = engine.estimate(layout, 4096, 1, opts=vllm_opts(speculative_layers=1, speculative_tokens=5))
    assert sum(c.fixed_bytes for c in five.largest_stage if c.spec.kind is LayerKind.STATE) == 6 * state
    grows = [c for c in mtp.largest_stage if c.spec.kind.grows_with_context]
    assert len(grows) == len([c for c in plain.largest_stage if c.spec.kind.grows_with_context]) + 1
    assert any("1 + n_rs_seq 3" in rule for rule in mtp.rules)


def test_llamacpp_rows_only_where_the_arch_rolls_back() -> None:
    """Nemotron-H is not in llm_arch_supports_rs_rollback: n_rs_seq is clamped to 0, one row per sequence."""
    layout = load_model("nvidia/Nemotron-H-56B-Base-8K")
    engine = get_engine("llama.cpp")
    plain = engine.estimate(layout, 4096, 1)
    spec = engine.estimate(layout, 4096, 1, opts=vllm_opts(speculative_layers=1))
    state = [c.fixed_bytes for c in plain.largest_stage if c.spec.kind is LayerKind.STATE]
    assert [c.fixed_bytes for c in spec.largest_stage if c.spec.kind is LayerKind.STATE] == state


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_speculative_layers_must_be_a_count(bad: object) -> None:
    with pytest.raises(OptionError, match=r"^speculative_layers: "):
        get_engine("vllm").estimate(load_model(LLAMA31_8B), 4096, 1, opts=vllm_opts(speculative_layers=bad))


# ---- TensorRT-LLM: the block count rounded up --------------------------------------------------------------


def test_trtllm_rounds_the_block_count_up() -> None:
    """TRT-LLM#2268 (Qwen1.5-7B: 32 layers, 32 KV heads, head_dim 128, fp16 = 524,288 B per token; 64-token
    blocks): "available: 21.89 GiB" x 0.9 = 40,347 tokens -> "Number of blocks in KV cache primary pool: 631".
    ceilDiv(40,347, 64) = 631; floor would give 630. Llama-2-7B has the same per-token bytes."""
    layout = load_model("meta-llama/Llama-2-7b-hf")
    memory = int(Fraction("21.89") * GiB * Fraction(9, 10))
    cap = capacity("trtllm", layout, memory, 4096, opts=vllm_opts(block_size=64))
    assert memory // 524_288 == 40_347
    assert cap.num_blocks == 631
    assert cap.kv_tokens == 631 * 64
    assert any("ceil(max_tokens / 64)" in line for line in cap.lines)


# ---- the settings a vLLM budget was computed with -----------------------------------------------------------


def test_vllm_budget_names_its_batch_defaults_and_scheduling() -> None:
    """EngineArgs.get_batch_defaults: vllm serve takes 8,192 tokens / 1,024 sequences on a GPU of at least 70 GiB
    that is not an A100, 2,048 / 256 on an A100 (PR #17885); a default token budget is capped at max_num_seqs x
    max_model_len (2 x 1,024 = 2,048 here); async scheduling is on by default from 0.14.0, off in 0.13."""
    import kvplan

    def settings(gpu: str, **kw: object) -> tuple[str, ...]:
        return kvplan.fit(LLAMA31_8B, gpu=gpu, ctx=kw.pop("ctx", 8192), engine="vllm", **kw).budget.rule.settings

    h100, a100 = settings("h100"), settings("a100-80g")
    assert h100[0].startswith("max_num_batched_tokens 8,192, max_num_seqs 1,024: vllm serve's defaults on a GPU of")
    assert a100[0].startswith("max_num_batched_tokens 2,048, max_num_seqs 256: vllm serve's defaults on an A100")
    assert h100[1] == "async scheduling on (vLLM 0.33.0's default): 2 batches in flight"
    capped = settings("h100", ctx=1024, options=vllm_opts(max_num_seqs=2))
    assert capped[0].startswith("max_num_batched_tokens 2,048, max_num_seqs 2:")
    assert "capped at max_num_seqs x max_model_len 1,024" in capped[0]
    vllm = get_engine("vllm")
    assert isinstance(vllm, VLLMEngine)
    old = vllm.settings(vllm_opts(engine_version="0.13"), 8192)  # a 0.13 budget is refused: its peak is unmodelled
    assert old[1] == "async scheduling off (vLLM 0.13.0's default): 1 batch in flight"
    given = settings("h100", reserve_bytes=2**30)
    assert given == ()  # --reserve replaces the engine's terms: no settings behind them

"""One budget rule per engine, used by every command: fit, pick-g and capacity give the same KV memory for the
same GPU, weights and reserve. TensorRT-LLM's fraction applies to the memory left free after the weights and
the activation peak (KvCacheCreator._cal_max_memory in tensorrt_llm/_torch/pyexecutor/_util.py:
int((total - peak + temporary KV) x free_gpu_memory_fraction)); vLLM's to the whole GPU (request_memory)."""

from __future__ import annotations

from fractions import Fraction

import pytest

import kvplan
from kvplan.engines import ENGINES, get_engine
from kvplan.engines.budget import BudgetBasis

LLAMA31_8B = "meta-llama/Meta-Llama-3.1-8B"
H100_USABLE = 85_020_639_232  # h100-sxm-80g: torch total_memory, configs/gpus.yaml
LLAMA31_8B_WEIGHTS = 8_030_261_248 * 2  # 8,030,261,248 parameters (the model card) in bf16
RESERVE = 2 * 2**30


def test_trtllm_fit_and_capacity_agree_on_the_free_memory_rule() -> None:
    expected = (H100_USABLE - LLAMA31_8B_WEIGHTS - RESERVE) * 9 // 10
    assert expected == 60_131_369_779
    fit = kvplan.fit(LLAMA31_8B, gpu="h100", ctx=8192, engine="trtllm", reserve_bytes=RESERVE)
    cap = kvplan.capacity(LLAMA31_8B, gpu="h100", max_model_len=8192, engine="trtllm", reserve_bytes=RESERVE)
    assert fit.budget.weights_bytes == LLAMA31_8B_WEIGHTS
    assert fit.budget.kv_bytes_per_gpu == expected
    assert cap.capacity.kv_memory_bytes == expected
    assert fit.budget.rule.basis is BudgetBasis.FREE


def test_vllm_budget_is_a_share_of_the_whole_gpu() -> None:
    expected = -(-H100_USABLE * 9 // 10) - LLAMA31_8B_WEIGHTS - RESERVE
    assert expected == 58_310_569_165
    fit = kvplan.fit(LLAMA31_8B, gpu="h100", ctx=8192, engine="vllm", reserve_bytes=RESERVE)
    cap = kvplan.capacity(LLAMA31_8B, gpu="h100", max_model_len=8192, engine="vllm", reserve_bytes=RESERVE)
    assert fit.budget.kv_bytes_per_gpu == cap.capacity.kv_memory_bytes == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_every_command_uses_the_engines_one_rule(engine: str) -> None:
    rule = get_engine(engine).kv_budget(H100_USABLE, LLAMA31_8B_WEIGHTS, RESERVE, Fraction(9, 10))
    fit = kvplan.fit(LLAMA31_8B, gpu="h100", ctx=8192, engine=engine, reserve_bytes=RESERVE, utilization=0.9)
    cap = kvplan.capacity(
        LLAMA31_8B, gpu="h100", max_model_len=8192, engine=engine, reserve_bytes=RESERVE, utilization=0.9
    )
    pick = kvplan.pick_g(
        LLAMA31_8B, gpu="h100", ctx=8192, batch=1, engine=engine, reserve_bytes=RESERVE, utilization=0.9
    )
    assert fit.budget.kv_bytes_per_gpu == cap.capacity.kv_memory_bytes == rule.kv_bytes
    own = next(o for o in pick.single.options if o.g == 8)
    assert own.kv_budget_bytes == rule.kv_bytes


def test_the_free_rule_floors_and_the_total_rule_ceils() -> None:
    usable, weights, reserve = 10**9 + 1, 10**8, 10**7
    free = get_engine("trtllm").kv_budget(usable, weights, reserve, Fraction(9, 10))
    total = get_engine("vllm").kv_budget(usable, weights, reserve, Fraction(9, 10))
    assert free.kv_bytes == (usable - weights - reserve) * 9 // 10  # 801,000,000.9 -> 801,000,000
    assert free.kv_bytes == 801_000_000
    assert total.requested_bytes == 900_000_001  # ceil(900,000,000.9)
    assert total.kv_bytes == 900_000_001 - weights - reserve

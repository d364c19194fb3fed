"""The launch command of pick-g, fit and capacity, parsed back with parsers that mirror each engine's own flags
(tests/engine_flags.py), gives the plan's numbers: the context, the sequences, the tensor-parallel size, the
memory fraction and the KV dtype, in each engine's own spelling."""

from __future__ import annotations

import json
import shlex
from fractions import Fraction

import pytest
from typer.testing import CliRunner

import kvplan
from kvplan.cli import app
from kvplan.errors import OptionError
from tests.engine_flags import parse_launch

LLAMA = "meta-llama/Llama-3.1-8B-Instruct"


def test_vllm_fit_command_parses_back_to_the_plan() -> None:
    report = kvplan.fit(LLAMA, gpu="2xh100", ctx=65_536, batch=16, engine="vllm", kv_cache_dtype="fp8")
    assert report.launch_command is not None
    args = parse_launch(report.launch_command)
    assert args.model == LLAMA
    assert args.max_model_len == 65_536
    assert args.max_num_seqs == 16
    assert args.kv_cache_dtype == "fp8_e4m3"  # fp8 is vLLM's alias of fp8_e4m3
    fewest = next(a for a in report.min_gpus if (a.ctx, a.batch) == (65_536, 16))
    assert args.tensor_parallel_size == fewest.tp
    assert Fraction(str(args.gpu_memory_utilization)) == Fraction(9, 10)


def test_sglang_command_carries_its_own_default_fraction() -> None:
    """SGLang's mem_fraction_static rule on an H100 (81,082 MiB, chunked_prefill_size 8,192, cuda_graph_max_bs
    256 at tp 1): reserved = max(512 + 1.5 x 8,192 + 2 x 256 + 1 x 1 / 8 x 1,024, 10,240) = 13,440 MiB,
    round((81,082 - 13,440) / 81,082, 3) = 0.834."""
    report = kvplan.fit(LLAMA, gpu="h100", ctx=32_768, batch=8, engine="sglang")
    assert report.budget.rule.fraction == Fraction("0.834")
    assert round((81_082 - 13_440) / 81_082, 3) == 0.834
    assert report.launch_command is not None
    args = parse_launch(report.launch_command)
    assert (args.model_path, args.context_length, args.max_running_requests, args.tp_size) == (LLAMA, 32_768, 8, 1)
    assert args.mem_fraction_static == 0.834
    assert args.kv_cache_dtype == "auto"


def test_llamacpp_command_is_the_whole_cache_over_parallel_sequences() -> None:
    report = kvplan.fit(LLAMA, gpu="rtx-4090", ctx=8192, batch=4, engine="llama.cpp")
    assert report.launch_command is not None
    args = parse_launch(report.launch_command)
    assert args.ctx_size == 8192 * 4  # -c is ctx x parallel: one unified stream shared by -np sequences
    assert args.parallel == 4
    assert (args.cache_type_k, args.cache_type_v) == ("f16", "f16")
    assert args.kv_unified


def test_llamacpp_quantized_v_turns_flash_attention_on() -> None:
    result = CliRunner().invoke(
        app,
        [
            "capacity",
            LLAMA,
            "--engine",
            "llama.cpp",
            "--gpu",
            "rtx-4090",
            "--ctx",
            "8192",
            "--cache-type-k",
            "q8_0",
            "--cache-type-v",
            "q4_0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    args = parse_launch(data["launch_command"])
    assert (args.cache_type_k, args.cache_type_v, args.flash_attn) == ("q8_0", "q4_0", "on")
    assert args.ctx_size == 8192 * data["max_concurrent_requests"]


def test_trtllm_command_and_its_yaml() -> None:
    report = kvplan.fit(LLAMA, gpu="h100", ctx=16_384, batch=32, engine="trtllm", kv_cache_dtype="fp8")
    assert report.launch_command is not None
    args = parse_launch(report.launch_command)
    assert (args.model, args.backend, args.max_seq_len, args.max_batch_size, args.tp_size) == (
        LLAMA,
        "pytorch",
        16_384,
        32,
        1,
    )
    assert args.kv_cache_free_gpu_memory_fraction == 0.9
    assert args.extra_llm_api_options == "kvplan-trtllm.yaml"
    (note,) = report.launch_notes
    assert json.loads(note.split(": ", 1)[1]) == {"kv_cache_config": {"dtype": "fp8"}}


def test_capacity_json_has_the_launch_command() -> None:
    result = CliRunner().invoke(app, ["capacity", LLAMA, "--gpu", "h100", "--ctx", "8K", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    args = parse_launch(data["launch_command"])
    assert args.max_model_len == 8192
    assert args.max_num_seqs == data["max_concurrent_requests"]
    assert Fraction(str(args.gpu_memory_utilization)) == Fraction(9, 10)


def test_capacity_from_kv_memory_passes_the_bytes() -> None:
    """--kv-memory as a bare byte count (as TensorRT-LLM prints "Allocate 69524783104 bytes for k/v cache"); vLLM
    takes such a figure as --kv-cache-memory-bytes, which skips its profiling."""
    result = CliRunner().invoke(app, ["capacity", LLAMA, "--kv-memory", "69524783104", "--ctx", "8K", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["kv_memory_bytes"] == 69_524_783_104
    args = parse_launch(data["launch_command"])
    assert args.kv_cache_memory_bytes == 69_524_783_104
    assert args.gpu_memory_utilization == 0.9  # not passed: the parser's default


def test_enforce_eager_and_async_flags_reach_the_command() -> None:
    report = kvplan.fit(
        LLAMA,
        gpu="h100",
        ctx=8192,
        engine="vllm",
        options=kvplan.EngineOptions(enforce_eager=True, async_scheduling=False, max_num_batched_tokens=4096),
    )
    assert report.launch_command is not None
    args = parse_launch(report.launch_command)
    assert args.enforce_eager is True
    assert args.async_scheduling is False
    assert args.max_num_batched_tokens == 4096


def test_mtp_speculative_config() -> None:
    report = kvplan.fit(
        "deepseek-ai/DeepSeek-V3",
        gpu="8xh200-141g",
        ctx=8192,
        engine="vllm",
        options=kvplan.EngineOptions(speculative_layers=1),
    )
    assert report.launch_command is not None
    args = parse_launch(report.launch_command)
    assert args.speculative_config == {"method": "mtp", "num_speculative_tokens": 1}


def test_ideal_has_no_launch_command() -> None:
    report = kvplan.fit(LLAMA, gpu="h100", ctx=8192)
    assert report.launch_command is None


def test_printed_command_is_shell_quoted() -> None:
    result = CliRunner().invoke(app, ["fit", LLAMA, "--gpu", "h100", "--ctx", "8K", "--engine", "vllm"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("Launch\n", 1)[1].splitlines()
    words: list[str] = []
    for line in lines:  # a long command is broken between arguments with " \" continuations (at the width)
        words += shlex.split(line.removesuffix(" \\"))
        if not line.endswith(" \\"):
            break
    assert parse_launch(words).max_model_len == 8192


def test_an_engine_without_the_dtype_says_so() -> None:
    with pytest.raises(OptionError, match="sglang's --kv-cache-dtype has no value for float32"):
        kvplan.fit(LLAMA, gpu="h100", ctx=8192, engine="sglang", kv_cache_dtype="float32")

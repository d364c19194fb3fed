"""Argument parsers that mirror each serving engine's own, for the flags kvplan's launch commands use.

A launch command kvplan prints must parse back under the engine's real flag spellings and give the plan's
numbers. These parsers copy only spellings, aliases and value types (never an engine's code):

- vLLM ``vllm serve MODEL``: every EngineArgs field is a flag (vllm/engine/arg_utils.py, EngineArgs.add_cli_args /
  _compute_kwargs): bool fields get argparse.BooleanOptionalAction (--async-scheduling / --no-async-scheduling),
  "-tp" / "-pp" are the short forms of --tensor-parallel-size / --pipeline-parallel-size.
- SGLang ``python -m sglang.launch_server`` (python/sglang/srt/server_args.py, ServerArgs.add_cli_args):
  --tp-size has the alias --tp, --pp-size the alias --pp.
- llama.cpp ``llama-server`` (common/arg.cpp): -m/--model or -hf/--hf-repo, -c/--ctx-size, -np/--parallel,
  -ctk/--cache-type-k, -ctv/--cache-type-v, -ub/--ubatch-size, -fa/--flash-attn on|off|auto, -kvu/--kv-unified,
  --swa-full.
- TensorRT-LLM ``trtllm-serve MODEL`` (tensorrt_llm/commands/serve.py, click options): --backend, --tp_size,
  --pp_size, --max_batch_size, --max_num_tokens, --max_seq_len, --kv_cache_free_gpu_memory_fraction,
  --extra_llm_api_options.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence


def _parser(prog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, exit_on_error=False, allow_abbrev=False)


def vllm_serve() -> argparse.ArgumentParser:
    p = _parser("vllm serve")
    p.add_argument("model")
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument(
        "--kv-cache-dtype",
        choices=[
            "auto",
            "bfloat16",
            "float16",
            "fp8",
            "fp8_e4m3",
            "fp8_e5m2",
            "fp8_inc",
            "fp8_ds_mla",
            "int8_per_token_head",
            "fp8_per_token_head",
            "nvfp4",
        ],
        default="auto",
    )
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    p.add_argument("--kv-cache-memory-bytes", type=int)
    p.add_argument("--block-size", type=int)
    p.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--async-scheduling", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--speculative-config", type=json.loads)
    return p


def sglang_launch_server() -> argparse.ArgumentParser:
    p = _parser("python -m sglang.launch_server")
    p.add_argument("--model-path", required=True)
    p.add_argument("--context-length", type=int)
    p.add_argument("--max-running-requests", type=int)
    p.add_argument("--tp-size", "--tp", type=int, default=1)
    p.add_argument("--pp-size", "--pp", type=int, default=1)
    p.add_argument("--mem-fraction-static", type=float)
    p.add_argument(
        "--kv-cache-dtype",
        choices=["auto", "fp8_e5m2", "fp8_e4m3", "bf16", "bfloat16", "fp4_e2m1"],
        default="auto",
    )
    p.add_argument("--page-size", type=int)
    p.add_argument("--chunked-prefill-size", type=int)
    p.add_argument("--speculative-algorithm")
    return p


LLAMA_CPP_CACHE_TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]


def llama_server() -> argparse.ArgumentParser:
    p = _parser("llama-server")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("-m", "--model")
    source.add_argument("-hf", "--hf-repo")
    p.add_argument("-c", "--ctx-size", type=int, default=0)
    p.add_argument("-np", "--parallel", type=int, default=-1)
    p.add_argument("-ctk", "--cache-type-k", choices=LLAMA_CPP_CACHE_TYPES, default="f16")
    p.add_argument("-ctv", "--cache-type-v", choices=LLAMA_CPP_CACHE_TYPES, default="f16")
    p.add_argument("-ub", "--ubatch-size", type=int, default=512)
    p.add_argument("-fa", "--flash-attn", choices=["on", "off", "auto"], default="auto")
    p.add_argument("-kvu", "--kv-unified", action="store_true")
    p.add_argument("--swa-full", action="store_true")
    p.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers")
    return p


def trtllm_serve() -> argparse.ArgumentParser:
    p = _parser("trtllm-serve")
    p.add_argument("model")
    p.add_argument("--backend", choices=["pytorch", "tensorrt", "_autodeploy"])
    p.add_argument("--tp_size", type=int, default=1)
    p.add_argument("--pp_size", type=int, default=1)
    p.add_argument("--max_batch_size", type=int)
    p.add_argument("--max_num_tokens", type=int)
    p.add_argument("--max_seq_len", type=int)
    p.add_argument("--kv_cache_free_gpu_memory_fraction", type=float, default=0.9)
    p.add_argument("--extra_llm_api_options")
    return p


#: The program words each engine's command starts with, and its parser.
PARSERS = {
    ("vllm", "serve"): vllm_serve,
    ("python", "-m", "sglang.launch_server"): sglang_launch_server,
    ("llama-server",): llama_server,
    ("trtllm-serve",): trtllm_serve,
}


def parse_launch(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a launch command (program words included) with the parser of the engine it names."""
    for prefix, make in PARSERS.items():
        if tuple(argv[: len(prefix)]) == prefix:
            return make().parse_args(list(argv[len(prefix) :]))
    raise ValueError(f"no engine parser for {list(argv[:3])}")

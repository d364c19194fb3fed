"""How each serving engine stores the cache: ideal, vLLM, SGLang, llama.cpp, TensorRT-LLM, transformers.

``ideal`` is what the architecture must keep. Every other engine is one module here that states its rules in
one place: how many K/V heads each GPU holds under tensor parallelism, how many token slots a layer holds for a
batch (pages, cells, padding, windows), what a fixed-state layer costs, and how the engine turns a memory
budget into blocks / tokens / concurrency (``capacity``). Each rule cites the engine source it follows; the
shared reference (docs/engines.md in the README) has one worked example per engine.
"""

from __future__ import annotations

from kvplan.engines.base import (
    Capacity,
    Engine,
    EngineEstimate,
    EngineOptions,
    LaunchPlan,
    LayerCost,
    Workload,
    allowed_types,
    cdiv,
    check_tp,
    fp8_indexer_token_bytes,
    heads_per_rank,
    largest,
    shard,
    shard_state,
    split_layers,
    tp_rule,
)
from kvplan.engines.hf import HFEngine
from kvplan.engines.ideal import ideal_capacity
from kvplan.engines.llamacpp import LlamaCppEngine, llamacpp_capacity
from kvplan.engines.registry import ENGINE_CLASSES, ENGINES, capacity, engine_for, get_engine
from kvplan.engines.sglang import SGLangEngine, sglang_capacity
from kvplan.engines.trtllm import TRTLLMEngine, trtllm_capacity
from kvplan.engines.vllm import VLLMEngine, vllm_capacity

__all__ = [
    "ENGINES",
    "ENGINE_CLASSES",
    "Capacity",
    "Engine",
    "EngineEstimate",
    "EngineOptions",
    "HFEngine",
    "LaunchPlan",
    "LayerCost",
    "LlamaCppEngine",
    "SGLangEngine",
    "TRTLLMEngine",
    "VLLMEngine",
    "Workload",
    "allowed_types",
    "capacity",
    "cdiv",
    "check_tp",
    "engine_for",
    "fp8_indexer_token_bytes",
    "get_engine",
    "heads_per_rank",
    "ideal_capacity",
    "largest",
    "llamacpp_capacity",
    "sglang_capacity",
    "shard",
    "shard_state",
    "split_layers",
    "tp_rule",
    "trtllm_capacity",
    "vllm_capacity",
]

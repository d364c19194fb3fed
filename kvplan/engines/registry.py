"""The engines kvplan knows, by name: lookup, capacity and the KV budget per engine."""

from __future__ import annotations

from kvplan.engines.base import Capacity, Engine, EngineOptions
from kvplan.engines.hf import HFEngine
from kvplan.engines.ideal import ideal_capacity
from kvplan.engines.llamacpp import LlamaCppEngine, llamacpp_capacity
from kvplan.engines.sglang import SGLangEngine, sglang_capacity
from kvplan.engines.trtllm import TRTLLMEngine, trtllm_capacity
from kvplan.engines.vllm import VLLMEngine, vllm_capacity
from kvplan.errors import OptionError
from kvplan.formula import check_positive
from kvplan.layout import CacheLayout

ENGINES = ("ideal", "vllm", "sglang", "llama.cpp", "trtllm", "hf")


ENGINE_CLASSES: dict[str, type[Engine]] = {
    "ideal": Engine,
    "vllm": VLLMEngine,
    "sglang": SGLangEngine,
    "llama.cpp": LlamaCppEngine,
    "trtllm": TRTLLMEngine,
    "hf": HFEngine,
}


#: The engine a model file's format implies when none is asked for: GGUF files are llama.cpp's (and Ollama's,
#: which runs llama.cpp).
GGUF_ENGINE = "llama.cpp"
GGUF_ENGINE_NOTE = (
    "GGUF model: planned with llama.cpp's accounting, the engine that runs GGUF files (name another engine to compare)"
)


def engine_for(layout: CacheLayout, engine: str | None, default: str = "ideal") -> tuple[str, str]:
    """The engine to plan with, and a note when the model's format chose it (a GGUF file: llama.cpp)."""
    if engine is not None:
        return engine, ""
    if layout.file_tensors:
        return GGUF_ENGINE, GGUF_ENGINE_NOTE
    return default, ""


def get_engine(name: str) -> Engine:
    key = name.strip().lower()
    aliases = {
        "transformers": "hf",
        "llamacpp": "llama.cpp",
        "llama-cpp": "llama.cpp",
        "tensorrt-llm": "trtllm",
        "trt-llm": "trtllm",
    }
    key = aliases.get(key, key)
    if key not in ENGINE_CLASSES:
        raise OptionError("--engine", f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_CLASSES)}")
    return ENGINE_CLASSES[key]()


def capacity(
    engine_name: str,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    *,
    kv_cache_dtype: str = "auto",
    opts: EngineOptions | None = None,
) -> Capacity:
    """What ``engine_name`` allocates from ``kv_memory`` bytes per GPU, computed the way that engine does."""
    check_positive("--kv-memory", kv_memory)
    check_positive("--max-model-len", max_model_len)
    opts = opts or EngineOptions()
    engine = get_engine(engine_name)
    if isinstance(engine, VLLMEngine):
        return vllm_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    if isinstance(engine, SGLangEngine):
        return sglang_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    if isinstance(engine, LlamaCppEngine):
        return llamacpp_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    if isinstance(engine, TRTLLMEngine):
        return trtllm_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)
    return ideal_capacity(engine, layout, kv_memory, max_model_len, kv_cache_dtype, opts)

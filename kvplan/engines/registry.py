"""The engines kvplan knows, by name. Adding an engine is one module (a subclass of
:class:`~kvplan.engines.base.Engine` that states every piece) and one entry in :data:`BUILTIN`.

:func:`register` refuses a class that leaves an abstract piece undefined (capacity, budget, verify's tensors) or
has no name, summary or label, so no command can fall back to another engine's rule without saying so.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from kvplan.engines.base import Capacity, Engine, EngineOptions
from kvplan.engines.hf import HFEngine
from kvplan.engines.ideal import IdealEngine
from kvplan.engines.llamacpp import LlamaCppEngine
from kvplan.engines.sglang import SGLangEngine
from kvplan.engines.trtllm import TRTLLMEngine
from kvplan.engines.vllm import VLLMEngine
from kvplan.errors import OptionError, Param
from kvplan.formula import check_positive
from kvplan.layout import CacheLayout

#: The built-in engines, in the order help and listings show them.
BUILTIN: tuple[type[Engine], ...] = (IdealEngine, VLLMEngine, SGLangEngine, LlamaCppEngine, TRTLLMEngine, HFEngine)

ENGINE_CLASSES: dict[str, type[Engine]] = {}


def register(cls: type[Engine]) -> type[Engine]:
    """Add an engine class to the registry; refuse one that lacks a piece every engine must state."""
    missing = sorted(getattr(cls, "__abstractmethods__", ()))
    if inspect.isabstract(cls) or missing:
        raise TypeError(f"engine {cls.__name__} does not define: {', '.join(missing)}")
    for attr in ("name", "summary", "label", "rules_text"):
        if not isinstance(getattr(cls, attr, None), str) or not getattr(cls, attr):
            raise TypeError(f"engine {cls.__name__} has no {attr}")
    if not isinstance(getattr(cls, "FLAG_DEFAULTS", None), Mapping):
        raise TypeError(f"engine {cls.__name__} has no FLAG_DEFAULTS (what it does when an option is not given)")
    taken = {key for other in ENGINE_CLASSES.values() if other is not cls for key in (other.name, *other.aliases)}
    clash = {cls.name, *cls.aliases} & taken
    if clash:
        raise TypeError(f"engine {cls.__name__}: {', '.join(sorted(clash))} already names another engine")
    ENGINE_CLASSES[cls.name] = cls
    return cls


for _cls in BUILTIN:
    register(_cls)

#: The built-in engine names (a snapshot; :func:`engine_names` sees engines registered later).
ENGINES = tuple(ENGINE_CLASSES)


def engine_names() -> tuple[str, ...]:
    return tuple(ENGINE_CLASSES)


def defaults_help(param: Param) -> str:
    """What each engine does when ``param`` is not given, for ``--help``: ``vllm 16; sglang 1; trtllm 32``."""
    said = [f"{name} {cls.FLAG_DEFAULTS[param]}" for name, cls in ENGINE_CLASSES.items() if param in cls.FLAG_DEFAULTS]
    return "; ".join(said)


def engine_help(default: str | None = None) -> str:
    """How ``--help`` lists the engines, in registry order: ``ideal (what the architecture must keep; the default),
    vllm, ... or hf (transformers)``. With ``default`` (capacity's vllm), that engine first, marked, the rest by
    name after it. The engine a GGUF model implies is marked in both."""
    names = list(ENGINE_CLASSES)
    if default is not None:
        start = names.index(default)
        names = names[start:] + names[:start]

    def label(name: str) -> str:
        if name == default:
            return f"{name} (default)"
        notes = [] if default is not None else [ENGINE_CLASSES[name].label.removeprefix(name).strip(" ()")]
        if default is None and name == DEFAULT_ENGINE:
            notes.append("the default")
        if name == GGUF_ENGINE:
            notes.append("the default for a GGUF model")
        notes = [n for n in notes if n]
        return f"{name} ({'; '.join(notes)})" if notes else name

    labels = [label(n) for n in names]
    return ", ".join(labels[:-1]) + " or " + labels[-1] if len(labels) > 1 else labels[0]


#: The engine plans use when none is asked for.
DEFAULT_ENGINE = "ideal"

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
    for cls in ENGINE_CLASSES.values():
        if key == cls.name or key in cls.aliases:
            return cls()
    raise OptionError(Param.ENGINE, f"unknown engine {name!r}; choose one of: {', '.join(ENGINE_CLASSES)}")


def capacity(
    engine_name: str,
    layout: CacheLayout,
    kv_memory: int,
    max_model_len: int,
    *,
    kv_cache_dtype: str = "auto",
    k_dtype: str | None = None,
    v_dtype: str | None = None,
    opts: EngineOptions | None = None,
) -> Capacity:
    """What ``engine_name`` allocates from ``kv_memory`` bytes per GPU, computed the way that engine does. K and
    V types apart (``k_dtype`` / ``v_dtype``) only where the engine stores them apart (llama.cpp, ideal, hf)."""
    check_positive(Param.KV_MEMORY, kv_memory)
    check_positive(Param.MAX_MODEL_LEN, max_model_len)
    return get_engine(engine_name).capacity(
        layout, kv_memory, max_model_len, kv_cache_dtype, opts or EngineOptions(), k_dtype, v_dtype
    )

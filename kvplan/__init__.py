"""kvplan: exact KV-cache memory planning for LLM serving.

The Python API::

    import kvplan

    report = kvplan.size("meta-llama/Llama-2-70b", ctx=4096, batch=1)
    report.estimate.bytes_per_token      # 327680
    layout = kvplan.load_model("Qwen/Qwen3-8B")
    kvplan.estimate(layout, ctx=32768, batch=8).total_bytes
    kvplan.pick_g(gpu="a100-80g", ctx=65536, batch=32).single.recommended_g   # 1: the reference scenario
    kvplan.fit("meta-llama/Llama-2-70b", gpu="h100", ctx=32768).min_gpus[0].tp  # 2
    kvplan.capacity("meta-llama/Llama-3.1-8B", kv_memory=10 * 2**30, max_model_len=8192).capacity.num_blocks

Names load on first use (PEP 562), so ``kvplan`` on the command line imports only what a command needs.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvplan.errors import ExitCode, KvplanError
    from kvplan.formula import CacheEstimate, estimate, resolve_types, with_kv_heads
    from kvplan.layout import CacheLayout, LayerKind, LayerSpec
    from kvplan.plan import CapacityReport, SizeReport, capacity, list_models, size
    from kvplan.resolve import load_model
    from kvplan.resolve import resolve as resolve_model
    from kvplan.solver import FitReport, PickGReport, Scenario, fit, load_scenario, pick_g

__version__ = "0.1.0"

#: Public name -> the module that defines it. ``resolve_model`` is kvplan.resolve.resolve: the plain name would
#: collide with the submodule kvplan.resolve, which Python binds on the package when it is imported.
_RENAMED = {"resolve_model": "resolve"}
_EXPORTS = {
    "ExitCode": "kvplan.errors",
    "KvplanError": "kvplan.errors",
    "CacheEstimate": "kvplan.formula",
    "estimate": "kvplan.formula",
    "resolve_types": "kvplan.formula",
    "with_kv_heads": "kvplan.formula",
    "EngineOptions": "kvplan.engines",
    "CacheLayout": "kvplan.layout",
    "LayerKind": "kvplan.layout",
    "LayerSpec": "kvplan.layout",
    "CapacityReport": "kvplan.plan",
    "SizeReport": "kvplan.plan",
    "capacity": "kvplan.plan",
    "list_models": "kvplan.plan",
    "size": "kvplan.plan",
    "load_model": "kvplan.resolve",
    "resolve_model": "kvplan.resolve",
    "FitReport": "kvplan.solver",
    "PickGReport": "kvplan.solver",
    "Scenario": "kvplan.solver",
    "fit": "kvplan.solver",
    "load_scenario": "kvplan.solver",
    "pick_g": "kvplan.solver",
}

__all__ = [
    "CacheEstimate",
    "CacheLayout",
    "CapacityReport",
    "EngineOptions",
    "ExitCode",
    "FitReport",
    "KvplanError",
    "LayerKind",
    "LayerSpec",
    "PickGReport",
    "Scenario",
    "SizeReport",
    "__version__",
    "capacity",
    "estimate",
    "fit",
    "list_models",
    "load_model",
    "load_scenario",
    "pick_g",
    "resolve_model",
    "resolve_types",
    "size",
    "with_kv_heads",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'kvplan' has no attribute {name!r}")
    value = getattr(import_module(module), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

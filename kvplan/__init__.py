"""kvplan: exact KV-cache memory planning for LLM serving.

The Python API::

    import kvplan

    report = kvplan.size("meta-llama/Llama-2-70b", ctx=4096, batch=1)
    report.estimate.bytes_per_token      # 327680
    layout = kvplan.load_model("Qwen/Qwen3-8B")
    kvplan.estimate(layout, ctx=32768, batch=8).total_bytes
    kvplan.pick_g(gpu="a100-80g", ctx=65536, batch=32).single.recommended_g   # 1: the reference scenario
    kvplan.fit("meta-llama/Llama-2-70b", gpu="h100", ctx=32768).min_gpus[0].tp  # 2
"""

from kvplan.errors import ExitCode, KvplanError
from kvplan.formula import CacheEstimate, estimate, resolve_types, with_kv_heads
from kvplan.layout import CacheLayout, LayerKind, LayerSpec
from kvplan.plan import SizeReport, list_models, size
from kvplan.resolve import load_model, resolve
from kvplan.solver import FitReport, PickGReport, Scenario, fit, load_scenario, pick_g

__version__ = "0.1.0"

__all__ = [
    "CacheEstimate",
    "CacheLayout",
    "ExitCode",
    "FitReport",
    "KvplanError",
    "LayerKind",
    "LayerSpec",
    "PickGReport",
    "Scenario",
    "SizeReport",
    "__version__",
    "estimate",
    "fit",
    "list_models",
    "load_model",
    "load_scenario",
    "pick_g",
    "resolve",
    "resolve_types",
    "size",
    "with_kv_heads",
]

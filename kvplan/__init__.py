"""kvplan: exact KV-cache memory planning for LLM serving.

The Python API::

    import kvplan

    report = kvplan.size("meta-llama/Llama-2-70b", ctx=4096, batch=1)
    report.estimate.bytes_per_token      # 327680
    layout = kvplan.load_model("Qwen/Qwen3-8B")
    kvplan.estimate(layout, ctx=32768, batch=8).total_bytes
"""

from kvplan.errors import ExitCode, KvplanError
from kvplan.formula import CacheEstimate, estimate, resolve_types, with_kv_heads
from kvplan.layout import CacheLayout, LayerKind, LayerSpec
from kvplan.plan import SizeReport, list_models, size
from kvplan.resolve import load_model, resolve

__version__ = "0.1.0"

__all__ = [
    "CacheEstimate",
    "CacheLayout",
    "ExitCode",
    "KvplanError",
    "LayerKind",
    "LayerSpec",
    "SizeReport",
    "__version__",
    "estimate",
    "list_models",
    "load_model",
    "resolve",
    "resolve_types",
    "size",
    "with_kv_heads",
]

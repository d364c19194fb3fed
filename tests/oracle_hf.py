"""transformers as a test-only oracle: build a bundled config on the meta device (no memory), run one forward
pass with use_cache=True, and sum the nbytes of every tensor its cache holds; count the parameters too.

Each model is built once per test session; only small results (ints) are kept. Configs whose model_type the
installed transformers does not know (remote-code checkpoints such as chatglm, baichuan, internlm2,
nemotron-nas, RefinedWeb) are reported as unsupported: the tests skip them, naming the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "configs" / "models"
#: Attributes of transformers' cache layers that are bookkeeping, not cache storage.
BOOKKEEPING = {"_sliding_window_tensor", "cumulative_length"}


def bundled_ids() -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in MODELS.glob("*/*/config.json"))


def raw_config(model_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((MODELS / model_id / "config.json").read_text())
    return data


def windows(raw: dict[str, Any]) -> list[int]:
    text = raw.get("text_config") or raw
    found = [text.get(k) for k in ("sliding_window", "attention_chunk_size", "sliding_window_size")]
    return sorted({w for w in found if isinstance(w, int) and w < 20_000})


def points(model_id: str) -> list[tuple[int, int]]:
    """(seq, batch): short, and past every window the config has (not a multiple of anything)."""
    out = [(8, 1), (1037, 2)]
    for w in windows(raw_config(model_id)):
        out += [(w - 1, 1), (w + 37, 2)]
    return out


def translate(raw: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Configs of remote-code families that transformers can still build under another name, unchanged otherwise.

    - kimi_k2 -> deepseek_v3: transformers does this itself for Kimi text configs
      (models/kimi_k25/configuration_kimi_k25.py, Kimi_K25Config.__post_init__); architectures says
      DeepseekV3ForCausalLM.
    - RefinedWeb / RefinedWebModel -> falcon: the keys tiiuae's repos were later rewritten with (n_head ->
      num_attention_heads, n_layer -> num_hidden_layers, n_head_kv -> num_kv_heads); RefinedWeb is the new
      decoder architecture (falcon-40b's modelling_RW.py).
    """
    kind = raw.get("model_type")
    if kind == "kimi_k2":
        return {**raw, "model_type": "deepseek_v3"}, "kimi_k2 built as deepseek_v3"
    if kind in ("RefinedWeb", "RefinedWebModel"):
        renames = {"n_head": "num_attention_heads", "n_layer": "num_hidden_layers", "n_head_kv": "num_kv_heads"}
        out = {renames.get(k, k): v for k, v in raw.items()}
        out["model_type"] = "falcon"
        out["new_decoder_architecture"] = kind == "RefinedWeb"
        return out, f"{kind} built as falcon"
    return raw, ""


@dataclass(frozen=True)
class Reference:
    model_id: str
    supported: bool
    reason: str
    param_count: int = 0
    #: (seq, batch) -> total nbytes of every tensor the cache holds after the forward pass.
    cache_nbytes: tuple[tuple[tuple[int, int], int], ...] = ()


def layer_tensors(layer: object) -> list[Any]:
    import torch

    found = []
    for name, value in vars(layer).items():
        if name in BOOKKEEPING:
            continue
        items = (
            list(value.values()) if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
        )
        found += [v for v in items if isinstance(v, torch.Tensor)]
    return found


@cache
def reference(model_id: str, dtype_name: str = "bfloat16") -> Reference:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    raw, _ = translate(raw_config(model_id))
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        why = f"model_type {model_type!r} needs remote code (not in transformers {transformers.__version__})"
        return Reference(model_id, False, why)
    kwargs = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map", "quantization_config")}
    config = AutoConfig.for_model(model_type, **kwargs).get_text_config()
    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    params = sum(p.numel() for p in model.parameters())
    results = []
    with torch.no_grad():
        for seq, batch in points(model_id):
            ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
            cache_obj = model(input_ids=ids, use_cache=True).past_key_values
            total = sum(t.numel() * t.element_size() for layer in cache_obj.layers for t in layer_tensors(layer))
            results.append(((seq, batch), int(total)))
    del model
    return Reference(model_id, True, "", int(params), tuple(results))

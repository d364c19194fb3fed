"""transformers as a test-only oracle: build a config on the meta device (no memory), run one forward pass with
use_cache=True, and sum the nbytes of every public tensor its cache holds; count the parameters too.

"Every public tensor" is every torch.Tensor a cache layer keeps in a public attribute, directly or in a
list / tuple / dict: keys and values, conv and recurrent states, DeepSeek-V3.2's indexer_keys, DeepSeek-V4's
compressed_kv / buffer / overlap entries. A tensor held twice (DeepSeek-V4 keeps values = keys) counts once.

Configs whose model_type the installed transformers does not know (remote-code checkpoints such as chatglm,
baichuan, internlm2, nemotron-nas, RefinedWeb) are reported as unsupported: the tests skip them, naming the
reason. Multimodal wrappers are built as their text model (get_text_config); a text config no causal-LM class
claims is built with the class its architectures names.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "configs" / "models"
FIXTURES = Path(__file__).parent / "fixtures" / "configs"


def bundled_ids() -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in MODELS.glob("*/*/config.json"))


def raw_config(model_id: str) -> dict[str, Any]:
    folder = MODELS / model_id if (MODELS / model_id).is_dir() else FIXTURES / model_id
    data: dict[str, Any] = json.loads((folder / "config.json").read_text())
    return data


def windows(raw: dict[str, Any]) -> list[int]:
    text = raw.get("text_config") or raw
    found = [text.get(k) for k in ("sliding_window", "attention_chunk_size", "sliding_window_size")]
    return sorted({w for w in found if isinstance(w, int) and w < 20_000})


#: model_type of caches that hold a fixed state whatever the sequence length (Mamba-1): transformers' slow scan
#: steps through every token in Python even on the meta device (about 20 s for 1,037 tokens x 64 layers), and a
#: short sequence already shows the whole state.
STATE_ONLY = ("mamba", "falcon_mamba")


def points(raw: dict[str, Any]) -> list[tuple[int, int]]:
    """(seq, batch): short, and past every window the config has (not a multiple of anything)."""
    out = [(8, 1), (37, 2) if raw.get("model_type") in STATE_ONLY else (1037, 2)]
    for w in windows(raw):
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


def _tensors(value: object) -> Iterable[Any]:
    import torch

    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _tensors(item)


def layer_tensors(layer: object) -> list[Any]:
    """Every tensor a cache layer holds in a public attribute, each object once."""
    seen: dict[int, Any] = {}
    for name, value in vars(layer).items():
        if name.startswith("_"):
            continue
        for tensor in _tensors(value):
            seen.setdefault(id(tensor), tensor)
    return list(seen.values())


def cache_nbytes(cache_obj: Any) -> int:
    return sum(t.numel() * t.element_size() for layer in cache_obj.layers for t in layer_tensors(layer))


def build(raw: dict[str, Any], dtype_name: str) -> tuple[Any, str]:
    """The text model of ``raw`` on the meta device, or (None, why not)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    raw, _ = translate(raw)
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        return None, f"model_type {model_type!r} needs remote code (not in transformers {transformers.__version__})"
    kwargs = {k: v for k, v in raw.items() if k not in ("model_type", "auto_map", "quantization_config")}
    config = AutoConfig.for_model(model_type, **kwargs).get_text_config()
    dtype = getattr(torch, dtype_name)
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        except ValueError:
            # No causal-LM class for this text config (gemma4_text, mllama_text): the text causal LM its config
            # class is named after (Gemma4TextConfig -> Gemma4ForCausalLM), else the class architectures names.
            stem = type(config).__name__.removesuffix("Config").removesuffix("Text")
            names = [f"{stem}ForCausalLM", *(raw.get("architectures") or [])]
            cls = next((getattr(transformers, n) for n in names if hasattr(transformers, n)), None)
            if cls is None:
                return None, f"no causal-LM class for {model_type!r} and none in architectures {names}"
            model = cls._from_config(config, dtype=dtype)
    model.eval()
    return model, ""


def forward_cache(model: Any, seq: int, batch: int, extra: dict[str, Any] | None = None) -> int:
    """nbytes of the cache after one forward pass over ``batch`` x ``seq`` tokens."""
    import torch

    ids = torch.zeros((batch, seq), dtype=torch.long, device="meta")
    with torch.no_grad():
        out = model(input_ids=ids, use_cache=True, **(extra or {}))
    # Mamba-family models return their cache as cache_params.
    held = getattr(out, "past_key_values", None) or getattr(out, "cache_params", None)
    return cache_nbytes(held)


def reference_for(
    model_id: str, raw: dict[str, Any], at: Sequence[tuple[int, int]], dtype_name: str = "bfloat16"
) -> Reference:
    model, why = build(raw, dtype_name)
    if model is None:
        return Reference(model_id, False, why)
    params = sum(p.numel() for p in model.parameters())
    results = tuple(((seq, batch), forward_cache(model, seq, batch)) for seq, batch in at)
    del model
    return Reference(model_id, True, "", int(params), results)


def image_states(model: Any, images: int, tokens_per_image: int, batch: int) -> dict[str, Any]:
    """Cross-attention inputs standing for ``images`` images per sequence (Llama 3.2 Vision): what the
    multimodal projector hands the text model, [batch, images x tokens per image, hidden]."""
    import torch

    hidden = model.config.hidden_size
    states = torch.zeros((batch, images * tokens_per_image, hidden), dtype=model.dtype, device="meta")
    return {"cross_attention_states": states}


def param_count(raw: dict[str, Any]) -> int:
    """sum(p.numel()) of transformers' text model for ``raw``, built on the meta device (skips a config it cannot
    build, naming why). For a bundled model, :func:`reference` has the count of the model it already built."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, why = build(raw, "bfloat16")
    if model is None:
        pytest.skip(why)
    return int(sum(p.numel() for p in model.parameters()))


@cache
def reference(model_id: str, dtype_name: str = "bfloat16") -> Reference:
    raw = raw_config(model_id)
    return reference_for(model_id, raw, points(raw), dtype_name)

"""The longest context a model is built to serve, from its own config.

That is its ``max_position_embeddings`` (or the family's equivalent key, read by the config reader into
:attr:`~kvplan.layout.CacheLayout.max_context`), scaled where the config's RoPE scaling extends it. The rule is
vLLM's, which is what a server enforces: ``_get_and_verify_max_len`` in vllm/config/model.py (read at 0052a5b)
multiplies the length by ``rope_scaling.factor`` for every rope type but ``su``, ``longrope`` and ``llama3``
(their configs already state the extended length), starts a ``yarn`` model from
``original_max_position_embeddings``, and skips Gemma 3, whose 128K is already scaled. transformers states the
same relation for YaRN (``PreTrainedConfig._validate_yarn_rope_parameters`` in modeling_rope_utils.py warns when
``factor`` is not ``max_position_embeddings / original_max_position_embeddings``) but never caps a length.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

from kvplan.errors import ConfigError
from kvplan.families import is_gemma3
from kvplan.layout import CacheLayout, ContextLimit, LayerKind

#: Rope types whose configs already state the extended length in max_position_embeddings (vLLM: no factor).
SCALED_IN_CONFIG = frozenset({"su", "longrope", "llama3"})
#: transformers v5 nests rope_parameters per layer type (Gemma 3, MiMo); the keys are layer kinds.
LAYER_TYPE_KEYS = frozenset(kind.value for kind in LayerKind)

__all__ = ["ContextLimit", "beyond_limit_note", "context_limit", "read_rope_limit"]


def context_limit(layout: CacheLayout) -> ContextLimit | None:
    """The longest context ``layout``'s config allows, or None when it states no length."""
    if layout.max_context is None:
        return None
    return layout.rope_limit or ContextLimit(layout.max_context)


def read_rope_limit(
    model: str, config: Mapping[str, object], family: str, max_context: int | None
) -> ContextLimit | None:
    """The context a (text) config's RoPE scaling extends ``max_context`` to, or None where ``max_context`` stands
    as stated: the config reader records it once on the layout (:attr:`~kvplan.layout.CacheLayout.rope_limit`).
    A malformed factor or original length is a ConfigError."""
    if max_context is None:
        return None
    if is_gemma3(str(config.get("model_type", family))):
        return None  # vLLM: Gemma 3's max_position_embeddings is already scaled
    scaling = [(key, entry) for key, entry in _rope_parameters(config) if _rope_type(entry) not in SCALED_IN_CONFIG]
    if not scaling:
        return None
    start, start_key, factor = max_context, "max_position_embeddings", Fraction(1)
    for key, entry in scaling:  # vLLM assumes one factor for every layer type: the last one stated wins
        if "factor" in entry:
            factor = _factor(model, f"{key}.factor", entry["factor"])
        if _rope_type(entry) == "yarn":
            start, start_key = _yarn_start(model, config, max_context, key, entry)
    if int(start * factor) == max_context:
        return None  # the scaling agrees with max_position_embeddings (gpt-oss, DeepSeek-V3): nothing to add
    kind = _rope_type(scaling[-1][1])
    return ContextLimit(int(start * factor), f"{kind} RoPE scaling: {start_key} {start:,} x factor {_show(factor)}")


def _rope_type(entry: Mapping[str, object]) -> str:
    # Older configs spell it "type" (DeepSeek-V3, Kimi-K2); transformers' standardize_rope_params copies it.
    return str(entry.get("rope_type", entry.get("type", "default")))


def _yarn_start(
    model: str, config: Mapping[str, object], max_context: int, key: str, entry: Mapping[str, object]
) -> tuple[int, str]:
    """YaRN extends the pretraining length: original_max_position_embeddings, from the rope parameters, else the
    config's top level (Phi-3 keeps it there), else max_position_embeddings (transformers standardize_rope_params)."""
    if "original_max_position_embeddings" in entry:
        where, value = f"{key}.original_max_position_embeddings", entry["original_max_position_embeddings"]
    elif "original_max_position_embeddings" in config:
        where, value = "original_max_position_embeddings", config["original_max_position_embeddings"]
    else:
        return max_context, "max_position_embeddings"
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(model, "RoPE original context", (where,), f"{value!r} is not a positive whole number")
    return value, "original_max_position_embeddings"


def _rope_parameters(raw: Mapping[str, object]) -> list[tuple[str, Mapping[str, object]]]:
    """The rope parameter dicts of a config (transformers v5 ``rope_parameters``, older ``rope_scaling``), one
    per layer type where they are nested by layer type."""
    for key in ("rope_parameters", "rope_scaling"):
        value = raw.get(key)
        if not isinstance(value, Mapping) or not value:
            continue
        if set(value) <= LAYER_TYPE_KEYS:
            return [(f"{key}.{name}", v) for name, v in value.items() if isinstance(v, Mapping)]
        return [(key, value)]
    return []


def _factor(model: str, key: str, value: object) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(model, "RoPE scaling factor", (key,), f"{value!r} is not a positive number")
    return Fraction(str(value)) if isinstance(value, float) else Fraction(value)


def _show(factor: Fraction) -> str:
    return str(factor.numerator) if factor.denominator == 1 else str(float(factor))


def beyond_limit_note(limit: ContextLimit | None, ctx: int) -> str:
    """A note when ``ctx`` passes the model's context limit (planned anyway: the bytes are still exact)."""
    if limit is None or ctx <= limit.tokens:
        return ""
    return (
        f"ctx {ctx:,} is beyond the model's {limit.describe()}: the bytes are exact, but the model was not built "
        "for that context"
    )

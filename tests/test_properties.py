"""Hypothesis: the reader never raises anything but kvplan's own errors; totals are monotone."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.errors import KvplanError
from kvplan.formula import estimate
from kvplan.layout import CacheLayout
from kvplan.readers.config import HEAD_KEYS, HIDDEN_KEYS, KV_HEAD_KEYS, LAYER_KEYS, read_config

KEYS = [
    *LAYER_KEYS,
    *HEAD_KEYS,
    *HIDDEN_KEYS,
    *KV_HEAD_KEYS,
    "head_dim",
    "model_type",
    "text_config",
    "layer_types",
    "sliding_window",
    "kv_lora_rank",
    "qk_rope_head_dim",
    "hybrid_override_pattern",
    "block_configs",
    "multi_query",
    "torch_dtype",
    "max_position_embeddings",
    "num_kv_shared_layers",
    "full_attention_interval",
    "attention_chunk_size",
    "use_sliding_window",
    "max_window_layers",
    "linear_num_value_heads",
    "attn_config",
]

json_scalars = st.none() | st.booleans() | st.integers(-3, 70) | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=20,
)
configs = st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=10), json_values, max_size=14)


@settings(max_examples=400, deadline=None)
@given(configs)
def test_reader_raises_only_kvplan_errors(raw: dict[str, Any]) -> None:
    try:
        layout = read_config(raw, "fuzz")
    except KvplanError:
        return
    estimate(layout, 7, 2)  # whatever it read must cost out


plausible = st.fixed_dictionaries(
    {
        "model_type": st.sampled_from(["llama", "mistral", "qwen3", "gemma2", "gpt2"]),
        "num_hidden_layers": st.integers(1, 6),
        "num_attention_heads": st.sampled_from([1, 2, 4, 8]),
        "num_key_value_heads": st.sampled_from([1, 2, 4, 8]),
        "hidden_size": st.sampled_from([64, 128, 256]),
    },
    optional={"sliding_window": st.integers(1, 64), "head_dim": st.sampled_from([16, 32])},
)


@settings(max_examples=300, deadline=None)
@given(plausible, st.integers(1, 200), st.integers(1, 200), st.integers(1, 8), st.integers(1, 8))
def test_totals_never_shrink_when_ctx_or_batch_grow(
    raw: dict[str, Any], ctx: int, more: int, batch: int, extra: int
) -> None:
    try:
        layout: CacheLayout = read_config(raw, "plausible")
    except KvplanError:
        return
    base = estimate(layout, ctx, batch).total_bytes
    assert estimate(layout, ctx + more, batch).total_bytes >= base
    assert estimate(layout, ctx, batch + extra).total_bytes >= base

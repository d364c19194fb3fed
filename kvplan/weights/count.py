"""Entry point: pick the family rule for a config and count its parameters."""

from __future__ import annotations

from collections.abc import Callable

from kvplan.families import PURE_SSM_FAMILIES
from kvplan.formula import with_kv_heads
from kvplan.layout import LayerKind
from kvplan.readers.config import Fields, KeyLedger, unread_key_warnings
from kvplan.readers.model import ReadModel
from kvplan.weights.decoder import dense_decoder
from kvplan.weights.defaults import WEIGHT_DEFAULTS
from kvplan.weights.families import gemma3n, meta_params, mla_decoder, nemotron_h, nemotron_nas, pure_ssm
from kvplan.weights.result import ParamCount
from kvplan.weights.tensors import _Config, _Counted


def _rule_for(c: _Config) -> Callable[[_Config], _Counted]:
    """The first family rule that claims the config."""
    if c.family == "meta_params":
        return meta_params
    if isinstance(c.f.get("block_configs"), list):
        return nemotron_nas
    if any(layer.kind is LayerKind.MLA for layer in c.layout.layers):
        return mla_decoder
    if c.family == "nemotron_h":
        return nemotron_h
    if c.family in PURE_SSM_FAMILIES:
        return pure_ssm
    if c.family == "gemma3n_text":
        return gemma3n
    return dense_decoder


#: Experts each token is routed to: MixtralConfig / Qwen*MoeConfig / DeepseekV3Config / Llama4TextConfig /
#: GptOssConfig num_experts_per_tok; Hunyuan moe_topk; GptOssConfig also spells it experts_per_token.
TOP_K_KEYS = ("num_experts_per_tok", "moe_topk", "experts_per_token", "num_experts_per_token")


def count_parameters(read: ReadModel, kv_heads: int | None = None) -> ParamCount:
    """The model's parameter count from its config (``read.config``), tensor by tensor.

    ``kv_heads`` is the GQA what-if: every attention layer's K and V projections (and their biases, and
    OLMo's k_norm) are sized for that many KV heads instead of the config's. It must divide the query heads;
    MLA and attention-free models have no KV heads to change (:class:`~kvplan.errors.OptionError`).
    """
    layout, config = read.layout, read.config
    if kv_heads is not None:
        layout = with_kv_heads(layout, kv_heads)
    defaults = WEIGHT_DEFAULTS.get(layout.family, {})
    # The reader's ledger carries on: a key either the cache rules or the weight rules read is accounted for.
    ledger = KeyLedger(set(config.read_keys))
    c = _Config(layout, Fields(layout.model, config.keys, defaults, ledger))
    counted = _rule_for(c)(c)
    unread = unread_key_warnings(layout.model, layout.family, config.keys, ledger.read, "weights")
    # As the config states it (not recorded as read: the forward shape's activation estimate only)
    top_k = next((config.keys[k] for k in TOP_K_KEYS if type(config.keys.get(k)) is int), None)
    notes = list(counted.notes)
    if any(rule.startswith("text config from") for rule in layout.rules):
        notes.append("text decoder only: the vision tower and projector are not counted (they hold no KV cache)")
    if counted.mtp:
        notes.append(f"multi-token-prediction layers ({counted.mtp:,} parameters) not in the total")
    return ParamCount(
        model=layout.model,
        family=layout.family,
        rule=counted.rule,
        tensors=counted.tensors,
        exact=counted.exact,
        tied_embeddings=counted.tied,
        kv_heads=kv_heads,
        mtp=counted.mtp,
        notes=tuple(notes),
        warnings=unread,
        experts_per_token=top_k,
    )

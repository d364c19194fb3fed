"""The widths of a model's forward pass, from the tensors its weights were counted from.

Engines size their activation peak by these (kvplan.engines.overhead.ForwardShape): the hidden size, the
vocabulary the logits span, the widest dense feed-forward, and a routed expert's width with the experts each
token visits. They come from the same tensors :func:`~kvplan.weights.count_parameters` builds, so a family rule
that changes a width changes the activation estimate with it.
"""

from __future__ import annotations

from kvplan.engines.overhead import ForwardShape
from kvplan.layout import CacheLayout
from kvplan.weights.result import Part
from kvplan.weights.storage import Scheme, WeightEstimate

#: num_experts_per_tok where a config omits it: the config class's default (transformers 5.23
#: configuration_<family>.py: Llama4TextConfig 1, MixtralConfig 2, Qwen2MoeConfig 4, Qwen3MoeConfig 8,
#: DeepseekV3Config 8, GptOssConfig 4, Qwen3NextConfig 10). DeepseekV2Config has no default (None).
TOP_K_DEFAULTS = {
    "llama4_text": 1,
    "mixtral": 2,
    "qwen2_moe": 4,
    "qwen3_moe": 8,
    "deepseek_v3": 8,
    "gpt_oss": 4,
    "qwen3_next": 10,
}


def _widest(estimate: WeightEstimate, names: tuple[str, ...]) -> int:
    return max((t.shape[0] for t in estimate.params.tensors if t.name in names), default=0)


def forward_shape(layout: CacheLayout, estimate: WeightEstimate) -> ForwardShape:
    """The forward shape of ``layout`` served with the weights ``estimate`` prices (its dtype sets the width of
    an activation: float32 weights run float32 activations, everything else 16-bit ones)."""
    vocab = _widest(estimate, ("embed_tokens.weight",))
    expert = _widest(estimate, ("experts.up_proj.weight",))
    top_k = 0
    if expert:
        # 0 when neither the config nor its class says: an engine whose activation peak needs it refuses then
        found = estimate.params.experts_per_token  # the config's own (weights.count.TOP_K_KEYS)
        top_k = found if isinstance(found, int) and found > 0 else TOP_K_DEFAULTS.get(layout.family, 0)
    mxfp4 = estimate.scheme is Scheme.MXFP4 and any(t.part is Part.MOE for t in estimate.params.tensors)
    return ForwardShape(
        hidden=layout.hidden_size,
        vocab=vocab,
        intermediate=_widest(estimate, ("mlp.up_proj.weight", "shared_expert.up_proj.weight")),
        layers=layout.num_layers,
        expert_intermediate=expert,
        experts_per_token=top_k,
        expert_format="mxfp4" if mxfp4 else "",
        activation_bytes=4 if estimate.base_bytes == 4 else 2,
    )

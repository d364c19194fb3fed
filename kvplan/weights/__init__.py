"""Parameter count and weight bytes from a config, tensor by tensor.

:func:`count_parameters` rebuilds every weight tensor a model holds from its config (the decoder as the
family's modeling code builds it: embeddings, attention projections, MLP or MoE experts, norms, LM head)
and sums them with Python ints. Each family is a named rule below that says which transformers modeling
file (or, for remote-code models, which published modeling file) it follows; where a config omits a value
the family's transformers config class supplies, the default is cited. A count is ``exact`` when the rule
follows the family's architecture tensor for tensor, and an estimate otherwise (with a note saying why).

:func:`weight_bytes` prices those tensors: an explicit storage type, else the checkpoint's
``quantization_config`` (fp8 block scales, AWQ / GPTQ groups, MXFP4), else the 16-bit serving dtype.
Quantized formats convert only the decoder's weight matrices; embeddings, the LM head, norms, biases, MoE
routers and other small tensors stay 16-bit, as the checkpoints store them.

Only the text decoder is counted: a multimodal model's vision tower and projector hold no KV cache.
"""

from __future__ import annotations

from kvplan.weights.count import TOP_K_KEYS, count_parameters
from kvplan.weights.decoder import DECODER_FAMILIES, PLAIN_MLP_ACTIVATIONS, DecoderSpec, QkNorm, dense_decoder
from kvplan.weights.defaults import TIED_BY_DEFAULT, VOCAB_KEYS, WEIGHT_DEFAULTS
from kvplan.weights.families import gemma3n, meta_params, mla_decoder, nemotron_h, nemotron_nas, pure_ssm
from kvplan.weights.ffn import EXPERT_KEYS, Ffn, Moe
from kvplan.weights.result import ParamCount, Part, Role, WeightTensor
from kvplan.weights.shape import forward_shape
from kvplan.weights.storage import (
    EXPLICIT_FORMATS,
    WEIGHT_DTYPE_ALIASES,
    WEIGHT_DTYPE_OPTION,
    Scheme,
    WeightEstimate,
    WeightFormat,
    config_format,
    weight_bytes,
    weight_format,
)

__all__ = [
    "DECODER_FAMILIES",
    "EXPERT_KEYS",
    "EXPLICIT_FORMATS",
    "PLAIN_MLP_ACTIVATIONS",
    "TIED_BY_DEFAULT",
    "TOP_K_KEYS",
    "VOCAB_KEYS",
    "WEIGHT_DEFAULTS",
    "WEIGHT_DTYPE_ALIASES",
    "WEIGHT_DTYPE_OPTION",
    "DecoderSpec",
    "Ffn",
    "Moe",
    "ParamCount",
    "Part",
    "QkNorm",
    "Role",
    "Scheme",
    "WeightEstimate",
    "WeightFormat",
    "WeightTensor",
    "config_format",
    "count_parameters",
    "dense_decoder",
    "forward_shape",
    "gemma3n",
    "meta_params",
    "mla_decoder",
    "nemotron_h",
    "nemotron_nas",
    "pure_ssm",
    "weight_bytes",
    "weight_format",
]

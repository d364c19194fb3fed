"""What an engine's memory before the KV cache depends on: the widths of the model's forward pass.

Engines hold memory back besides the weights: the activation peak of a profiling forward pass, memory outside
the PyTorch allocator, CUDA graphs. How much, and which terms, is each engine's own rule (in its module); this
module only carries the model facts those rules read, so every engine states its terms from the same inputs.
The weights module builds a :class:`ForwardShape` from the same tensors it counts the weights from.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvplan.errors import OptionError, Param, spell

MiB = 2**20
GiB = 2**30


@dataclass(frozen=True)
class ForwardShape:
    """The widths a forward pass allocates activations by, for the whole model (before tensor parallelism)."""

    hidden: int
    vocab: int
    #: The widest dense feed-forward (MLP or shared expert) intermediate width; 0 when there is none.
    intermediate: int
    #: Decoder layers (main layers, not multi-token-prediction ones).
    layers: int
    #: A routed expert's intermediate width and the experts each token is routed to (0 for dense models).
    expert_intermediate: int = 0
    experts_per_token: int = 0
    #: The routed experts' storage when the checkpoint quantizes them ("mxfp4" for gpt-oss), else "".
    expert_format: str = ""
    #: Bytes per activation value: 2 for 16-bit serving, 4 when the model is served in float32.
    activation_bytes: int = 2


def check_experts_per_token(shape: ForwardShape) -> None:
    """An activation rule with fused-MoE buffers needs the experts each token visits: refuse without it."""
    if shape.expert_intermediate and shape.experts_per_token <= 0:
        raise OptionError(
            Param.RESERVE_BYTES,
            "the config states no experts per token (num_experts_per_tok) and its family has no default: the "
            f"engine's MoE activation peak needs it; pass {spell(Param.RESERVE_BYTES)} with the figure the engine logs",
        )

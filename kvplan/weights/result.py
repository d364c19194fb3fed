"""The result: weight tensors by part and role, and the parameter count."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from math import prod

from kvplan.layout import ConfigWarning


class Part(StrEnum):
    """Where a tensor sits in the model, for the breakdown."""

    EMBEDDING = "embedding"  # token (and learned position) embeddings
    ATTENTION = "attention"  # q/k/v/o projections and their biases, MLA projections, sinks
    MLP = "mlp"  # dense feed-forward blocks
    MOE = "moe"  # routed experts, shared experts, routers
    NORMS = "norms"  # RMSNorm / LayerNorm weights (and LayerNorm biases), q/k norms
    LM_HEAD = "lm_head"  # the output projection (absent when tied to the embedding)
    OTHER = "other"  # SSM / linear-attention mixers (Mamba, Gated DeltaNet)


class Role(StrEnum):
    """How a tensor is stored by quantized checkpoints and split by tensor parallelism."""

    MATRIX = "matrix"  # a decoder Linear weight (out x in): what weight quantization converts
    EXPERT = "expert"  # a routed expert's weight matrix (gpt-oss's MXFP4 converts only these)
    ROUTER = "router"  # small gating projections (MoE routers, shared-expert gates, V3.2 indexer weights)
    TABLE = "table"  # token / position embeddings and the LM head: kept 16-bit by quantized checkpoints
    VECTOR = "vector"  # biases, norm weights, sinks, SSM A/D/dt, conv kernels: never quantized


@dataclass(frozen=True)
class WeightTensor:
    """One kind of weight tensor and how many the model holds (layers x experts)."""

    part: Part
    role: Role
    name: str
    #: (out features, in features) for matrices, as the checkpoint stores them.
    shape: tuple[int, ...]
    count: int = 1
    #: Non-zero for K/V projection tensors: the KV heads of their layer. Tensor parallelism cannot split
    #: them over more ranks than heads (each rank keeps a whole head), so they replicate when TP > G.
    kv_heads: int = 0

    @property
    def params(self) -> int:
        return self.count * prod(self.shape)


@dataclass(frozen=True)
class ParamCount:
    """A model's parameter count from its config, with the tensors it is made of."""

    model: str
    family: str
    #: The family rule that produced the count.
    rule: str
    tensors: tuple[WeightTensor, ...]
    #: True when the rule follows this family's architecture exactly; False for an estimate.
    exact: bool
    tied_embeddings: bool
    #: The KV heads of a GQA what-if (None: the config's own).
    kv_heads: int | None = None
    #: Multi-token-prediction weights (DeepSeek, Qwen3.5): loaded only for speculative decoding, so they
    #: are not in :attr:`total`.
    mtp: int = 0
    notes: tuple[str, ...] = ()
    #: Keys that can shape the weights and no rule (cache or weights) read: the count may be wrong.
    warnings: tuple[ConfigWarning, ...] = ()
    #: Experts each token is routed to, as the config states it (None: it does not; kvplan.weights.shape).
    experts_per_token: int | None = None

    def part(self, part: Part) -> int:
        return sum(t.params for t in self.tensors if t.part is part)

    @property
    def total(self) -> int:
        return sum(t.params for t in self.tensors)

    @property
    def embedding(self) -> int:
        return self.part(Part.EMBEDDING)

    @property
    def attention(self) -> int:
        return self.part(Part.ATTENTION)

    @property
    def mlp(self) -> int:
        return self.part(Part.MLP)

    @property
    def moe(self) -> int:
        return self.part(Part.MOE)

    @property
    def norms(self) -> int:
        return self.part(Part.NORMS)

    @property
    def lm_head(self) -> int:
        return self.part(Part.LM_HEAD)

    @property
    def other(self) -> int:
        return self.part(Part.OTHER)

    def breakdown(self) -> tuple[tuple[Part, int], ...]:
        """Parameters per part, in a stable order (parts the model lacks included as 0)."""
        return tuple((p, self.part(p)) for p in Part)

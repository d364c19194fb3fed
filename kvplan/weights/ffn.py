"""Feed-forward: dense MLP or mixture of experts."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from kvplan.weights.result import Part, Role
from kvplan.weights.tensors import _Config, _Tensors


@dataclass(frozen=True)
class Moe:
    """One MoE block: routed experts, optional shared expert(s), the router."""

    experts: int
    intermediate: int
    gated: bool = True
    expert_bias: bool = False
    router_bias: bool = False
    #: Total intermediate width of the shared expert(s), 0 for none (DeepSeek: n_shared x moe width).
    shared: int = 0
    #: A sigmoid gate (1 x hidden) on the shared expert (Qwen2-MoE, Qwen3-Next, Qwen3.5-MoE).
    shared_gate: bool = False
    #: Nemotron-H: experts work in a latent of this width, with projections in and out.
    latent: int = 0
    latent_bias: bool = False


#: One layer's feed-forward: a dense MLP's intermediate width, a MoE block, or None (no FFN).
Ffn = int | Moe | None


EXPERT_KEYS = ("num_local_experts", "n_routed_experts", "num_experts")


def _mlp(t: _Tensors, part: Part, name: str, hidden: int, inter: int, *, gated: bool, bias: bool, role: Role) -> None:
    if gated:
        t.linear(part, f"{name}.gate_proj", inter, hidden, bias=bias, role=role)
    t.linear(part, f"{name}.up_proj", inter, hidden, bias=bias, role=role)
    t.linear(part, f"{name}.down_proj", hidden, inter, bias=bias, role=role)


def _moe(t: _Tensors, hidden: int, moe: Moe) -> None:
    e = moe.experts
    width = moe.latent or hidden
    if moe.gated:
        t.linear(
            Part.MOE, "experts.gate_proj", moe.intermediate, width, bias=moe.expert_bias, count=e, role=Role.EXPERT
        )
    t.linear(Part.MOE, "experts.up_proj", moe.intermediate, width, bias=moe.expert_bias, count=e, role=Role.EXPERT)
    t.linear(Part.MOE, "experts.down_proj", width, moe.intermediate, bias=moe.expert_bias, count=e, role=Role.EXPERT)
    t.linear(Part.MOE, "router", e, hidden, bias=moe.router_bias, role=Role.ROUTER)
    if moe.shared:
        _mlp(t, Part.MOE, "shared_expert", hidden, moe.shared, gated=moe.gated, bias=False, role=Role.MATRIX)
    if moe.shared_gate:
        t.linear(Part.MOE, "shared_expert_gate", 1, hidden, role=Role.ROUTER)
    if moe.latent:
        t.linear(Part.MOE, "fc1_latent_proj", moe.latent, hidden, bias=moe.latent_bias)
        t.linear(Part.MOE, "fc2_latent_proj", hidden, moe.latent, bias=moe.latent_bias)


def _ffn(t: _Tensors, hidden: int, ffn: Ffn, *, gated: bool, bias: bool) -> None:
    if isinstance(ffn, Moe):
        _moe(t, hidden, ffn)
    elif ffn:
        _mlp(t, Part.MLP, "mlp", hidden, ffn, gated=gated, bias=bias, role=Role.MATRIX)


def _moe_flags(c: _Config, layers: int) -> list[bool]:
    """Which layers are MoE, by the first rule whose keys the config has."""
    f = c.f
    # Rule mlp_layer_types: MiMoV2FlashConfig spells it "dense" / "sparse" per layer.
    types = f.sequence("mlp layer types", "mlp_layer_types", layers)
    if types is not None:
        return [t == "sparse" for t in types]
    # Rule moe_layer_freq_list: MiMo-V2-Flash lists moe_layer_freq per layer (0 dense, 1 MoE).
    freq = f.get("moe_layer_freq")
    if isinstance(freq, list):
        listed = f.sequence("moe_layer_freq", "moe_layer_freq", layers) or []
        return [bool(v) for v in listed]
    # Rule llama4_moe_layers: Llama4TextConfig.moe_layers, else every interleave_moe_layer_step-th layer
    # (layers step-1, 2*step-1, ...: Maverick alternates dense and MoE, Scout is all MoE).
    moe_layers = f.sequence("moe_layers", "moe_layers")
    if moe_layers is not None:
        moe = _members(moe_layers)
        return [i in moe for i in range(layers)]
    step = c.optional(("interleave_moe_layer_step",))
    if step is not None:
        return [(i + 1) % step == 0 for i in range(layers)]
    # Rule jamba_expert_period: JambaConfig puts experts where i % expert_layer_period == offset.
    period = c.optional(("expert_layer_period",))
    if period is not None:
        offset = c.optional(("expert_layer_offset",), minimum=0) or 0
        return [i % period == offset for i in range(layers)]
    # Rule deepseek_first_k_dense: DeepSeek-V2/V3, Kimi-K2: the first first_k_dense_replace layers are
    # dense, then every moe_layer_freq-th layer is MoE (DeepSeek's modeling_deepseek.py).
    first_k = c.optional(("first_k_dense_replace",), minimum=0)
    if first_k is not None:
        every = c.optional(("moe_layer_freq",)) or 1
        return [i >= first_k and i % every == 0 for i in range(layers)]
    # Rule qwen_sparse_step: Qwen2-MoE / Qwen3-MoE / Qwen3-Next: MoE unless the layer is in mlp_only_layers,
    # on every decoder_sparse_step-th layer ((i + 1) % step == 0).
    sparse_step = c.optional(("decoder_sparse_step",))
    dense_only = _members(f.sequence("mlp_only_layers", "mlp_only_layers") or [])
    if sparse_step is not None or dense_only:
        step = sparse_step or 1
        return [i not in dense_only and (i + 1) % step == 0 for i in range(layers)]
    return [True] * layers


def _members(values: list[Any]) -> set[Any]:
    """A config's list of layer indices as a set (``i in`` a list of a million entries, once per layer, would
    not finish); unhashable entries cannot equal an index, so dropping them keeps the answer."""
    return {v for v in values if isinstance(v, Hashable)}


def _moe_block(c: _Config, experts: int) -> Moe:
    """The MoE block of a family: expert width, shared experts, biases."""
    f = c.f
    family = c.family
    inter = c.optional(("moe_intermediate_size",)) or c.integer("expert width", ("intermediate_size",))
    shared = 0
    n_shared = c.optional(("n_shared_experts",), minimum=0)
    if n_shared:
        # DeepSeek: the shared experts are one MLP n_shared_experts x moe_intermediate_size wide.
        shared = n_shared * inter
    shared = c.optional(("shared_expert_intermediate_size", "moe_shared_expert_intermediate_size")) or shared
    if family == "llama4_text":
        # Llama4TextMoe: one shared expert as wide as the routed ones (intermediate_size).
        shared = inter
    # gpt-oss: GptOssExperts has gate_up / down biases and GptOssTopKRouter a bias.
    biased = family == "gpt_oss"
    return Moe(
        experts=experts,
        intermediate=inter,
        gated=family != "nemotron_h",
        expert_bias=biased,
        router_bias=biased,
        shared=shared,
        shared_gate=bool(shared) and family in ("qwen2_moe", "qwen3_next", "qwen3_5_moe_text"),
        latent=c.optional(("moe_latent_size",)) or 0,
        latent_bias=f.flag("mlp_bias"),
    )


def _ffn_plan(c: _Config, dense: int, layers: int) -> list[Ffn]:
    """Each layer's feed-forward: MoE where the family's rule says so, else a dense MLP of width ``dense``."""
    # A routed-expert count of 0 (or null, or no key) is a dense model; anything but a whole number is an
    # error ("256" must not make DeepSeek-V3 dense).
    experts = c.optional(EXPERT_KEYS, minimum=0) or 0
    if not experts:
        return [dense] * layers
    block = _moe_block(c, experts)
    return [block if moe else dense for moe in _moe_flags(c, layers)]

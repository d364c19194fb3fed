"""State mixers of hybrid models (Part.OTHER)."""

from __future__ import annotations

from kvplan.weights.result import Part
from kvplan.weights.tensors import _cdiv, _Config, _Tensors


def _state_mixer(t: _Tensors, c: _Config) -> bool:
    """The linear-attention / SSM mixer of one state layer; False when the family is not modelled."""
    if c.family in ("qwen3_next", "qwen3_5_text", "qwen3_5_moe_text"):
        _gated_delta_net(t, c)
    elif c.family == "jamba":
        _mamba1(t, c, jamba=True)
    else:
        return False
    return True


def _gated_delta_net(t: _Tensors, c: _Config) -> None:
    # Qwen3NextGatedDeltaNet / Qwen3_5GatedDeltaNet: in-projections for q, k, v, z (the output gate) and
    # the per-value-head b and a; a depthwise conv over q, k, v without bias; dt_bias and A_log per value
    # head; a gated RMSNorm over the value head dim; out_proj.
    kh = c.integer("linear_num_key_heads", ("linear_num_key_heads",))
    vh = c.integer("linear_num_value_heads", ("linear_num_value_heads",))
    kd = c.integer("linear_key_head_dim", ("linear_key_head_dim",))
    vd = c.integer("linear_value_head_dim", ("linear_value_head_dim",))
    kernel = c.integer("linear_conv_kernel_dim", ("linear_conv_kernel_dim",))
    h = c.hidden
    key, value = kh * kd, vh * vd
    t.linear(Part.OTHER, "linear_attn.in_proj_qkv", 2 * key + value, h)
    t.linear(Part.OTHER, "linear_attn.in_proj_z", value, h)
    t.linear(Part.OTHER, "linear_attn.in_proj_ba", 2 * vh, h)
    t.vector(Part.OTHER, "linear_attn.conv1d.weight", (2 * key + value, 1, kernel))
    t.vector(Part.OTHER, "linear_attn.dt_bias", (vh,))
    t.vector(Part.OTHER, "linear_attn.A_log", (vh,))
    t.norm("linear_attn.norm", vd)
    t.linear(Part.OTHER, "linear_attn.out_proj", h, value)


def _mamba1(t: _Tensors, c: _Config, *, jamba: bool = False) -> None:
    # MambaMixer / FalconMambaMixer / JambaMambaMixer: in_proj (x and z), a depthwise conv, x_proj to
    # dt_rank + 2 x d_state, dt_proj (with bias), A_log (d_inner x d_state), D, out_proj. Jamba adds RMSNorms
    # over dt, B and C. dt_rank "auto" = ceil(hidden / 16).
    h = c.hidden
    if jamba:
        state = c.integer("mamba_d_state", ("mamba_d_state",))
        kernel = c.integer("mamba_d_conv", ("mamba_d_conv",))
        inner = c.integer("mamba_expand", ("mamba_expand",)) * h
        rank_key, conv_key, bias_key = "mamba_dt_rank", "mamba_conv_bias", "mamba_proj_bias"
    else:
        state = c.integer("state_size", ("state_size", "d_state"))
        kernel = c.integer("conv_kernel", ("conv_kernel", "d_conv"))
        inner = c.optional(("intermediate_size",)) or c.integer("expand", ("expand",)) * h
        rank_key, conv_key, bias_key = "time_step_rank", "use_conv_bias", "use_bias"
    # MambaConfig: time_step_rank "auto" (the default) = ceil(hidden / 16); else a whole number.
    rank = _cdiv(h, 16) if c.f.get(rank_key, "auto") == "auto" else c.integer(rank_key, (rank_key,))
    bias = c.flag(bias_key)
    t.linear(Part.OTHER, "mixer.in_proj", 2 * inner, h, bias=bias)
    t.vector(Part.OTHER, "mixer.conv1d.weight", (inner, 1, kernel))
    if c.flag(conv_key, True):
        t.vector(Part.OTHER, "mixer.conv1d.bias", (inner,))
    t.linear(Part.OTHER, "mixer.x_proj", rank + 2 * state, inner)
    t.linear(Part.OTHER, "mixer.dt_proj", inner, rank, bias=True)
    t.vector(Part.OTHER, "mixer.A_log", (inner, state))
    t.vector(Part.OTHER, "mixer.D", (inner,))
    t.linear(Part.OTHER, "mixer.out_proj", h, inner, bias=bias)
    if jamba:
        t.norm("mixer.dt_layernorm", rank)
        t.norm("mixer.b_layernorm", state)
        t.norm("mixer.c_layernorm", state)


def _mamba2(t: _Tensors, c: _Config, *, heads: int, head_dim: int) -> None:
    # Mamba2Mixer / NemotronHMamba2Mixer: in_proj to x, z, B, C and dt (2 x d_inner + 2 x groups x state
    # + heads), a depthwise conv over x, B, C, dt_bias / A_log / D per head, a gated RMSNorm over d_inner,
    # out_proj.
    h = c.hidden
    inner = heads * head_dim
    groups = c.integer("n_groups", ("n_groups",))
    state = c.integer("ssm_state_size", ("ssm_state_size", "state_size"))
    kernel = c.integer("conv_kernel", ("conv_kernel",))
    conv = inner + 2 * groups * state
    bias = c.flag("use_bias")
    t.linear(Part.OTHER, "mixer.in_proj", inner + conv + heads, h, bias=bias)
    t.vector(Part.OTHER, "mixer.conv1d.weight", (conv, 1, kernel))
    if c.flag("use_conv_bias", True):
        t.vector(Part.OTHER, "mixer.conv1d.bias", (conv,))
    for name in ("dt_bias", "A_log", "D"):
        t.vector(Part.OTHER, f"mixer.{name}", (heads,))
    t.norm("mixer.norm", inner)
    t.linear(Part.OTHER, "mixer.out_proj", h, inner, bias=bias)

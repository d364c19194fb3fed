"""Weight bytes of a GGUF model, exact from its tensor infos.

A GGUF lists every tensor with its ggml type and shape, so its weight bytes are the sum of ``ggml_nbytes`` over
the tensors (the block sizes and scales of :data:`kvplan.readers.gguf.GGML_TYPES`): quantization mixes (Q4_K_M
keeps some tensors in Q6_K, norms in F32 ...) are priced tensor by tensor, nothing is estimated. Tensors are
sorted into the parts of :class:`~kvplan.weights.Part` by their llama.cpp names (src/llama-arch.cpp
LLM_TENSOR_NAMES: ``token_embd``, ``blk.N.attn_k``, ``blk.N.ffn_up_exps`` ...), so tensor-parallel splits and
the breakdown work as for a config. A GQA what-if (``kv_heads``) shrinks the K/V projections row for row.
"""

from __future__ import annotations

import re
from dataclasses import replace

from kvplan.errors import OptionError, Param
from kvplan.formula import with_kv_heads
from kvplan.layout import CacheLayout, FileTensor, LayerSpec
from kvplan.weights.result import ParamCount, Part, Role, WeightTensor
from kvplan.weights.storage import WeightEstimate, weight_format

_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")
#: Per-layer K/V projections whose rows are KV heads x head dim (weights and biases).
_KV_TENSORS = ("attn_k.", "attn_v.")
_QKV_TENSOR = "attn_qkv."


def classify(name: str, ndim: int) -> tuple[Part, Role]:
    """Where a llama.cpp tensor sits in the model, and how it is stored."""
    match = _BLOCK.match(name)
    local = match.group(2) if match else name
    matrix = ndim >= 2
    if not match:
        if local.startswith(("token_embd.", "pos_embd.", "token_types.")):
            return Part.EMBEDDING, Role.TABLE
        if local.startswith("output."):
            return Part.LM_HEAD, Role.TABLE
        if "norm" in local:
            return Part.NORMS, Role.VECTOR
        return Part.OTHER, Role.MATRIX if matrix else Role.VECTOR
    if local.startswith(("ssm_", "nextn.", "time_mix_", "channel_mix_", "shortconv")):
        return Part.OTHER, Role.MATRIX if matrix else Role.VECTOR
    if "norm" in local:
        return Part.NORMS, Role.VECTOR
    if local.startswith("attn_"):
        return Part.ATTENTION, Role.MATRIX if matrix else Role.VECTOR
    if local.startswith(("ffn_gate_inp", "exp_probs_b")):
        return Part.MOE, Role.ROUTER if matrix else Role.VECTOR
    if "_exps" in local:
        return Part.MOE, Role.EXPERT if matrix else Role.VECTOR
    if "_shexp" in local:
        return Part.MOE, Role.MATRIX if matrix else Role.VECTOR
    if local.startswith("ffn_"):
        return Part.MLP, Role.MATRIX if matrix else Role.VECTOR
    return Part.OTHER, Role.MATRIX if matrix else Role.VECTOR


def _layer(layout: CacheLayout, name: str) -> LayerSpec | None:
    match = _BLOCK.match(name)
    if not match:
        return None
    index = int(match.group(1))
    for layer in (*layout.layers, *layout.mtp_layers):
        if layer.index == index:
            return layer
    return None


def _what_if(t: FileTensor, layer: LayerSpec | None, kv_heads: int | None) -> tuple[FileTensor, int]:
    """The tensor with ``kv_heads`` K/V heads instead of its layer's own, and the KV heads it then serves."""
    local = t.name.split(".", 2)[-1] if t.name.startswith("blk.") else ""
    if layer is None or not layer.kind.has_kv_heads or not layer.k_heads:
        return t, 0
    own = layer.k_heads
    is_kv = local.startswith(_KV_TENSORS)
    is_qkv = local.startswith(_QKV_TENSOR)
    if not (is_kv or is_qkv):
        return t, 0
    if kv_heads is None or kv_heads == own:
        return t, own
    # ggml's ne[1] (ne[0] for a bias) counts the output rows: KV heads x head dim, or for a fused QKV
    # (Falcon, Phi-2, BLOOM) query heads x head dim + 2 x KV heads x head dim.
    axis = 1 if len(t.shape) >= 2 else 0
    rows = t.shape[axis]
    dim = layer.k_head_dim
    new_rows = rows // own * kv_heads if is_kv else rows - 2 * (own - kv_heads) * dim
    if (is_kv and rows % own) or new_rows <= 0:
        raise OptionError(Param.KV_HEADS, f"tensor {t.name} has {rows} rows, not a whole number of {own} heads")
    shape = tuple(new_rows if i == axis else d for i, d in enumerate(t.shape))
    if t.nbytes % rows:
        raise OptionError(Param.KV_HEADS, f"tensor {t.name} ({t.dtype}) does not split into {rows} rows")
    per_row = t.nbytes // rows
    return replace(t, shape=shape, nbytes=per_row * new_rows), kv_heads


def file_weight_bytes(layout: CacheLayout, *, dtype: str | None = None, kv_heads: int | None = None) -> WeightEstimate:
    """Weight bytes from the file's tensor infos (``dtype`` None / auto), or its tensors re-priced as ``dtype``."""
    explicit = None if dtype is None or dtype.strip().lower() == "auto" else weight_format(dtype)
    if kv_heads is not None:
        with_kv_heads(layout, kv_heads)  # the same checks as for a config: G divides the heads, layers have heads
    rows: list[tuple[WeightTensor, int]] = []
    for t in layout.file_tensors:
        part, role = classify(t.name, len(t.shape))
        sized, served = _what_if(t, _layer(layout, t.name), kv_heads)
        # HF order (out features, in features): ggml lists the contiguous input dim first.
        tensor = WeightTensor(part, role, t.name, tuple(reversed(sized.shape)), 1, served)
        rows.append((tensor, sized.nbytes if explicit is None else explicit.tensor_bytes(tensor)))
    tensors = tuple(t for t, _ in rows)
    notes = []
    if layout.mtp_layers:
        notes.append("the multi-token-prediction blocks' tensors are included: llama.cpp loads them")
    types = sorted({t.dtype for t in layout.file_tensors})
    label = (
        f"GGUF tensor types {', '.join(types)} (exact bytes from the tensor infos)"
        if explicit is None
        else f"{explicit.label} (re-priced from the GGUF's tensor shapes)"
    )
    params = ParamCount(
        model=layout.model,
        family=layout.family,
        rule="GGUF tensor infos",
        tensors=tensors,
        exact=True,
        tied_embeddings=not any(t.name.startswith("output.") for t in layout.file_tensors),
        kv_heads=kv_heads,
        notes=tuple(notes),
    )
    kv: dict[int, int] = {}
    for w, b in rows:
        if w.kv_heads:
            kv[w.kv_heads] = kv.get(w.kv_heads, 0) + b
    return WeightEstimate(
        params=params,
        bytes_total=sum(b for _, b in rows),
        dtype=label,
        exact=explicit is None or explicit.exact,
        parts=tuple((p, sum(b for w, b in rows if w.part is p)) for p in Part),
        replicated_bytes=sum(b for w, b in rows if w.part is Part.NORMS and not w.kv_heads),
        kv_bytes=tuple(sorted(kv.items())),
        notes=tuple(notes),
    )

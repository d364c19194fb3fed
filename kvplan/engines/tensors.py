"""The tensors an engine holds, as shapes and dtypes (pure: no torch): what ``kvplan verify`` allocates.

Each engine module builds its own layout from these pieces (:meth:`Engine.stage_tensors
<kvplan.engines.base.Engine.stage_tensors>`): transformers' ``[batch, heads, seq, head_dim]``, vLLM's pages,
SGLang's token pools, llama.cpp's cell rows, TensorRT-LLM's blocks. Types torch cannot store natively
(block-scaled, with per-token scales, packed) are uint8 rows of their exact byte size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import prod

from kvplan.dtypes import STORAGE_TYPES, StorageType
from kvplan.formula import CacheTypes, token_bytes
from kvplan.layout import LayerKind, LayerSpec
from kvplan.units import human_bytes

#: kvplan storage name -> torch dtype name, for types whose values torch stores natively. Every other type
#: (block-scaled, with per-token scales, packed formats) is stored as uint8 rows of its exact byte size.
TORCH_DTYPES: dict[str, str] = {
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
    "fp8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
    "int8": "int8",
}


#: Bytes per element of the torch dtypes verify allocates (checked against torch's own element_size).
ITEMSIZE: dict[str, int] = {
    "float32": 4,
    "float16": 2,
    "bfloat16": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "int8": 1,
    "uint8": 1,
}


@dataclass(frozen=True)
class TensorSpec:
    """One tensor to allocate: a name within its layer, a shape, and a torch dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * ITEMSIZE[self.dtype]

    def describe(self) -> str:
        return f"{self.name} [{', '.join(map(str, self.shape))}] {self.dtype} ({human_bytes(self.nbytes)})"


@dataclass(frozen=True)
class LayerTensors:
    """The tensors one layer holds on one GPU for the whole batch (index -1: a vLLM padding layer)."""

    index: int
    kind: LayerKind
    tensors: tuple[TensorSpec, ...]
    #: Query heads of the layer (after tensor parallelism), for the decode-attention timing.
    q_heads: int = 0
    #: Tokens one decode step attends to per sequence (0: not an attention layer verify can time).
    attended: int = 0

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def torch_dtype_name(store: StorageType) -> str | None:
    """The torch dtype that stores ``store`` natively, or None for a type stored as uint8 rows."""
    return TORCH_DTYPES.get(store.name) if store.is_plain else None


def row(name: str, prefix: tuple[int, ...], values: int, store: StorageType) -> TensorSpec:
    """A tensor of rows of ``values`` values: native dtype when torch has one, else uint8 rows of row_bytes."""
    dtype = torch_dtype_name(store)
    if dtype is not None:
        return TensorSpec(name, (*prefix, values), dtype)
    return TensorSpec(name, (*prefix, store.row_bytes(values)), "uint8")


def state_tensors(layer: LayerSpec, types: CacheTypes, rows: int) -> list[TensorSpec]:
    out = []
    for t in layer.state:
        store = types.activation if t.dtype is None else storage(t.dtype)
        dtype = torch_dtype_name(store)
        if dtype is None:
            out.append(TensorSpec(t.name, (rows, t.elements * store.element_bytes), "uint8"))
        else:
            out.append(TensorSpec(t.name, (rows, *t.shape), dtype))
    return out


def storage(name: str) -> StorageType:
    return STORAGE_TYPES[name]


def mla_latent(layer: LayerSpec, types: CacheTypes, prefix: tuple[int, ...], split: bool) -> list[TensorSpec]:
    """An MLA layer's per-token latent: keys (kv_lora_rank) and values (rope) apart when ``split`` (transformers),
    else one latent row; packed types (fp8_ds_mla, nvfp4) as one uint8 row of the format's bytes per token."""
    if types.k.name == "fp8_ds_mla":
        # An opaque packed row (fp8 latent + fp32 scales + bf16 rope): its bytes per token are the format's.
        packed = token_bytes(replace(layer, indexer_head_dim=0), types)
        return [TensorSpec("latent", (*prefix, packed), "uint8")]
    if split and torch_dtype_name(types.k) is not None:
        return [row("keys", prefix, layer.kv_lora_rank, types.k), row("values", prefix, layer.rope_dim, types.k)]
    return [row("latent", prefix, layer.latent_dim, types.k)]


def kv_pair(layer: LayerSpec, types: CacheTypes, prefix: tuple[int, ...], heads_axis: int) -> list[TensorSpec]:
    """K and V as ``prefix`` with the layer's head count inserted at ``heads_axis``, then the head dim."""
    k_prefix = (*prefix[:heads_axis], layer.k_heads, *prefix[heads_axis:])
    v_prefix = (*prefix[:heads_axis], layer.v_heads, *prefix[heads_axis:])
    return [row("k", k_prefix, layer.k_head_dim, types.k), row("v", v_prefix, layer.v_head_dim, types.v)]

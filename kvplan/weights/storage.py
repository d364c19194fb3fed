"""Weight storage: formats (dtypes, quantization schemes) and the bytes the weights take per GPU."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from math import prod
from typing import Any

from kvplan.errors import ConfigError, Param, UnknownDtypeError
from kvplan.formula import check_positive, serving_dtype
from kvplan.readers.model import ReadModel
from kvplan.weights.count import count_parameters
from kvplan.weights.result import ParamCount, Part, Role, WeightTensor
from kvplan.weights.tensors import _cdiv


class Scheme(StrEnum):
    """How converted weight matrices are stored."""

    PLAIN = "plain"  # every value the same whole number of bytes
    FP8_TENSOR = "fp8_tensor"  # 1 B + one fp32 scale per matrix (+ one static input scale)
    FP8_BLOCK = "fp8_block"  # 1 B + one fp32 scale per block (DeepSeek: 128 x 128)
    INT8_CHANNEL = "int8_channel"  # 1 B + one fp32 scale per output channel
    INT4_GROUP = "int4_group"  # 4 bit + one fp16 scale per group of input values (symmetric)
    AWQ = "awq"  # AutoAWQ GEMM: packed int32 qweight, fp16 scales, packed qzeros per group
    GPTQ = "gptq"  # AutoGPTQ: packed int32 qweight, fp16 scales, packed qzeros per group, int32 g_idx
    MXFP4 = "mxfp4"  # 4 bit + one E8M0 scale per 32 values: 17 B per 32
    NVFP4 = "nvfp4"  # 4 bit + one fp8 scale per 16 values (9 B per 16) + one fp32 global scale per matrix


@dataclass(frozen=True)
class WeightFormat:
    """A storage format: what converted matrices cost, and what everything else costs."""

    scheme: Scheme
    label: str
    #: Bytes per value of the tensors the format does not convert (and of all tensors for PLAIN).
    base_bytes: int
    bits: int = 16
    #: Values per scale group along the input dim (0: one group per output channel).
    group: int = 0
    block: tuple[int, int] = (0, 0)
    static_input_scale: bool = False
    #: Parts whose matrices stay at base_bytes (from modules_to_not_convert).
    keep_parts: frozenset[Part] = frozenset()
    keep_experts: bool = False
    exact: bool = True
    notes: tuple[str, ...] = ()

    def converts(self, tensor: WeightTensor) -> bool:
        if self.scheme is Scheme.PLAIN or tensor.role not in (Role.MATRIX, Role.EXPERT):
            return False
        if tensor.role is Role.EXPERT:
            return not self.keep_experts
        return tensor.part not in self.keep_parts

    def groups(self, cols: int) -> int:
        """Scale groups along one row of ``cols`` input values."""
        return _cdiv(cols, self.group) if self.group > 0 else 1

    def matrix_bytes(self, rows: int, cols: int) -> int:
        """Bytes of one converted (rows = out features) x (cols = in features) matrix, scales included."""
        values = rows * cols
        groups = self.groups(cols)
        match self.scheme:
            case Scheme.FP8_TENSOR:
                return values + 4 + (4 if self.static_input_scale else 0)
            case Scheme.FP8_BLOCK:
                return values + _cdiv(rows, self.block[0]) * _cdiv(cols, self.block[1]) * 4
            case Scheme.INT8_CHANNEL:
                return values + rows * 4
            case Scheme.INT4_GROUP:
                return _cdiv(values, 2) + rows * groups * 2
            case Scheme.AWQ:
                # qweight (in, out x bits / 32) int32; qzeros (in / group, out x bits / 32) int32;
                # scales (in / group, out) fp16.
                packed_out = _cdiv(rows * self.bits, 32) * 4
                return cols * packed_out + groups * packed_out + groups * rows * 2
            case Scheme.GPTQ:
                # qweight (in x bits / 32, out) int32; qzeros (in / group, out x bits / 32) int32;
                # scales (in / group, out) fp16; g_idx (in,) int32.
                return (
                    _cdiv(cols * self.bits, 32) * 4 * rows
                    + groups * _cdiv(rows * self.bits, 32) * 4
                    + (groups * rows * 2 + cols * 4)
                )
            case Scheme.MXFP4:
                return rows * groups * 17
            case Scheme.NVFP4:
                return rows * groups * 9 + 4
            case Scheme.PLAIN:
                return values * self.base_bytes
        raise AssertionError(self.scheme)  # pragma: no cover

    def tensor_bytes(self, tensor: WeightTensor) -> int:
        if self.converts(tensor):
            rows, cols = tensor.shape[0], prod(tensor.shape[1:])
            return tensor.count * self.matrix_bytes(rows, cols)
        return tensor.params * self.base_bytes


def _plain(name: str, size: int) -> WeightFormat:
    return WeightFormat(Scheme.PLAIN, f"{name} ({size} B per parameter)", size)


#: Explicit weight dtypes. Quantized ones convert the decoder's weight matrices (attention, MLP, experts)
#: and keep embeddings, the LM head, norms, biases and routers at 2 bytes, as quantized checkpoints do.
EXPLICIT_FORMATS: dict[str, WeightFormat] = {
    "float32": _plain("float32", 4),
    "float16": _plain("float16", 2),
    "bfloat16": _plain("bfloat16", 2),
    "fp8": WeightFormat(Scheme.FP8_TENSOR, "fp8 (1 B per value + one fp32 scale per matrix)", 2, bits=8),
    "int8": WeightFormat(Scheme.INT8_CHANNEL, "int8 (1 B per value + one fp32 scale per output channel)", 2, bits=8),
    "int4": WeightFormat(
        Scheme.INT4_GROUP, "int4 (4 bit + one fp16 scale per group of 128 input values: 66 B per 128)", 2, 4, 128
    ),
    "mxfp4": WeightFormat(Scheme.MXFP4, "mxfp4 (4 bit + one 8-bit scale per 32 values: 17 B per 32)", 2, 4, 32),
    "nvfp4": WeightFormat(
        Scheme.NVFP4, "nvfp4 (4 bit + one fp8 scale per 16 values: 9 B per 16, + fp32 global scale)", 2, 4, 16
    ),
}


WEIGHT_DTYPE_ALIASES = {
    "fp32": "float32",
    "float": "float32",
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp8_e4m3": "fp8",
    "float8_e4m3fn": "fp8",
    "w8a16": "int8",
    "w4a16": "int4",
}


WEIGHT_DTYPE_OPTION = Param.WEIGHTS_DTYPE


def weight_format(name: str) -> WeightFormat:
    """The storage format for an explicit weight dtype name."""
    key = name.strip().lower()
    key = WEIGHT_DTYPE_ALIASES.get(key, key)
    if key not in EXPLICIT_FORMATS:
        raise UnknownDtypeError(WEIGHT_DTYPE_OPTION, name, [*EXPLICIT_FORMATS, *WEIGHT_DTYPE_ALIASES])
    return EXPLICIT_FORMATS[key]


def _keep_rules(entries: object) -> tuple[frozenset[Part], bool, list[str], bool]:
    """Map modules_to_not_convert entries to parts kept 16-bit; (parts, keep experts, notes, understood)."""
    parts: set[Part] = set()
    experts = False
    notes: list[str] = []
    understood = True
    for entry in entries if isinstance(entries, list) else []:
        text = str(entry)
        if any(k in text for k in ("vision", "visual", "multi_modal", "mm_projector")):
            continue  # not part of the text decoder
        if any(k in text for k in ("embed", "lm_head", "wte")) or text.endswith(("router", "mlp.gate")):
            continue  # tables and routers are never converted
        if "expert" in text:
            experts = True
        elif "attn" in text or "attention" in text:
            parts.add(Part.ATTENTION)
        elif "mlp" in text:
            parts.add(Part.MLP)
        else:
            understood = False
            notes.append(f"modules_to_not_convert entry {text!r} not understood; assumed converted")
    return frozenset(parts), experts, notes, understood


def config_format(read: ReadModel) -> WeightFormat | None:
    """Rule quantization_config: the checkpoint's own storage, or None when it has no quantization_config.

    fp8 with weight_block_size [a, b] (DeepSeek-V3/R1/V3.2, Kimi-K2, MiMo-V2-Flash): 1 B per value + one
    fp32 weight_scale_inv per a x b block, counted per matrix (experts one by one) with ceil at the edges;
    fp8 with weight_block_size null (Devstral 2): one fp32 weight_scale per matrix, and one fp32
    input_scale when activation_scheme is static. awq / gptq: bits with group_size groups, packed as AutoAWQ
    (GEMM) / AutoGPTQ store them. mxfp4 (gpt-oss): 17 B per 32 values for every matrix not in
    modules_to_not_convert, which keeps attention, routers, embeddings and the head bf16: experts only.
    """
    raw = read.config.keys.get("quantization_config")
    if not isinstance(raw, Mapping):
        return None
    base = 2
    method = str(raw.get("quant_method", "")).lower()
    keep_parts, keep_experts, notes, understood = _keep_rules(raw.get("modules_to_not_convert"))
    common: dict[str, Any] = {"keep_parts": keep_parts, "keep_experts": keep_experts, "exact": understood}
    if method == "fp8":
        block = raw.get("weight_block_size")
        if isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block):
            label = f"fp8 + one fp32 scale per {block[0]}x{block[1]} block (quantization_config)"
            return WeightFormat(
                Scheme.FP8_BLOCK, label, base, 8, block=(block[0], block[1]), notes=tuple(notes), **common
            )
        static = raw.get("activation_scheme") == "static"
        label = "fp8 + fp32 weight scale per matrix" + (" + static input scale" if static else "")
        return WeightFormat(
            Scheme.FP8_TENSOR,
            f"{label} (quantization_config)",
            base,
            8,
            static_input_scale=static,
            notes=tuple(notes),
            **common,
        )
    if method in ("awq", "gptq"):
        bits = raw.get("bits", raw.get("w_bit", 4))
        group = raw.get("group_size", raw.get("q_group_size", 128))
        if not isinstance(bits, int) or not isinstance(group, int) or bits <= 0:
            raise ConfigError(read.layout.model, "quantization bits", ("quantization_config.bits",), f"{bits!r}")
        scheme = Scheme.AWQ if method == "awq" else Scheme.GPTQ
        group = max(group, 0)  # group_size -1: one group per output channel (per-channel scales)
        shown = f"group {group}" if group else "per channel"
        label = f"{method} int{bits}, {shown}, fp16 scales + packed zeros (quantization_config)"
        return WeightFormat(scheme, label, base, bits, group, notes=tuple(notes), **common)
    if method == "mxfp4":
        label = "mxfp4 (17 B per 32 values) except modules_to_not_convert (quantization_config)"
        return WeightFormat(Scheme.MXFP4, label, base, 4, 32, notes=tuple(notes), **common)
    return WeightFormat(
        Scheme.PLAIN,
        f"16-bit (quantization_config quant_method {method!r} not modelled)",
        base,
        exact=False,
        notes=(f"quant_method {method!r} is not modelled: weights counted at 2 B (an overestimate)",),
    )


@dataclass(frozen=True)
class WeightEstimate:
    """Weight bytes for one model and storage format."""

    params: ParamCount
    bytes_total: int
    #: The storage, in words ("bfloat16 (2 B per parameter)", "fp8 + one fp32 scale per 128x128 block ...").
    dtype: str
    exact: bool
    #: Bytes per part, in Part order.
    parts: tuple[tuple[Part, int], ...]
    #: Bytes every tensor-parallel rank holds whole: the norms (RMSNorm / LayerNorm weights are replicated).
    replicated_bytes: int
    #: K/V projection bytes per KV-head count G (a rank keeps whole heads, so TP > G replicates them).
    kv_bytes: tuple[tuple[int, int], ...]
    notes: tuple[str, ...] = ()
    #: The storage scheme, and the bytes per value of what it keeps unconverted (the serving dtype's width).
    scheme: Scheme = Scheme.PLAIN
    base_bytes: int = 2

    def bytes_per_gpu(self, tp: int) -> int:
        """Weight bytes on each of ``tp`` tensor-parallel GPUs.

        Norms are replicated on every rank; K/V projections split over at most G ranks (each rank keeps
        whole KV heads, as vLLM's QKVParallelLinear replicates heads when TP > G); everything else is
        split evenly, rounded up. Not modelled, all small: vocabulary padding of the embedding / head, the
        biases of row-parallel layers, MoE routers and MLA's q_a / kv_a projections (replicated in vLLM).
        So this is exact for the norms and K/V and a slight underestimate otherwise.
        """
        check_positive(Param.TENSOR_PARALLEL_SIZE, tp)
        kv_total = sum(b for _, b in self.kv_bytes)
        kv = sum(_cdiv(b, min(tp, g)) for g, b in self.kv_bytes)
        rest = self.bytes_total - self.replicated_bytes - kv_total
        return self.replicated_bytes + kv + _cdiv(rest, tp)

    def part_bytes(self, part: Part) -> int:
        return dict(self.parts)[part]

    def bytes_per_stage(self, tp: int, stage_layers: tuple[int, ...]) -> tuple[int, ...]:
        """Weight bytes on each GPU of each pipeline stage (``stage_layers``: decoder layers per stage).

        As vLLM places them (vllm/model_executor/models/llama.py LlamaModel: embed_tokens on the first rank,
        and on the last too when tie_word_embeddings, where LlamaForCausalLM ties lm_head to it; other ranks
        get PPMissingLayer; make_layers gives each rank its layers): the token embedding on the first stage,
        the LM head on the last (a tied head is one more copy of the embedding there), every other weight
        with its layer, split by layer count (exact for a stack of identical layers). Each share is split over
        ``tp`` GPUs as :meth:`bytes_per_gpu` splits it.
        """
        layers = sum(stage_layers)
        check_positive(Param.PIPELINE_PARALLEL_SIZE, len(stage_layers))
        embedding = _cdiv(self.part_bytes(Part.EMBEDDING), tp)
        head = _cdiv(self.part_bytes(Part.LM_HEAD), tp)
        body = self.bytes_per_gpu(tp) - embedding - head
        if self.params.tied_embeddings and len(stage_layers) > 1:
            head = embedding
        out = []
        for i, n in enumerate(stage_layers):
            share = _cdiv(body * n, layers) if layers else 0
            share += embedding if i == 0 else 0
            share += head if i == len(stage_layers) - 1 else 0
            out.append(share)
        return tuple(out)


def weight_bytes(read: ReadModel, *, dtype: str | None = None, kv_heads: int | None = None) -> WeightEstimate:
    """Weight bytes of a model as its reader read it (:func:`kvplan.resolve.read_model`): parameters x their
    storage. A GGUF model's are exact from the tensors its file lists.

    ``dtype`` names the storage of every weight (float32, float16, bfloat16) or of the decoder's weight
    matrices (fp8, int8, int4, mxfp4, nvfp4; the rest stays 16-bit); None or ``auto`` means the checkpoint's
    quantization_config when it has one, else the 16-bit serving dtype (as :func:`kvplan.formula.serving_dtype`:
    fp32 checkpoints are served in 16 bits).
    """
    layout = read.layout
    if layout.file_tensors:
        from kvplan.weights.gguf import file_weight_bytes

        return file_weight_bytes(layout, dtype=dtype, kv_heads=kv_heads)
    params = count_parameters(read, kv_heads)
    notes = list(params.notes)
    fmt: WeightFormat | None
    if dtype is None or dtype.strip().lower() == "auto":
        fmt = config_format(read)
        if fmt is None:
            name, why = serving_dtype(layout)
            fmt = replace(_plain(name, 2), label=f"{name} (2 B per parameter: {why})")
    else:
        fmt = weight_format(dtype)
    notes.extend(fmt.notes)
    per_tensor = [(t, fmt.tensor_bytes(t)) for t in params.tensors]
    parts = tuple((p, sum(b for t, b in per_tensor if t.part is p)) for p in Part)
    replicated = sum(b for t, b in per_tensor if t.part is Part.NORMS and not t.kv_heads)
    kv: dict[int, int] = {}
    for t, b in per_tensor:
        if t.kv_heads:
            kv[t.kv_heads] = kv.get(t.kv_heads, 0) + b
    return WeightEstimate(
        params=params,
        bytes_total=sum(b for _, b in per_tensor),
        dtype=fmt.label,
        exact=params.exact and fmt.exact,
        parts=parts,
        replicated_bytes=replicated,
        kv_bytes=tuple(sorted(kv.items())),
        notes=tuple(notes),
        scheme=fmt.scheme,
        base_bytes=fmt.base_bytes,
    )

"""Storage types for the KV cache and for state tensors: exact bytes, block scales included.

A cache entry is stored per token, per layer, per head, as a row of ``head_dim`` values. Plain types cost
``head_dim x size`` bytes. Block-scaled types (llama.cpp's q8_0 ...; nvfp4) pack ``block_values`` values with
their scales into ``block_bytes`` bytes, so a row costs ``head_dim / block_values x block_bytes``. vLLM's
per-token-head formats add one fp32 scale per token per head. All arithmetic is on integers.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvplan.errors import OptionError, Param, UnknownDtypeError


@dataclass(frozen=True)
class StorageType:
    """How one value (or one block of values) of a cache row is stored."""

    name: str
    block_values: int
    block_bytes: int
    #: Extra bytes per token per head (vLLM's ``*_per_token_head``: one fp32 scale).
    head_scale_bytes: int = 0
    summary: str = ""

    @property
    def is_plain(self) -> bool:
        """A type with no blocks and no scales: every value costs the same whole number of bytes."""
        return self.block_values == 1 and self.head_scale_bytes == 0

    @property
    def element_bytes(self) -> int:
        """Bytes per value of a plain type (block-scaled types have no whole-byte size)."""
        if not self.is_plain:
            raise OptionError(Param.KV_CACHE_DTYPE, f"{self.name} has no whole-byte size per value")
        return self.block_bytes

    def row_bytes(self, values: int) -> int:
        """Bytes of one head's row of ``values`` values for one token, scales included."""
        if values % self.block_values:
            raise OptionError(
                Param.KV_CACHE_DTYPE,
                f"{self.name} stores blocks of {self.block_values} values, and a row of {values} values "
                "is not a whole number of blocks; choose another KV dtype",
            )
        return values // self.block_values * self.block_bytes + self.head_scale_bytes

    def describe_row(self, values: int) -> str:
        """The arithmetic of :meth:`row_bytes` in words, for explanations."""
        if self.is_plain:
            return f"{values:,} x {self.block_bytes} B"
        text = f"{values:,} / {self.block_values} blocks x {self.block_bytes} B"
        if self.head_scale_bytes:
            text += f" + {self.head_scale_bytes} B scale"
        return text


def _plain(name: str, size: int, summary: str) -> StorageType:
    return StorageType(name, 1, size, summary=summary)


#: Canonical storage types. Sources for the block formats: llama.cpp ggml/src/ggml-common.h (block_q8_0 is
#: a fp16 scale + 32 int8 = 34 B; block_q4_0 fp16 + 16 B = 18 B; q4_1 two fp16 + 16 B = 20 B; q5_0 fp16 +
#: 4 B high bits + 16 B = 22 B; q5_1 two fp16 + 4 + 16 = 24 B; block_iq4_nl fp16 + 16 B = 18 B);
#: vLLM vllm/v1/kv_cache_interface.py (nvfp4: packed 4-bit values + one fp8 scale per 16 values;
#: *_per_token_head: one fp32 scale per token per head, for K and for V).
STORAGE_TYPES: dict[str, StorageType] = {
    t.name: t
    for t in (
        _plain("float32", 4, "IEEE fp32"),
        _plain("float16", 2, "IEEE fp16"),
        _plain("bfloat16", 2, "bf16"),
        _plain("fp8_e4m3", 1, "fp8 e4m3, per-tensor scale"),
        _plain("fp8_e5m2", 1, "fp8 e5m2, per-tensor scale"),
        _plain("int8", 1, "int8, per-tensor scale"),
        StorageType("int8_per_token_head", 1, 1, 4, "int8 + one fp32 scale per token per head (vLLM)"),
        StorageType("fp8_per_token_head", 1, 1, 4, "fp8 + one fp32 scale per token per head (vLLM)"),
        StorageType("nvfp4", 16, 9, 0, "4-bit values + one fp8 scale per 16 (8 + 1 B per 16 values)"),
        StorageType("q8_0", 32, 34, 0, "llama.cpp: 32 int8 + fp16 scale = 34 B per 32 values"),
        StorageType("q4_0", 32, 18, 0, "llama.cpp: 32 x 4 bit + fp16 scale = 18 B per 32 values"),
        StorageType("q4_1", 32, 20, 0, "llama.cpp: 32 x 4 bit + fp16 scale + fp16 min = 20 B per 32"),
        StorageType("q5_0", 32, 22, 0, "llama.cpp: 32 x 5 bit + fp16 scale = 22 B per 32 values"),
        StorageType("q5_1", 32, 24, 0, "llama.cpp: 32 x 5 bit + fp16 scale + fp16 min = 24 B per 32"),
        StorageType("iq4_nl", 32, 18, 0, "llama.cpp: 32 x 4 bit non-linear + fp16 scale = 18 B per 32"),
        # vLLM's DeepSeek-V3.2 sparse-MLA layout; only meaningful for an MLA latent (see layout.MLA rules).
        StorageType("fp8_ds_mla", 1, 1, 0, "vLLM DeepSeek sparse MLA: 656 B per token per layer"),
    )
}

#: Names users type (vLLM's --kv-cache-dtype, llama.cpp's --cache-type-k, torch names) -> canonical.
ALIASES: dict[str, str] = {
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    # vLLM: "fp8" is e4m3 on CUDA (OCP) and e4m3fnuz on ROCm; both one byte per value.
    "fp8": "fp8_e4m3",
    "fp8_inc": "fp8_e4m3",
    "float8_e4m3fn": "fp8_e4m3",
    "float8_e5m2": "fp8_e5m2",
}

AUTO = "auto"


def known_names() -> list[str]:
    """Every accepted KV dtype spelling, canonical names first."""
    return [AUTO, *STORAGE_TYPES, *ALIASES]


def canonical_name(name: str, option: Param = Param.KV_CACHE_DTYPE) -> str:
    """Map a user's spelling to the canonical name; ``auto`` stays ``auto``."""
    key = name.strip().lower()
    if key == AUTO:
        return AUTO
    key = ALIASES.get(key, key)
    if key not in STORAGE_TYPES:
        raise UnknownDtypeError(option, name, known_names())
    return key


def storage_type(name: str, option: Param = Param.KV_CACHE_DTYPE) -> StorageType:
    """The storage type for a (non-auto) name."""
    key = canonical_name(name, option)
    if key == AUTO:
        raise OptionError(option, "'auto' must be resolved against the model's dtype first")
    return STORAGE_TYPES[key]


#: torch / config spellings of a model's own dtype -> canonical storage name.
_MODEL_DTYPES = {
    "float32": "float32",
    "float": "float32",
    "fp32": "float32",
    "float16": "float16",
    "half": "float16",
    "fp16": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def model_dtype_name(raw: object) -> str | None:
    """Canonical name of a config's ``torch_dtype`` / ``dtype`` value, or None when unknown."""
    if not isinstance(raw, str):
        return None
    return _MODEL_DTYPES.get(raw.strip().lower().removeprefix("torch."))

"""Synthetic GGUF files for the tests, written with gguf-py's GGUFWriter (the llama.cpp project's own writer).

Each fixture is one architecture family as convert_hf_to_gguf.py writes it: the ``<arch>.*`` keys llama.cpp reads,
a small tokenizer (so the reader has string arrays to skip), and tiny tensors named and shaped as llama.cpp's
loader expects them, in a mix of ggml types. Beside each GGUF fixture sits the Hugging Face config.json of the
same model, so a test can compare kvplan's GGUF layout with its config.json layout (two independent readers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType, GGUFWriter

Meta = dict[str, Any]
#: (name, ggml shape: ne[0] first, ggml type name)
Tensor = tuple[str, tuple[int, ...], str]


@dataclass(frozen=True)
class Fixture:
    arch: str
    metadata: Meta
    tensors: list[Tensor]
    #: The same model as a Hugging Face config.json (None where the conventions differ on purpose).
    hf_config: dict[str, Any] | None = None
    tokens: int = 300
    extra: Meta = field(default_factory=dict)


def _array_type(values: Sequence[Any]) -> GGUFValueType:
    if all(isinstance(v, bool) for v in values):
        return GGUFValueType.BOOL
    if all(isinstance(v, int) for v in values):
        return GGUFValueType.INT32
    if all(isinstance(v, float) for v in values):
        return GGUFValueType.FLOAT32
    return GGUFValueType.STRING


def _add(writer: GGUFWriter, key: str, value: Any) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_key_value(key, list(value), GGUFValueType.ARRAY, sub_type=_array_type(value))


def _data(shape: tuple[int, ...], type_name: str) -> tuple[np.ndarray[Any, Any], GGMLQuantizationType | None]:
    numpy_shape = tuple(reversed(shape))
    if type_name == "F32":
        return np.zeros(numpy_shape, dtype=np.float32), None
    if type_name == "F16":
        return np.zeros(numpy_shape, dtype=np.float16), None
    qtype = GGMLQuantizationType[type_name]
    block, size = GGML_QUANT_SIZES[qtype]
    byte_shape = (*numpy_shape[:-1], numpy_shape[-1] // block * size)
    return np.zeros(byte_shape, dtype=np.uint8), qtype


def write_gguf(path: Path, fx: Fixture, *, split_max_tensors: int = 0) -> list[Path]:
    """Write ``fx`` to ``path`` (or to its splits); returns the files written."""
    writer = GGUFWriter(path, fx.arch, split_max_tensors=split_max_tensors)
    writer.add_name(f"kvplan test {fx.arch}")
    for key, value in {**fx.metadata, **fx.extra}.items():
        _add(writer, key, value)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list([f"tok{i}" for i in range(fx.tokens)])
    writer.add_token_types([1] * fx.tokens)
    writer.add_token_merges([f"t o{i}" for i in range(fx.tokens // 2)])
    for name, shape, type_name in fx.tensors:
        data, qtype = _data(shape, type_name)
        writer.add_tensor(name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    files = writer.format_shard_names(path)
    return list(files)


def ggml_bytes(shape: tuple[int, ...], type_name: str) -> int:
    """ggml_nbytes by gguf-py's own table: whole blocks per row, times the rows."""
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[type_name]]
    rows = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return shape[0] // block * size * rows


# ----------------------------------------------------------------------------------------------------------
# Tensor sets


def _decoder(
    layers: int,
    hidden: int,
    heads: int,
    kv_heads: Sequence[int] | int,
    k_dim: int,
    v_dim: int,
    ffn: int,
    *,
    qtype: str = "Q4_K",
    bias: bool = False,
    qk_norm: bool = False,
    experts: int = 0,
    vocab: int = 256,
    tied: bool = False,
) -> list[Tensor]:
    kvs = [kv_heads] * layers if isinstance(kv_heads, int) else list(kv_heads)
    out: list[Tensor] = [("token_embd.weight", (hidden, vocab), "Q8_0"), ("output_norm.weight", (hidden,), "F32")]
    if not tied:
        out.append(("output.weight", (hidden, vocab), "Q6_K"))
    for i in range(layers):
        b = f"blk.{i}"
        out.append((f"{b}.attn_norm.weight", (hidden,), "F32"))
        if kvs[i]:
            out += [
                (f"{b}.attn_q.weight", (hidden, heads * k_dim), qtype),
                (f"{b}.attn_k.weight", (hidden, kvs[i] * k_dim), qtype),
                (f"{b}.attn_v.weight", (hidden, kvs[i] * v_dim), "Q6_K" if qtype == "Q4_K" else qtype),
                (f"{b}.attn_output.weight", (heads * v_dim, hidden), qtype),
            ]
            if bias:
                out += [
                    (f"{b}.attn_q.bias", (heads * k_dim,), "F32"),
                    (f"{b}.attn_k.bias", (kvs[i] * k_dim,), "F32"),
                    (f"{b}.attn_v.bias", (kvs[i] * v_dim,), "F32"),
                ]
            if qk_norm:
                out += [(f"{b}.attn_q_norm.weight", (k_dim,), "F32"), (f"{b}.attn_k_norm.weight", (k_dim,), "F32")]
        out.append((f"{b}.ffn_norm.weight", (hidden,), "F32"))
        if experts:
            out += [
                (f"{b}.ffn_gate_inp.weight", (hidden, experts), "F32"),
                (f"{b}.ffn_gate_exps.weight", (hidden, ffn, experts), qtype),
                (f"{b}.ffn_up_exps.weight", (hidden, ffn, experts), qtype),
                (f"{b}.ffn_down_exps.weight", (ffn, hidden, experts), "Q8_0"),
            ]
        else:
            out += [
                (f"{b}.ffn_gate.weight", (hidden, ffn), qtype),
                (f"{b}.ffn_up.weight", (hidden, ffn), qtype),
                (f"{b}.ffn_down.weight", (ffn, hidden), "Q8_0"),
            ]
    return out


def _common(arch: str, layers: int, hidden: int, heads: Any, kv: Any, ctx: int, ffn: int = 512) -> Meta:
    meta: Meta = {
        f"{arch}.block_count": layers,
        f"{arch}.context_length": ctx,
        f"{arch}.embedding_length": hidden,
        f"{arch}.feed_forward_length": ffn,
        f"{arch}.attention.head_count": heads,
        f"{arch}.rope.freq_base": 10000.0,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
        "general.file_type": 15,
    }
    if kv is not None:
        meta[f"{arch}.attention.head_count_kv"] = kv
    return meta


# ----------------------------------------------------------------------------------------------------------
# One fixture per family (with the matching HF config)


def llama() -> Fixture:
    meta = _common("llama", 4, 256, 8, 2, 4096)
    meta["llama.rope.dimension_count"] = 32
    hf = {
        "model_type": "llama",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
    }
    return Fixture("llama", meta, _decoder(4, 256, 8, 2, 32, 32, 512), hf)


def qwen2() -> Fixture:
    meta = _common("qwen2", 3, 256, 4, 2, 32768)
    hf = {
        "model_type": "qwen2",
        "num_hidden_layers": 3,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "sliding_window": 4096,
        "use_sliding_window": False,
    }
    return Fixture("qwen2", meta, _decoder(3, 256, 4, 2, 64, 64, 512, qtype="Q5_0", bias=True, tied=True), hf)


def qwen3() -> Fixture:
    meta = _common("qwen3", 4, 256, 8, 4, 40960)
    meta["qwen3.attention.key_length"] = 64
    meta["qwen3.attention.value_length"] = 64
    hf = {
        "model_type": "qwen3",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 64,
        "max_position_embeddings": 40960,
    }
    return Fixture("qwen3", meta, _decoder(4, 256, 8, 4, 64, 64, 512, qtype="Q8_0", qk_norm=True), hf)


def qwen3moe() -> Fixture:
    meta = _common("qwen3moe", 3, 256, 8, 2, 40960)
    meta |= {
        "qwen3moe.attention.key_length": 64,
        "qwen3moe.attention.value_length": 64,
        "qwen3moe.expert_count": 8,
        "qwen3moe.expert_used_count": 2,
        "qwen3moe.expert_feed_forward_length": 256,
    }
    hf = {
        "model_type": "qwen3_moe",
        "num_hidden_layers": 3,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 40960,
    }
    return Fixture("qwen3moe", meta, _decoder(3, 256, 8, 2, 64, 64, 256, qk_norm=True, experts=8), hf)


def gemma2() -> Fixture:
    meta = _common("gemma2", 6, 256, 4, 2, 8192)
    meta |= {
        "gemma2.attention.key_length": 128,
        "gemma2.attention.value_length": 128,
        "gemma2.attention.sliding_window": 512,
        "gemma2.attn_logit_softcapping": 50.0,
        "gemma2.final_logit_softcapping": 30.0,
    }
    hf = {
        "model_type": "gemma2",
        "num_hidden_layers": 6,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "max_position_embeddings": 8192,
        "sliding_window": 512,
    }
    return Fixture("gemma2", meta, _decoder(6, 256, 4, 2, 128, 128, 512, tied=True), hf)


def gemma3() -> Fixture:
    meta = _common("gemma3", 12, 256, 4, 1, 131072)
    meta |= {
        "gemma3.attention.key_length": 256,
        "gemma3.attention.value_length": 256,
        "gemma3.attention.sliding_window": 1024,
    }
    hf = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 12,
        "hidden_size": 256,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "sliding_window": 1024,
        "sliding_window_pattern": 6,
    }
    return Fixture("gemma3", meta, _decoder(12, 256, 4, 1, 256, 256, 512, tied=True, qk_norm=True), hf)


def deepseek2() -> Fixture:
    # A DeepSeek-V3-style MLA conversion (llama.cpp#12801): key_length = kv_lora_rank + rope, one KV head.
    rank, rope, nope, v = 64, 32, 64, 64
    meta = _common("deepseek2", 3, 256, 8, 1, 163840)
    meta |= {
        "deepseek2.attention.key_length": rank + rope,
        "deepseek2.attention.value_length": rank,
        "deepseek2.attention.key_length_mla": nope + rope,
        "deepseek2.attention.value_length_mla": v,
        "deepseek2.attention.kv_lora_rank": rank,
        "deepseek2.attention.q_lora_rank": 128,
        "deepseek2.rope.dimension_count": rope,
        "deepseek2.leading_dense_block_count": 1,
        "deepseek2.expert_count": 8,
        "deepseek2.expert_used_count": 2,
        "deepseek2.expert_shared_count": 1,
        "deepseek2.expert_feed_forward_length": 256,
        "deepseek2.expert_weights_scale": 2.5,
    }
    tensors: list[Tensor] = [("token_embd.weight", (256, 256), "Q8_0"), ("output_norm.weight", (256,), "F32")]
    tensors.append(("output.weight", (256, 256), "Q6_K"))
    for i in range(3):
        b = f"blk.{i}"
        tensors += [
            (f"{b}.attn_norm.weight", (256,), "F32"),
            (f"{b}.attn_q_a.weight", (256, 128), "Q4_K"),
            (f"{b}.attn_q_a_norm.weight", (128,), "F32"),
            (f"{b}.attn_q_b.weight", (128, 8 * (nope + rope)), "Q4_0"),
            (f"{b}.attn_kv_a_mqa.weight", (256, rank + rope), "Q8_0"),
            (f"{b}.attn_kv_a_norm.weight", (rank,), "F32"),
            (f"{b}.attn_k_b.weight", (nope, rank, 8), "Q8_0"),
            (f"{b}.attn_v_b.weight", (rank, v, 8), "Q8_0"),
            (f"{b}.attn_output.weight", (8 * v, 256), "Q4_K"),
            (f"{b}.ffn_norm.weight", (256,), "F32"),
        ]
    hf = {
        "model_type": "deepseek_v3",
        "num_hidden_layers": 3,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 8,
        "kv_lora_rank": rank,
        "qk_rope_head_dim": rope,
        "qk_nope_head_dim": nope,
        "v_head_dim": v,
        "max_position_embeddings": 163840,
    }
    return Fixture("deepseek2", meta, tensors, hf)


def gpt_oss() -> Fixture:
    meta = _common("gpt-oss", 4, 256, 8, 2, 131072)
    meta |= {
        "gpt-oss.attention.key_length": 64,
        "gpt-oss.attention.value_length": 64,
        "gpt-oss.attention.sliding_window": 128,
        "gpt-oss.expert_count": 4,
        "gpt-oss.expert_used_count": 2,
        "gpt-oss.expert_feed_forward_length": 256,
    }
    tensors = _decoder(4, 256, 8, 2, 64, 64, 256, qtype="Q8_0", bias=True, experts=4)
    tensors = [(n, s, "MXFP4" if "_exps" in n else t) for n, s, t in tensors]
    tensors += [(f"blk.{i}.attn_sinks.weight", (8,), "F32") for i in range(4)]
    hf = {
        "model_type": "gpt_oss",
        "num_hidden_layers": 4,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 131072,
        "sliding_window": 128,
    }
    return Fixture("gpt-oss", meta, tensors, hf)


def mamba() -> Fixture:
    meta = {
        "mamba.block_count": 4,
        "mamba.context_length": 1048576,
        "mamba.embedding_length": 128,
        "mamba.feed_forward_length": 0,
        "mamba.attention.head_count": 0,
        "mamba.ssm.conv_kernel": 4,
        "mamba.ssm.inner_size": 256,
        "mamba.ssm.state_size": 16,
        "mamba.ssm.time_step_rank": 8,
        "mamba.attention.layer_norm_rms_epsilon": 1e-5,
        "general.file_type": 1,
    }
    tensors: list[Tensor] = [("token_embd.weight", (128, 256), "F16"), ("output_norm.weight", (128,), "F32")]
    for i in range(4):
        b = f"blk.{i}"
        tensors += [
            (f"{b}.attn_norm.weight", (128,), "F32"),
            (f"{b}.ssm_in.weight", (128, 512), "F16"),
            (f"{b}.ssm_conv1d.weight", (4, 256), "F32"),
            (f"{b}.ssm_conv1d.bias", (256,), "F32"),
            (f"{b}.ssm_x.weight", (256, 8 + 32), "F16"),
            (f"{b}.ssm_dt.weight", (8, 256), "F16"),
            (f"{b}.ssm_dt.bias", (256,), "F32"),
            (f"{b}.ssm_a", (16, 256), "F32"),
            (f"{b}.ssm_d", (256,), "F32"),
            (f"{b}.ssm_out.weight", (256, 128), "F16"),
        ]
    hf = {
        "model_type": "mamba",
        "num_hidden_layers": 4,
        "hidden_size": 128,
        "expand": 2,
        "state_size": 16,
        "conv_kernel": 4,
        "time_step_rank": 8,
    }
    return Fixture("mamba", meta, tensors, hf)


def qwen3next() -> Fixture:
    # Qwen3-Next as convert_hf_to_gguf writes it: ssm.state_size = linear key head dim, group_count = key heads,
    # time_step_rank = value heads, inner_size = value heads x value head dim.
    meta = _common("qwen3next", 8, 256, 8, 2, 262144)
    meta |= {
        "qwen3next.attention.key_length": 64,
        "qwen3next.attention.value_length": 64,
        "qwen3next.ssm.conv_kernel": 4,
        "qwen3next.ssm.state_size": 32,
        "qwen3next.ssm.group_count": 4,
        "qwen3next.ssm.time_step_rank": 8,
        "qwen3next.ssm.inner_size": 8 * 32,
        "qwen3next.full_attention_interval": 4,
        "qwen3next.expert_count": 4,
        "qwen3next.expert_used_count": 2,
    }
    tensors = _decoder(8, 256, 8, 2, 64, 64, 256, experts=4)
    hf = {
        "model_type": "qwen3_next",
        "num_hidden_layers": 8,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_position_embeddings": 262144,
        "full_attention_interval": 4,
        "linear_num_key_heads": 4,
        "linear_num_value_heads": 8,
        "linear_key_head_dim": 32,
        "linear_value_head_dim": 32,
        "linear_conv_kernel_dim": 4,
    }
    return Fixture("qwen3next", meta, tensors, hf)


def jamba() -> Fixture:
    # A hybrid marked per layer: head_count_kv 0 = a Mamba layer (llama.cpp's convention for jamba).
    kv = [0, 0, 0, 2, 0, 0, 0, 2]
    meta = _common("jamba", 8, 256, 8, kv, 262144)
    meta |= {
        "jamba.ssm.conv_kernel": 4,
        "jamba.ssm.inner_size": 512,
        "jamba.ssm.state_size": 16,
        "jamba.ssm.time_step_rank": 16,
    }
    tensors = _decoder(8, 256, 8, kv, 32, 32, 256)
    hf = {
        "model_type": "jamba",
        "num_hidden_layers": 8,
        "hidden_size": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "max_position_embeddings": 262144,
        "attn_layer_period": 4,
        "attn_layer_offset": 3,
        "mamba_expand": 2,
        "mamba_d_state": 16,
        "mamba_d_conv": 4,
    }
    return Fixture("jamba", meta, tensors, hf)


FAMILIES = {
    "llama": llama,
    "qwen2": qwen2,
    "qwen3": qwen3,
    "qwen3moe": qwen3moe,
    "gemma2": gemma2,
    "gemma3": gemma3,
    "deepseek2": deepseek2,
    "gpt-oss": gpt_oss,
    "mamba": mamba,
    "qwen3next": qwen3next,
    "jamba": jamba,
}

"""Parameter counts and weight bytes from configs (kvplan.weights).

Three levels: the counts the issue requires, hand-derived arithmetic (what-ifs, storage formats, tensor
parallelism), and an oracle: transformers' own ``sum(p.numel() for p in model.parameters())`` for every bundled
config it can build on the meta device (plus small synthetic configs of families we model but do not bundle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kvplan.errors import OptionError, UnknownDtypeError
from kvplan.readers.model import ReadModel
from kvplan.resolve import load_read_model
from kvplan.weights import (
    Part,
    Role,
    Scheme,
    WeightFormat,
    config_format,
    count_parameters,
    weight_bytes,
    weight_format,
)

from .oracle_hf import param_count

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "models"


def _load(tmp_path: Path, config: dict[str, Any], name: str = "model") -> ReadModel:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    return load_read_model(str(folder))


# ----------------------------------------------------------------------------------------------------------
# The counts the issue requires


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("meta-llama/Llama-2-7b-hf", 6_738_415_616),
        ("meta-llama/Llama-2-13b-hf", 13_015_864_320),
        ("meta-llama/Llama-2-70b-chat-hf", 68_976_648_192),
        ("meta-llama/Meta-Llama-3-8B", 8_030_261_248),
        ("mistralai/Mistral-7B-v0.1", 7_241_732_096),
        ("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704),
    ],
)
def test_issue_counts(model: str, params: int) -> None:
    count = count_parameters(load_read_model(model))
    assert count.total == params
    assert count.exact


def test_llama2_7b_breakdown() -> None:
    # 32 layers, hidden 4096, MLP 11008, vocab 32000, untied, MHA.
    count = count_parameters(load_read_model("meta-llama/Llama-2-7b-hf"))
    assert count.embedding == 32_000 * 4096
    assert count.lm_head == 32_000 * 4096
    assert count.attention == 32 * 4 * 4096 * 4096
    assert count.mlp == 32 * 3 * 4096 * 11_008
    assert count.norms == (32 * 2 + 1) * 4096
    assert count.moe == count.other == 0
    assert sum(n for _, n in count.breakdown()) == count.total == 6_738_415_616
    assert not count.tied_embeddings


def test_llama2_13b_with_one_kv_head() -> None:
    # Llama-2-13B: 40 layers, hidden 5120, 40 heads of 128. With G = 1 each layer's k_proj and v_proj shrink
    # from 5120 x 5120 (40 heads x 128 = 5120 rows) to 128 x 5120 (1 head x 128 rows):
    #   saved per layer = 2 x (5120 x 5120 - 128 x 5120) = 2 x 25,559,040 = 51,118,080
    #   saved in total  = 40 x 51,118,080 = 2,044,723,200
    #   13,015,864,320 - 2,044,723,200 = 10,971,141,120
    read = load_read_model("meta-llama/Llama-2-13b-hf")
    own = count_parameters(read)
    mqa = count_parameters(read, kv_heads=1)
    assert own.total - mqa.total == 40 * 2 * (5120 * 5120 - 128 * 5120) == 2_044_723_200
    assert mqa.total == 10_971_141_120
    assert mqa.attention == 40 * (2 * 5120 * 5120 + 2 * 128 * 5120)
    assert mqa.kv_heads == 1
    assert count_parameters(read, kv_heads=40).total == own.total


def test_kv_heads_what_if_is_validated() -> None:
    with pytest.raises(OptionError, match="does not divide"):
        count_parameters(load_read_model("meta-llama/Llama-2-13b-hf"), kv_heads=3)
    with pytest.raises(OptionError, match="no per-head K/V"):
        count_parameters(load_read_model("deepseek-ai/DeepSeek-V3"), kv_heads=1)


def test_fused_qkv_mha_what_if() -> None:
    # GPT-2 fuses q, k, v into c_attn (768 x 2304); with G = 1 it is 768 x (768 + 2 x 64) with its bias.
    read = load_read_model("openai-community/gpt2")
    own = count_parameters(read)
    mqa = count_parameters(read, kv_heads=1)
    assert own.total - mqa.total == 12 * 2 * (768 - 64) * (768 + 1)


# ----------------------------------------------------------------------------------------------------------
# Family rules, by hand


def test_tied_embeddings_from_key_and_family_default() -> None:
    smol = count_parameters(load_read_model("HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert smol.tied_embeddings
    assert smol.lm_head == 0
    # google/gemma-3-4b-it's text_config states neither tie_word_embeddings nor vocab_size: Gemma3TextConfig
    # ties them and has 262,208 rows.
    gemma = count_parameters(load_read_model("google/gemma-3-4b-it"))
    assert gemma.tied_embeddings
    assert gemma.lm_head == 0
    assert gemma.embedding == 262_208 * 2560
    assert any("text decoder only" in note for note in gemma.notes)


def test_qwen2_biases_on_qkv_only() -> None:
    count = count_parameters(load_read_model("Qwen/Qwen2.5-7B-Instruct"))
    biases = {t.name: t for t in count.tensors if t.name.endswith(".bias")}
    assert set(biases) == {"q_proj.bias", "k_proj.bias", "v_proj.bias"}
    assert biases["k_proj.bias"].shape == (4 * 128,)


def test_mixtral_experts() -> None:
    # 32 layers x (8 experts x 3 x 4096 x 14336 + router 8 x 4096)
    count = count_parameters(load_read_model("mistralai/Mixtral-8x7B-v0.1"))
    assert count.moe == 32 * (8 * 3 * 4096 * 14_336 + 8 * 4096)
    assert count.mlp == 0


def test_deepseek_dense_first_layers_and_mtp() -> None:
    count = count_parameters(load_read_model("deepseek-ai/DeepSeek-V3"))
    # first_k_dense_replace 3: three dense SwiGLU layers of 18432.
    assert count.mlp == 3 * 3 * 7168 * 18_432
    # 58 MoE layers: 256 experts + one shared expert of 2048, router 256 x 7168.
    assert count.moe == 58 * (257 * 3 * 7168 * 2048 + 256 * 7168)
    assert count.mtp > 0
    assert any("multi-token-prediction" in note for note in count.notes)
    assert count.total == 671_026_404_352  # the MTP layer is not in the total


def test_meta_params_json() -> None:
    # params.json (Meta's reference model) gives the same count as the Hugging Face config ...
    for folder, model in [
        ("meta-llama/Meta-Llama-3-8B", "meta-llama/Meta-Llama-3-8B"),
        ("mistralai/Mistral-7B-Instruct-v0.3", "mistralai/Mistral-7B-Instruct-v0.3"),
    ]:
        meta = count_parameters(load_read_model(str(CONFIGS / folder / "params.json")))
        assert meta.family == "meta_params"
        assert meta.total == count_parameters(load_read_model(model)).total
    # ... except where the Hugging Face conversion ties the output layer (Llama 3.2 1B), which params.json
    # cannot say: the reference model holds vocab x dim more.
    meta = count_parameters(load_read_model(str(CONFIGS / "meta-llama/Llama-3.2-1B/params.json")))
    assert meta.total == 1_235_814_400 + 128_256 * 2048
    assert any("tied" in note for note in meta.notes)


def test_meta_params_llama2_vocab_minus_one(tmp_path: Path) -> None:
    # Llama-2-7b's original params.json: vocab_size -1, FFN from multiple_of (int(2 x 4 x 4096 / 3) = 10922,
    # rounded up to 256 = 11008): the same 6,738,415,616 as the -hf conversion.
    params = {"dim": 4096, "multiple_of": 256, "n_heads": 32, "n_layers": 32, "norm_eps": 1e-05, "vocab_size": -1}
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    assert count_parameters(load_read_model(str(path))).total == 6_738_415_616


def test_chatglm3_remote_code_arithmetic() -> None:
    # modeling_chatglm.py: query_key_value 4096 -> 32 x 128 + 2 x 2 x 128 = 4608 with bias; dense 4096 x 4096;
    # dense_h_to_4h 4096 -> 2 x 13696; dense_4h_to_h 13696 -> 4096; two RMSNorms; 28 layers; embedding and
    # output layer of 65024 x 4096; final norm.
    layer = 4096 * 4608 + 4608 + 4096 * 4096 + 4096 * 2 * 13_696 + 13_696 * 4096 + 2 * 4096
    count = count_parameters(load_read_model("THUDM/chatglm3-6b"))
    assert count.total == 28 * layer + 2 * 65_024 * 4096 + 4096 == 6_243_584_000


def test_remote_code_families() -> None:
    # Families transformers 5.23 cannot build (remote code): counted from their published modeling files.
    # Baichuan2-13B: 40 x (4 x 5120^2 + 3 x 5120 x 13696 + 2 x 5120) + 2 x 125696 x 5120 + 5120.
    baichuan = count_parameters(load_read_model("baichuan-inc/Baichuan2-13B-Chat"))
    assert baichuan.total == 40 * (4 * 5120**2 + 3 * 5120 * 13_696 + 2 * 5120) + 2 * 125_696 * 5120 + 5120
    # InternLM2-7B: wqkv 4096 -> (32 + 2 x 8) x 128, wo, SwiGLU 14336, 32 layers, vocab 92544.
    internlm = count_parameters(load_read_model("internlm/internlm2-chat-7b"))
    layer = 4096 * 48 * 128 + 4096 * 4096 + 3 * 4096 * 14_336 + 2 * 4096
    assert internlm.total == 32 * layer + 2 * 92_544 * 4096 + 4096 == 7_737_708_544
    # Llama-3.3-Nemotron-Super-49B: per-layer block_configs (the model card's 49.9B).
    nas = count_parameters(load_read_model("nvidia/Llama-3_3-Nemotron-Super-49B-v1"))
    assert nas.total == 49_867_145_216
    assert all(c.exact for c in (nas, baichuan, internlm))


# ----------------------------------------------------------------------------------------------------------
# Weight bytes


def test_serving_dtype_is_two_bytes() -> None:
    read = load_read_model("meta-llama/Llama-2-7b-hf")  # a float32 checkpoint, served in fp16
    est = weight_bytes(read)
    assert est.bytes_total == 2 * 6_738_415_616
    assert est.dtype.startswith("float16")
    assert est.exact
    assert weight_bytes(read, dtype="float32").bytes_total == 4 * 6_738_415_616
    assert weight_bytes(read, dtype="bf16").bytes_total == 2 * 6_738_415_616
    assert weight_bytes(read, dtype="auto").bytes_total == 2 * 6_738_415_616


def test_explicit_int4_llama2_7b() -> None:
    # int4: 4 bit per value + one fp16 scale per 128 input values, for each decoder matrix; the embedding,
    # head and norms stay at 2 B.
    def int4(rows: int, cols: int) -> int:
        return rows * cols // 2 + rows * -(-cols // 128) * 2

    layer = 4 * int4(4096, 4096) + 2 * int4(11_008, 4096) + int4(4096, 11_008)
    rest = 2 * (2 * 32_000 * 4096 + 65 * 4096)
    est = weight_bytes(load_read_model("meta-llama/Llama-2-7b-hf"), dtype="int4")
    assert est.bytes_total == 32 * layer + rest == 3_864_010_752


def test_explicit_formats_per_matrix() -> None:
    assert weight_format("fp8").matrix_bytes(4096, 4096) == 4096 * 4096 + 4
    assert weight_format("int8").matrix_bytes(4096, 11_008) == 4096 * 11_008 + 4096 * 4
    assert weight_format("mxfp4").matrix_bytes(2880, 2880) == 2880 * (2880 // 32) * 17
    assert weight_format("nvfp4").matrix_bytes(4096, 4096) == 4096 * (4096 // 16) * 9 + 4
    with pytest.raises(UnknownDtypeError, match="int3"):
        weight_format("int3")


def test_gpt_oss_mxfp4_experts_only() -> None:
    # gpt-oss-20b: 24 layers x 32 experts x 3 matrices of 2880 x 2880 in MXFP4 (17 B per 32 values);
    # modules_to_not_convert keeps attention, the router, the embedding and the head in bf16.
    read = load_read_model("openai/gpt-oss-20b")
    count = count_parameters(read)
    expert_values = 24 * 32 * 3 * 2880 * 2880
    est = weight_bytes(read)
    assert est.bytes_total == expert_values // 32 * 17 + 2 * (count.total - expert_values) == 13_761_264_768
    assert dict(est.parts)[Part.ATTENTION] == 2 * count.attention


def test_fp8_block_scales() -> None:
    # DeepSeek-V3 kv_a_proj_with_mqa (576 x 7168): one fp32 scale per 128 x 128 block, ceil at the edge.
    fmt = config_format(load_read_model("deepseek-ai/DeepSeek-V3"))
    assert fmt is not None
    assert fmt.scheme is Scheme.FP8_BLOCK
    assert fmt.matrix_bytes(576, 7168) == 576 * 7168 + 5 * 56 * 4
    est = weight_bytes(load_read_model("deepseek-ai/DeepSeek-V3"))
    count = est.params
    parts = dict(est.parts)
    assert parts[Part.EMBEDDING] == 2 * count.embedding  # tables stay bf16
    assert parts[Part.NORMS] == 2 * count.norms
    routers = sum(t.params for t in count.tensors if t.role is Role.ROUTER)
    assert routers == 58 * 256 * 7168


def test_fp8_per_tensor_static_devstral() -> None:
    # Devstral-2-123B: fp8 with weight_block_size null and a static activation scheme: per matrix one fp32
    # weight scale and one fp32 input scale. 88 layers x 7 matrices (q, k, v, o, gate, up, down).
    read = load_read_model("mistralai/Devstral-2-123B-Instruct")
    count = count_parameters(read)
    matrices = 88 * (12_288 * 12_288 + 2 * 1024 * 12_288 + 12_288 * 12_288 + 3 * 28_672 * 12_288)
    est = weight_bytes(read)
    assert est.bytes_total == matrices + 88 * 7 * 8 + 2 * (count.total - matrices)


def test_awq_packing_yi() -> None:
    # AutoAWQ GEMM, 4 bit, group 128, on a 7168 x 7168 matrix: qweight 7168 x 7168 / 2 B; qzeros (56 groups x
    # 7168 / 8 int32) = 56 x 896 x 4 B; scales 56 x 7168 fp16.
    fmt = config_format(load_read_model("01-ai/Yi-34B-Chat-4bits"))
    assert fmt is not None
    assert fmt.scheme is Scheme.AWQ
    assert fmt.matrix_bytes(7168, 7168) == 7168 * 7168 // 2 + 56 * 896 * 4 + 56 * 7168 * 2


def test_gptq_and_unknown_quant_methods(tmp_path: Path) -> None:
    base = json.loads((CONFIGS / "meta-llama/Llama-2-7b-hf/config.json").read_text())
    gptq = {**base, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}}
    fmt = config_format(_load(tmp_path, gptq, "gptq"))
    assert fmt is not None
    assert fmt.scheme is Scheme.GPTQ
    # qweight (4096 x 4 / 32, 11008) int32, qzeros (32 groups, 11008 x 4 / 32) int32, scales (32, 11008) fp16,
    # g_idx (4096,) int32.
    assert fmt.matrix_bytes(11_008, 4096) == 512 * 11_008 * 4 + 32 * 1376 * 4 + 32 * 11_008 * 2 + 4096 * 4
    odd = {**base, "quantization_config": {"quant_method": "bitsandbytes"}}
    est = weight_bytes(_load(tmp_path, odd, "bnb"))
    assert not est.exact
    assert est.bytes_total == 2 * 6_738_415_616


def test_bytes_per_gpu_replication() -> None:
    # Llama-2-13B with one KV head, TP 8: every rank keeps the whole K/V projections (one head cannot be
    # split) and the norms; the rest is split 8 ways.
    est = weight_bytes(load_read_model("meta-llama/Llama-2-13b-hf"), kv_heads=1)
    kv = 40 * 2 * 128 * 5120 * 2
    norms = (40 * 2 + 1) * 5120 * 2
    assert est.kv_bytes == ((1, kv),)
    assert est.replicated_bytes == norms
    assert est.bytes_per_gpu(8) == norms + kv + -(-(est.bytes_total - norms - kv) // 8)
    assert est.bytes_per_gpu(1) == est.bytes_total
    with pytest.raises(OptionError, match=r"^tensor_parallel_size:"):
        est.bytes_per_gpu(0)


def test_weight_format_keeps_non_matrices_16_bit() -> None:
    fmt = WeightFormat(Scheme.INT4_GROUP, "int4", 2, 4, 128)
    count = count_parameters(load_read_model("Qwen/Qwen2.5-0.5B-Instruct"))
    for tensor in count.tensors:
        if tensor.role in (Role.TABLE, Role.VECTOR, Role.ROUTER):
            assert fmt.tensor_bytes(tensor) == 2 * tensor.params


# ----------------------------------------------------------------------------------------------------------
# The oracle: transformers on the meta device


def _check(read: ReadModel, expected: int) -> None:
    count = count_parameters(read)
    if count.exact:
        assert count.total == expected
    else:
        assert abs(count.total - expected) <= expected // 100, (count.total, expected, count.notes)


# The bundled models' counts are checked in tests/test_oracle.py, with the cache, from one build of each.

B = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_hidden_layers": 3,
    "intermediate_size": 96,
    "vocab_size": 100,
    "max_position_embeddings": 128,
}

#: Families we model but do not bundle, as small configs (the pure SSMs carry a nominal attention head
#: because the layout reader asks every config for one).
SYNTHETIC: dict[str, dict[str, Any]] = {
    "gptj": {"model_type": "gptj", "n_embd": 64, "n_head": 4, "n_layer": 2, "vocab_size": 100, "rotary_dim": 8},
    "codegen": {"model_type": "codegen", "n_embd": 64, "n_head": 4, "n_layer": 2, "vocab_size": 100, "rotary_dim": 8},
    "gpt_neo": {
        "model_type": "gpt_neo",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_layers": 2,
        "vocab_size": 100,
        "max_position_embeddings": 128,
        "attention_types": [[["global", "local"], 1]],
    },
    "opt": {**B, "model_type": "opt", "ffn_dim": 96, "word_embed_proj_dim": 64},
    "mpt": {"model_type": "mpt", "d_model": 64, "n_heads": 4, "n_layers": 2, "vocab_size": 100, "max_seq_len": 128},
    "phi": {**B, "model_type": "phi"},
    "stablelm": {**B, "model_type": "stablelm", "num_key_value_heads": 2},
    "stablelm_qk_parallel": {
        **B,
        "model_type": "stablelm",
        "num_key_value_heads": 2,
        "qk_layernorm": True,
        "use_parallel_residual": True,
        "use_qkv_bias": True,
    },
    "starcoder2": {**B, "model_type": "starcoder2", "num_key_value_heads": 2},
    "granite": {**B, "model_type": "granite", "num_key_value_heads": 2, "attention_bias": True, "mlp_bias": True},
    "olmo2": {**B, "model_type": "olmo2", "num_key_value_heads": 2},
    "gemma": {**B, "model_type": "gemma", "num_key_value_heads": 2, "head_dim": 32},
    "qwen2_moe": {
        **B,
        "model_type": "qwen2_moe",
        "num_key_value_heads": 2,
        "num_experts": 4,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
        "decoder_sparse_step": 2,
        "mlp_only_layers": [0],
    },
    "qwen3_5_moe": {
        **B,
        "model_type": "qwen3_5_moe_text",
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_experts": 4,
        "moe_intermediate_size": 32,
        "shared_expert_intermediate_size": 48,
        "linear_num_key_heads": 2,
        "linear_num_value_heads": 4,
        "linear_key_head_dim": 16,
        "linear_value_head_dim": 16,
        "linear_conv_kernel_dim": 4,
        "layer_types": ["linear_attention", "full_attention", "linear_attention"],
    },
    "gemma3n": {
        **B,
        "model_type": "gemma3n_text",
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "intermediate_size": [96, 96, 128, 128],
        "num_kv_shared_layers": 2,
        "layer_types": ["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        "sliding_window": 32,
        "hidden_size_per_layer_input": 8,
        "vocab_size_per_layer_input": 90,
        "altup_num_inputs": 3,
        "laurel_rank": 4,
        "activation_sparsity_pattern": [0.0, 0.0, 0.0, 0.0],
    },
    "falcon_rw_style": {
        "model_type": "falcon",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 100,
        "parallel_attn": False,
        "alibi": True,
        "bias": True,
        "multi_query": False,
    },
    "jamba": {
        **B,
        "model_type": "jamba",
        "num_hidden_layers": 4,
        "num_key_value_heads": 2,
        "num_experts": 4,
        "expert_layer_period": 2,
        "expert_layer_offset": 1,
        "attn_layer_period": 2,
        "attn_layer_offset": 1,
        "mamba_d_state": 8,
        "mamba_expand": 2,
        "mamba_d_conv": 4,
    },
    "nemotron_h_moe": {
        "model_type": "nemotron_h",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "num_hidden_layers": 4,
        "hybrid_override_pattern": "M*-E",
        "vocab_size": 100,
        "intermediate_size": 96,
        "mamba_num_heads": 8,
        "mamba_head_dim": 16,
        "n_groups": 2,
        "ssm_state_size": 16,
        "conv_kernel": 4,
        "n_routed_experts": 4,
        "moe_intermediate_size": 32,
        "moe_shared_expert_intermediate_size": 48,
        "num_experts_per_tok": 2,
    },
    "deepseek_v3_biased": {
        "model_type": "deepseek_v3",
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "num_hidden_layers": 4,
        "intermediate_size": 96,
        "moe_intermediate_size": 32,
        "n_routed_experts": 4,
        "n_shared_experts": 2,
        "first_k_dense_replace": 1,
        "kv_lora_rank": 32,
        "q_lora_rank": 48,
        "qk_nope_head_dim": 16,
        "qk_rope_head_dim": 8,
        "v_head_dim": 16,
        "vocab_size": 100,
        "attention_bias": True,
    },
    **{
        family: {
            "model_type": family,
            "num_attention_heads": 1,
            "num_key_value_heads": 1,
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "vocab_size": 100,
            "state_size": 16,
            "expand": 2,
            "conv_kernel": 4,
        }
        for family in ("mamba", "falcon_mamba")
    },
    "mamba2": {
        "model_type": "mamba2",
        "num_attention_heads": 1,
        "num_key_value_heads": 1,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "vocab_size": 100,
        "num_heads": 8,
        "head_dim": 16,
        "n_groups": 2,
        "state_size": 16,
        "expand": 2,
        "conv_kernel": 4,
    },
    # Estimates (families not modelled in detail), at their real sizes: CohereForAI/c4ai-command-r-v01 and
    # adept/persimmon-8b-base.
    "command_r_estimate": {
        "model_type": "cohere",
        "hidden_size": 8192,
        "intermediate_size": 22_528,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "num_hidden_layers": 40,
        "vocab_size": 256_000,
        "hidden_act": "silu",
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "use_qk_norm": False,
    },
    "persimmon_8b_estimate": {
        "model_type": "persimmon",
        "hidden_size": 4096,
        "intermediate_size": 16_384,
        "num_attention_heads": 64,
        "num_hidden_layers": 36,
        "vocab_size": 262_144,
        "hidden_act": "relu2",
        "qk_layernorm": True,
        "max_position_embeddings": 16_384,
        "tie_word_embeddings": False,
    },
}


@pytest.mark.oracle
@pytest.mark.parametrize("name", list(SYNTHETIC))
def test_oracle_synthetic(name: str, tmp_path: Path) -> None:
    config = SYNTHETIC[name]
    read = _load(tmp_path, config)
    assert count_parameters(read).exact == (not name.endswith("_estimate"))
    _check(read, param_count(config))


def test_nemotron_h_block_list_counts_as_its_pattern() -> None:
    """Nemotron-3 states layers_block_type instead of hybrid_override_pattern (NemotronHConfig._list_to_pattern):
    both spellings of one model count the same weights; a list of the wrong length is a ConfigError, not a crash
    (found by tests/test_fuzz.py)."""
    import json as _json

    from kvplan.errors import ConfigError
    from kvplan.readers.config import read_model_config
    from kvplan.weights import weight_bytes

    base = {
        "model_type": "nemotron_h",
        "num_attention_heads": 8,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "hidden_size": 512,
        "intermediate_size": 2048,
        "mamba_num_heads": 16,
        "mamba_head_dim": 64,
        "n_groups": 2,
        "ssm_state_size": 16,
        "conv_kernel": 4,
        "expand": 2,
        "n_routed_experts": 8,
        "n_shared_experts": 1,
        "moe_intermediate_size": 256,
        "moe_shared_expert_intermediate_size": 256,
        "num_experts_per_tok": 2,
        "max_position_embeddings": 8192,
        "vocab_size": 1000,
        "torch_dtype": "bfloat16",
    }
    blocks = ["mamba", "moe", "mamba", "attention", "mamba", "mlp", "mamba", "attention"]
    listed = read_model_config(_json.loads(_json.dumps({**base, "layers_block_type": blocks})), "listed")
    patterned = read_model_config({**base, "num_hidden_layers": 8, "hybrid_override_pattern": "MEM*M-M*"}, "patterned")
    assert weight_bytes(listed).bytes_total == weight_bytes(patterned).bytes_total
    odd = read_model_config({**base, "layers_block_type": [*blocks[:-1], "mamba"]}, "odd")
    odd.config.keys["layers_block_type"] = ["mamba", "gated_delta"] * 4  # what no rule knows
    with pytest.raises(ConfigError, match="layers_block_type"):
        weight_bytes(odd)

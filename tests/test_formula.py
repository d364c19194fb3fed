"""The arithmetic: figures the issue requires, each recomputed here from first principles."""

from __future__ import annotations

import pytest

from kvplan.errors import OptionError
from kvplan.formula import estimate, g_spectrum, resolve_types, valid_kv_heads, with_kv_heads
from kvplan.layout import CacheLayout, attention_layer
from kvplan.resolve import load_model


def gqa_model(layers: int, q: int, kv: int, d: int, dtype: str = "float16") -> CacheLayout:
    return CacheLayout(
        model=f"test-{layers}x{q}/{kv}x{d}",
        family="llama",
        layers=tuple(attention_layer(i, q, kv, d) for i in range(layers)),
        hidden_size=q * d,
        dtype=dtype,
    )


def textbook(layers: int, kv: int, d: int, seq: int, batch: int, nbytes: int) -> int:
    return 2 * layers * kv * d * seq * batch * nbytes


def test_llama2_7b_figures() -> None:
    model = gqa_model(32, 32, 32, 128)
    fp16 = resolve_types(model, "float16")
    assert estimate(model, 1, 1, fp16).bytes_per_token == 524_288 == textbook(32, 32, 128, 1, 1, 2)
    assert estimate(model, 4096, 1, fp16).total_bytes == 2_147_483_648
    assert estimate(model, 4096, 10, fp16).total_bytes == 21_474_836_480
    gqa = with_kv_heads(model, 8)
    assert estimate(gqa, 1, 1, fp16).bytes_per_token == 131_072
    assert estimate(gqa, 4096, 1, fp16).total_bytes == 536_870_912


@pytest.mark.parametrize(
    ("seq", "mha", "gqa"),
    [(8192, 21_474_836_480, 2_684_354_560), (131_072, 343_597_383_680, 42_949_672_960)],
)
def test_llama3_70b_shape_mha_vs_gqa(seq: int, mha: int, gqa: int) -> None:
    model = gqa_model(80, 64, 8, 128)
    fp16 = resolve_types(model, "float16")
    assert estimate(model, seq, 1, fp16).total_bytes == gqa == textbook(80, 8, 128, seq, 1, 2)
    assert estimate(with_kv_heads(model, 64), seq, 1, fp16).total_bytes == mha == textbook(80, 64, 128, seq, 1, 2)


def test_real_configs_bytes_per_token() -> None:
    assert estimate(load_model("meta-llama/Llama-2-70b"), 1).bytes_per_token == 327_680 == 2 * 80 * 8 * 128 * 2
    assert estimate(load_model("tiiuae/falcon-7b"), 1).bytes_per_token == 8_192 == 2 * 32 * 1 * 64 * 2


@pytest.mark.parametrize(("model", "ratio"), [("meta-llama/Llama-3.2-3B-Instruct", 3), ("Qwen/Qwen3-8B", 4)])
def test_compression_of_real_models(model: str, ratio: int) -> None:
    layout = load_model(model)
    spectrum = {p.kv_heads: p for p in g_spectrum(layout, 1024, 1, resolve_types(layout))}
    own = layout.kv_heads
    assert own is not None
    assert spectrum[own].compression == ratio == layout.query_heads // own
    assert spectrum[own].is_model
    mha = spectrum[layout.query_heads]
    assert mha.total_bytes == ratio * spectrum[own].total_bytes


def test_sixteen_heads_spectrum() -> None:
    model = gqa_model(2, 16, 4, 64)
    points = g_spectrum(model, 100, 1, resolve_types(model))
    assert [(p.kv_heads, p.compression) for p in points] == [(16, 1), (4, 4), (1, 16)]
    assert [p.name for p in points] == ["MHA", "GQA", "MQA"]


def test_fp8_is_exactly_half_of_fp16() -> None:
    model = gqa_model(32, 32, 8, 128)
    for seq, batch in ((1, 1), (4096, 3), (131_071, 7)):
        fp16 = estimate(model, seq, batch, resolve_types(model, "float16")).total_bytes
        fp8 = estimate(model, seq, batch, resolve_types(model, "fp8")).total_bytes
        assert fp16 == 2 * fp8


@pytest.mark.parametrize(
    ("name", "nbytes"),
    [("fp32", 4), ("float16", 2), ("bf16", 2), ("fp8_e4m3", 1), ("fp8_e5m2", 1), ("int8", 1), ("float32", 4)],
)
def test_plain_dtypes(name: str, nbytes: int) -> None:
    model = gqa_model(3, 8, 2, 64)
    assert estimate(model, 10, 2, resolve_types(model, name)).total_bytes == textbook(3, 2, 64, 10, 2, nbytes)


def test_auto_is_the_serving_dtype() -> None:
    assert resolve_types(gqa_model(1, 1, 1, 8, "bfloat16")).k.name == "bfloat16"
    # An fp32 checkpoint is served in 16 bits (vLLM --dtype auto); transformers keeps fp32.
    fp32 = gqa_model(1, 1, 1, 8, "float32")
    assert resolve_types(fp32).k.name == "float16"
    assert resolve_types(fp32, keep_fp32=True).k.name == "float32"


def test_kv_heads_must_divide_query_heads() -> None:
    model = gqa_model(2, 12, 4, 64)
    assert valid_kv_heads(model) == (1, 2, 3, 4, 6, 12)
    with pytest.raises(OptionError, match="5 does not divide the 12 query heads"):
        with_kv_heads(model, 5)
    with pytest.raises(OptionError, match="positive"):
        with_kv_heads(model, 0)


def test_explanation_multiplies_out_and_reads_like_the_textbook() -> None:
    from kvplan.render import product_text

    est = estimate(load_model("meta-llama/Llama-2-70b"), 4096, 1)
    (line,) = est.explanation.lines
    assert product_text(line.factors, line.result) == (
        "2 x 80 layers x 8 KV heads x 128 head_dim x 4,096 tokens x 1 seq x 2 B = 1,342,177,280 B (1.25 GiB)"
    )


def test_bad_ctx_and_batch() -> None:
    model = gqa_model(1, 1, 1, 8)
    with pytest.raises(OptionError, match=r"^ctx:"):
        estimate(model, 0, 1)
    with pytest.raises(OptionError, match=r"^batch:"):
        estimate(model, 1, -2)

"""The oracle: `kvplan size M --engine hf --ctx S --batch B --json` equals, to the byte, the sum of nbytes of
every tensor transformers' own cache holds after a forward pass on the meta device (keys, values, conv and
recurrent states, indexer keys), for S shorter and longer than the model's sliding window / chunk; the ideal
figure equals it for models whose layers are all plain full attention; and kvplan's parameter count equals
transformers' for every bundled model it can build."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.resolve import load_read_model
from kvplan.weights import count_parameters

from .oracle_hf import FIXTURES, build, bundled_ids, forward_cache, image_states, reference, reference_for

pytestmark = pytest.mark.oracle
runner = CliRunner()


def kvplan_json(model_id: str, seq: int, batch: int, engine: str, *extra: str) -> dict[str, object]:
    args = [
        "size",
        model_id,
        "--engine",
        engine,
        "--ctx",
        str(seq),
        "--batch",
        str(batch),
        "--json",
        "--kv-cache-dtype",
        "bfloat16",
        *extra,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


def check_weights(model_id: str, expected: int) -> None:
    """kvplan's parameter count equals transformers' sum(p.numel()) (within 1% where kvplan says it estimates)."""
    count = count_parameters(load_read_model(model_id))
    if count.exact:
        assert count.total == expected, (model_id, count.total, expected)
    else:
        assert abs(count.total - expected) <= expected // 100, (model_id, count.total, expected, count.notes)


@pytest.mark.parametrize("model_id", bundled_ids())
def test_transformers_agrees_on_the_cache_and_the_weights(model_id: str) -> None:
    """One test per bundled model, so transformers builds it once (whichever worker runs it): the hf engine's
    total equals the cache's nbytes at every point, the ideal total too where every layer is plain attention,
    and the parameter count equals transformers'."""
    ref = reference(model_id)
    if not ref.supported:
        pytest.skip(ref.reason)
    for (seq, batch), nbytes in ref.cache_nbytes:
        assert kvplan_json(model_id, seq, batch, "hf")["total_bytes"] == nbytes, ("hf", model_id, seq, batch)
    # transformers broadcasts Falcon-40B's K/V to all 128 heads (the hf engine's rule); ideal keeps 8.
    plain = kvplan_json(model_id, 8, 1, "ideal")["attention_kinds"] == ["full_attention"]
    if plain and model_id != "tiiuae/falcon-40b":
        for (seq, batch), nbytes in ref.cache_nbytes:
            assert kvplan_json(model_id, seq, batch, "ideal")["total_bytes"] == nbytes, ("ideal", model_id, seq)
    check_weights(model_id, ref.param_count)


def test_hf_keeps_an_fp32_checkpoint_in_fp32() -> None:
    """gpt2's config says float32: transformers caches fp32, kvplan's hf engine under auto says the same."""
    ref = reference("openai-community/gpt2", "float32")
    for (seq, batch), nbytes in ref.cache_nbytes:
        result = runner.invoke(
            app, ["size", "openai-community/gpt2", "--engine", "hf", "--ctx", str(seq), "--batch", str(batch), "--json"]
        )
        assert json.loads(result.stdout)["total_bytes"] == nbytes


#: Fixture folders of families the catalog does not bundle, each checked against transformers the same way.
ORACLE_FIXTURES = [
    "falcon_mamba_7b",
    "nemotron3_block_list",
    "lfm2_short_conv",
    "gemma4_dense",
    "gemma4_moe",
    "gemma4_e_shared",
    "jamba_period",
    "mamba1",
]


@pytest.mark.parametrize("case", ORACLE_FIXTURES)
def test_hf_engine_matches_transformers_on_family_fixtures(case: str) -> None:
    raw = json.loads((FIXTURES / case / "config.json").read_text())
    # Built in the config's own dtype, as from_pretrained would (kvplan's hf engine keeps an fp32 config fp32).
    ref = reference(case, raw.get("torch_dtype") or raw.get("dtype") or "bfloat16")
    assert ref.supported, ref.reason
    path = str(FIXTURES / case)
    for (seq, batch), nbytes in ref.cache_nbytes:
        assert kvplan_json(path, seq, batch, "hf")["total_bytes"] == nbytes, (case, seq, batch)


@pytest.mark.parametrize("case", ["deepseek_v4_flash", "deepseek_v4_default_pattern"])
def test_hf_engine_matches_transformers_on_deepseek_v4(case: str) -> None:
    """Around both compress rates and the window: partial windows (buffers), closed ones (overlap), past 128, and
    past 1,024 with both rates' last windows partial (1,031 = 8 x 128 + 7 = 257 x 4 + 3)."""
    raw = json.loads((FIXTURES / case / "config.json").read_text())
    at = [(3, 1), (5, 2), (127, 1), (130, 1), (263, 2), (1031, 1)]
    ref = reference_for(case, raw, at)
    assert ref.supported, ref.reason
    for (seq, batch), nbytes in ref.cache_nbytes:
        assert kvplan_json(str(FIXTURES / case), seq, batch, "hf")["total_bytes"] == nbytes, (case, seq, batch)


def test_hf_engine_matches_transformers_on_llama_vision_cross_attention() -> None:
    """Cross-attention layers hold the image tokens (6,404 per image), not the text: 0, 1 and 2 images."""
    case = "llama32_vision_cross"
    raw = json.loads((FIXTURES / case / "config.json").read_text())
    model, why = build(raw, "bfloat16")
    assert model is not None, why
    path = str(FIXTURES / case)
    for images, seq, batch in [(0, 8, 1), (1, 37, 1), (2, 5, 2)]:
        extra = image_states(model, images, 6404, batch) if images else None
        nbytes = forward_cache(model, seq, batch, extra)
        data = kvplan_json(path, seq, batch, "hf", "--images", str(images))
        assert data["total_bytes"] == nbytes, (images, seq, batch)

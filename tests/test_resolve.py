"""Model resolution: path, bundled catalog, the local Hugging Face cache, the Hub (never reached in tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvplan import errors
from kvplan.resolve import hub_cache_dir, load_model, resolve

from .hf_cache import put_in_hf_cache

SMALL = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 256,
    "max_position_embeddings": 1024,
}


def test_hub_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "h"))
    assert hub_cache_dir() == str(tmp_path / "h" / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "c"))
    assert hub_cache_dir() == str(tmp_path / "c")


def test_bundled_catalog_wins_without_network() -> None:
    source = resolve("meta-llama/Llama-2-70b")
    assert source.origin == "bundled"
    assert source.model_id == "meta-llama/Llama-2-70b-chat-hf"
    assert source.note == "same architecture as meta-llama/Llama-2-70b"


def test_bundled_lookup_is_case_insensitive() -> None:
    assert resolve("QWEN/qwen3-8b").model_id == "Qwen/Qwen3-8B"


def test_config_from_local_hf_cache() -> None:
    put_in_hf_cache(Path(hub_cache_dir()), "acme/tiny-llm", {"config.json": SMALL})
    source = resolve("acme/tiny-llm")
    assert source.origin == "hf-cache"
    layout = load_model("acme/tiny-llm")
    assert (layout.num_layers, layout.kv_heads, layout.head_dim) == (2, 2, 64)


def test_params_json_only_repo_from_cache() -> None:
    params = {"dim": 512, "n_layers": 3, "n_heads": 8, "n_kv_heads": 2, "vocab_size": 1000}
    put_in_hf_cache(Path(hub_cache_dir()), "acme/original-format", {"params.json": params})
    layout = load_model("acme/original-format")
    assert layout.family == "meta_params"
    assert (layout.num_layers, layout.kv_heads, layout.head_dim) == (3, 2, 64)


def test_revision_is_looked_up_in_the_cache() -> None:
    put_in_hf_cache(Path(hub_cache_dir()), "acme/revs", {"config.json": SMALL}, revision="v2")
    assert resolve("acme/revs", revision="v2").origin == "hf-cache"
    with pytest.raises(errors.OfflineError):
        resolve("acme/revs")  # main is not cached and HF_HUB_OFFLINE=1


def test_offline_and_not_cached() -> None:
    with pytest.raises(errors.OfflineError) as info:
        resolve("acme/not-here")
    assert "HF_HUB_OFFLINE" in str(info.value)
    assert "local config.json" in str(info.value)


def test_missing_path_is_a_file_error(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigFileError, match="no such file"):
        resolve(str(tmp_path / "nope" / "config.json"))


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigFileError, match=r"no config\.json, params\.json or \.gguf file"):
        resolve(str(tmp_path))


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "config.json"
    bad.write_text('{"model_type": "llama",\n "num_hidden_layers": }')
    with pytest.raises(errors.ConfigFileError, match="line 2 column"):
        resolve(str(bad))


def test_not_a_repo_id() -> None:
    with pytest.raises(errors.ModelNotFoundError, match="not a valid Hub id"):
        resolve("not a model")

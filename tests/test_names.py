"""Naming a bundled model: ids, aliases and short names, case-insensitive; ambiguity and did-you-mean come from
the catalog before any network call."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from kvplan import catalog, errors, resolve
from kvplan.cli import app

runner = CliRunner()


def no_network(*args: object, **kwargs: object) -> object:
    raise AssertionError("the Hub was called")


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE unset, and any Hub call fails the test: what is answered here is answered offline."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(resolve, "_from_hub", no_network)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)


@pytest.mark.parametrize(
    ("typed", "model_id"),
    [
        ("gpt-oss-120b", "openai/gpt-oss-120b"),
        ("GPT-OSS-20B", "openai/gpt-oss-20b"),
        ("llama-2-70b", "meta-llama/Llama-2-70b-chat-hf"),  # Meta's repo name, an alias of the -chat-hf config
        ("Llama-3.1-8B-Instruct", "meta-llama/Meta-Llama-3.1-8B"),
        ("deepseek-v3", "deepseek-ai/DeepSeek-V3"),
        ("gpt2", "openai-community/gpt2"),
        # the start of names up to a hyphen, when every name it starts is the same model
        ("mixtral-8x7b", "mistralai/Mixtral-8x7B-v0.1"),
        ("qwen3-next-80b", "Qwen/Qwen3-Next-80B-A3B"),
    ],
)
def test_short_names_resolve_offline(online: None, typed: str, model_id: str) -> None:
    source = resolve.resolve(typed)
    assert (source.origin, source.model_id) == ("bundled", model_id)


def test_short_name_through_an_alias_says_which(online: None) -> None:
    assert resolve.resolve("llama-2-70b").note == "same architecture as meta-llama/Llama-2-70b"
    assert resolve.resolve("gpt-oss-120b").note == ""


def test_a_name_with_another_org_is_not_a_short_name(online: None) -> None:
    """unsloth/gpt-oss-120b is another Hub repo: it must not become the bundled openai/gpt-oss-120b."""
    assert catalog.lookup("unsloth/gpt-oss-120b") is None
    with pytest.raises(AssertionError, match="the Hub was called"):
        resolve.resolve("unsloth/gpt-oss-120b")


@pytest.mark.parametrize(
    ("typed", "candidates"),
    [
        ("gpt-oss", ("openai/gpt-oss-120b", "openai/gpt-oss-20b")),
        ("gemma-3", ("google/gemma-3-27b-it", "google/gemma-3-4b-it")),
        ("phi-3", ("microsoft/Phi-3-mini-128k-instruct", "microsoft/Phi-3-mini-4k-instruct")),
    ],
)
def test_ambiguous_short_names_list_every_candidate(online: None, typed: str, candidates: tuple[str, ...]) -> None:
    with pytest.raises(errors.AmbiguousModelError) as info:
        resolve.resolve(typed)
    assert info.value.candidates == candidates
    for name in candidates:
        assert name in str(info.value)


def test_unknown_short_name_gets_did_you_mean_without_the_network(online: None) -> None:
    with pytest.raises(errors.ModelNotFoundError) as info:
        resolve.resolve("gpt-oss-12b")
    message = str(info.value)
    assert "did you mean openai/gpt-oss-120b" in message
    assert "org/name" in message


def test_suggestions_rank_the_closest_first() -> None:
    assert catalog.suggest("qwen3-8")[0] == "Qwen/Qwen3-8B"
    assert catalog.suggest("meta-llama/Llama-2-70B-chat")[0] == "meta-llama/Llama-2-70b-chat"
    assert catalog.suggest("zzzz") == []


def test_hub_id_that_fails_offline_lists_similar_bundled_names() -> None:
    with pytest.raises(errors.OfflineError) as info:
        resolve.resolve("openai/gpt-oss-120")
    assert "bundled models with similar names: openai/gpt-oss-120b" in str(info.value)


def test_revision_on_a_bundled_model_does_not_say_it_is_not_bundled() -> None:
    result = runner.invoke(app, ["size", "gpt-oss-120b", "--revision", "main"])
    assert result.exit_code == 2
    assert "not bundled" not in result.stderr
    assert "'openai/gpt-oss-120b': revision 'main' is not in the local Hugging Face cache" in result.stderr
    assert "drop --revision" in result.stderr


def test_cli_exit_code_and_one_line_for_ambiguity() -> None:
    result = runner.invoke(app, ["size", "gpt-oss"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "openai/gpt-oss-120b, openai/gpt-oss-20b" in result.stderr

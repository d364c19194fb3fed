"""Shared test setup: every test runs offline, with HF_HOME and kvplan's user config dir in tmp paths."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

FIXTURES = Path(__file__).parent / "fixtures" / "configs"

# Every property test draws the same cases on every run and in CI (no seed that only one run sees); loaded here,
# before any test module builds its @settings, so the order modules are imported in does not matter.
settings.register_profile("kvplan", derandomize=True)
settings.load_profile("kvplan")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point HF_HOME and the user config dir at tmp folders and forbid the Hub: no test touches the network."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HF_HOME", str(home / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KVPLAN_CONFIG_DIR", str(home / "kvplan-config"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "xdg"))
    monkeypatch.delenv("KVPLAN_DEBUG", raising=False)
    # pytest-xdist workers inherit COLUMNS=80 from their launcher; a test that wants a width sets it itself.
    monkeypatch.delenv("COLUMNS", raising=False)
    # An empty Ollama store: a developer's own ~/.ollama never answers a test.
    monkeypatch.setenv("OLLAMA_MODELS", str(home / "ollama"))
    return home


def fixture_cases() -> list[str]:
    return sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def load_expect(case: str) -> dict[str, object]:
    data: dict[str, object] = json.loads((FIXTURES / case / "expect.json").read_text())
    return data

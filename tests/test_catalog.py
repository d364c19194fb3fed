"""The bundled catalog: every model sized through the CLI, aliases resolve, provenance is listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from kvplan import catalog
from kvplan.cli import app
from kvplan.resolve import resolve

ROOT = Path(__file__).parent.parent
MODELS = ROOT / "configs" / "models"
runner = CliRunner()


def bundled_ids() -> list[str]:
    return sorted(e.model_id for e in catalog.bundled_models().values())


@pytest.mark.parametrize("model_id", bundled_ids())
def test_size_json_for_every_bundled_model(model_id: str) -> None:
    result = runner.invoke(app, ["size", model_id, "--ctx", "4096", "--batch", "2", "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["source"]["origin"] == "bundled"
    assert data["total_bytes"] == data["ideal"]["total_bytes"] > 0
    assert sum(b["total_bytes"] for b in data["breakdown"]) == data["total_bytes"]


def test_every_alias_points_at_a_bundled_model() -> None:
    table = yaml.safe_load((MODELS / "aliases.yaml").read_text())["aliases"]
    bundled = {m.lower() for m in bundled_ids()}
    for alias, target in table.items():
        assert target.lower() in bundled, (alias, target)
        assert alias.lower() not in bundled, f"{alias} shadows a bundled model"
        assert resolve(alias).model_id == target


def test_the_alias_reader_reads_what_yaml_reads() -> None:
    """kvplan reads aliases.yaml line by line (no PyYAML import on the planning path): the same table."""
    from kvplan.catalog import _alias_table

    table = yaml.safe_load((MODELS / "aliases.yaml").read_text())["aliases"]
    assert dict(_alias_table().values()) == table
    assert set(_alias_table()) == {alias.lower() for alias in table}


def test_sources_list_every_bundled_file() -> None:
    sources = (MODELS / "SOURCES.md").read_text()
    for path in MODELS.glob("*/*/*.json"):
        listed = f"{path.parent.parent.name}--{path.parent.name}/{path.name}"
        assert listed in sources, listed


def test_bundled_files_are_the_shared_originals() -> None:
    """The one test that reads ../shared (skipped when it is not beside the checkout): configs/models keeps the
    shared corpus byte for byte, and every row of the GPU reference copy in tests/fixtures is the shared row of
    that name (the shared table may have gained rows since)."""
    shared = ROOT.parent / "shared"
    if not (shared / "hf-configs").is_dir():
        pytest.skip(f"{shared} is not beside this checkout")
    for path in (shared / "hf-configs").glob("*/*.json"):
        org, name = path.parent.name.split("--", 1)
        assert (MODELS / org / name / path.name).read_bytes() == path.read_bytes(), path
    reference = shared / "reference" / "gpus.tsv"
    if reference.is_file():
        originals = {line.split("\t", 1)[0]: line for line in reference.read_text(encoding="utf-8").splitlines()}
        copy = (ROOT / "tests" / "fixtures" / "gpus_reference.tsv").read_text(encoding="utf-8").splitlines()
        for line in copy:
            assert originals.get(line.split("\t", 1)[0]) == line, line.split("\t", 1)[0]

"""The public API and the wheel: configs/ ships inside it and is read with importlib.resources."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kvplan

ROOT = Path(__file__).parent.parent


def test_dir_matches_all() -> None:
    public = {name for name in dir(kvplan) if not name.startswith("_")}
    submodules = {p.stem for p in (ROOT / "kvplan").glob("*.py")}
    assert public - (submodules - set(kvplan.__all__)) == set(kvplan.__all__) - {"__version__"}


@pytest.mark.packaging
def test_wheel_contains_bundled_data(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("kvplan-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    bundled = {
        f"kvplan/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
        for p in (ROOT / "configs").rglob("*")
        if p.is_file()
    }
    assert bundled <= names, sorted(bundled - names)[:5]
    assert "kvplan/configs/models/meta-llama/Llama-2-70b-chat-hf/config.json" in names
    assert "kvplan/configs/models/aliases.yaml" in names
    assert "kvplan/configs/models/SOURCES.md" in names

"""The public API and the wheel: configs/ ships inside it and is read with importlib.resources."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

import kvplan

ROOT = Path(__file__).parent.parent


def export_problems(module: ModuleType) -> list[str]:
    """What is wrong with a package's exports: a name in __all__ it cannot give, or dir() disagreeing."""
    names: list[str] = list(module.__all__)
    problems = [f"{name}: in __all__ but not importable" for name in names if not hasattr(module, name)]
    if dir(module) != sorted(names):
        problems.append(f"dir() {dir(module)} != sorted(__all__)")
    if len(set(names)) != len(names):
        problems.append("__all__ repeats a name")
    return problems


def test_dir_matches_all() -> None:
    assert export_problems(kvplan) == []


def test_dir_matches_all_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kvplan, "__all__", [*kvplan.__all__, "made_up_name"])
    assert export_problems(kvplan) == ["made_up_name: in __all__ but not importable"]


def test_one_version_source() -> None:
    """pyproject.toml takes its version from kvplan/__init__.py; `kvplan --version` prints that one."""
    from typer.testing import CliRunner

    from kvplan.cli import app

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "kvplan/__init__.py"
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"kvplan {kvplan.__version__}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", kvplan.__version__)
    assert f"## {kvplan.__version__}" in (ROOT / "CHANGELOG.md").read_text()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("kvplan-*.whl")
    return built


USER_SNIPPET = """
import kvplan

report = kvplan.size("meta-llama/Llama-2-70b", ctx=4096, batch=1)
reveal_type(report.estimate.bytes_per_token)
per_token: str = report.estimate.bytes_per_token
"""


@pytest.mark.packaging
def test_users_mypy_sees_the_types_of_the_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    """py.typed ships: a user's mypy, against the wheel installed in a fresh venv, knows the API's types (and so
    catches a wrong one) instead of treating kvplan as Any."""
    pytest.importorskip("mypy")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with zipfile.ZipFile(wheel) as whl:
        whl.extractall(site)  # a wheel is a zip of the site-packages tree: this is what pip would lay down
    # Dependencies (typer, pydantic ...) from this interpreter, after the wheel on the path.
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "zz_deps.pth").write_text("\n".join(deps) + "\n")
    user = tmp_path / "user.py"
    user.write_text(USER_SNIPPET)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--python-executable", str(python), str(user)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert re.search(r'Revealed type is "(builtins\.)?int"', done.stdout), done.stdout
    assert 'Incompatible types in assignment (expression has type "int", variable has type "str")' in done.stdout
    assert "missing library stubs or py.typed marker" not in done.stdout


@pytest.mark.packaging
def test_wheel_contains_bundled_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "kvplan/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), sorted(n for n in names if "dist-info" in n)
    bundled = {
        f"kvplan/configs/{p.relative_to(ROOT / 'configs').as_posix()}"
        for p in (ROOT / "configs").rglob("*")
        if p.is_file()
    }
    assert bundled <= names, sorted(bundled - names)[:5]
    assert "kvplan/configs/models/meta-llama/Llama-2-70b-chat-hf/config.json" in names
    assert "kvplan/configs/models/aliases.yaml" in names
    assert "kvplan/configs/models/SOURCES.md" in names

"""The bundled data: model configs (configs/models/<org>/<name>/config.json), aliases, GPU catalog.

The data ships inside the wheel as ``kvplan/configs`` and is read with :mod:`importlib.resources`; in a source
checkout it is the repository's top-level ``configs/``. Adding a model is adding a folder with its config.json
(or Meta params.json); adding a name users type for it is a line in ``models/aliases.yaml``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from kvplan.errors import CatalogFileError, ConfigFileError

CONFIG_NAMES = ("config.json", "params.json")


@cache
def data_root() -> Traversable:
    """The bundled configs/ folder: inside the installed package, or beside it in a source checkout."""
    packaged = files("kvplan").joinpath("configs")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


def load_json_text(text: str, where: str) -> Any:
    """Parse a config's text. Python's json accepts the bare ``Infinity`` some HF configs carry (Nemotron-H)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigFileError(where, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err


@dataclass(frozen=True)
class BundledModel:
    """One model of the bundled catalog."""

    model_id: str
    #: config.json, or params.json where the folder has no config.json.
    file_name: str

    @property
    def location(self) -> str:
        return f"kvplan:configs/models/{self.model_id}/{self.file_name}"

    def read_text(self) -> str:
        path = data_root().joinpath("models", *self.model_id.split("/"), self.file_name)
        return str(path.read_text("utf-8"))


@cache
def bundled_models() -> dict[str, BundledModel]:
    """Every bundled model by lower-cased id."""
    root = data_root().joinpath("models")
    found: dict[str, BundledModel] = {}
    for org in sorted(root.iterdir(), key=lambda p: p.name.lower()):
        if not org.is_dir():
            continue
        for repo in sorted(org.iterdir(), key=lambda p: p.name.lower()):
            names = [n for n in CONFIG_NAMES if repo.joinpath(n).is_file()]
            if repo.is_dir() and names:
                model_id = f"{org.name}/{repo.name}"
                found[model_id.lower()] = BundledModel(model_id, names[0])
    return found


@cache
def aliases() -> dict[str, str]:
    """Alias (lower-cased) -> bundled model id, from configs/models/aliases.yaml."""
    import yaml

    where = "kvplan:configs/models/aliases.yaml"
    try:
        data = yaml.safe_load(data_root().joinpath("models", "aliases.yaml").read_text("utf-8"))
    except yaml.YAMLError as err:  # pragma: no cover - the bundled file is tested
        raise CatalogFileError(where, [str(err)]) from err
    table = data.get("aliases") if isinstance(data, dict) else None
    if not isinstance(table, dict):  # pragma: no cover - the bundled file is tested
        raise CatalogFileError(where, ["aliases: expected a mapping of alias -> model id"])
    return {str(k).lower(): str(v) for k, v in table.items()}


def lookup(name: str) -> tuple[BundledModel, str | None] | None:
    """The bundled model for an id or alias (case-insensitive), and the alias used, if any."""
    key = name.strip().lower()
    models = bundled_models()
    if key in models:
        return models[key], None
    target = aliases().get(key)
    if target is not None and target.lower() in models:
        return models[target.lower()], name
    return None

"""The bundled data: model configs (configs/models/<org>/<name>/config.json), aliases, GPU catalog.

The data ships inside the wheel as ``kvplan/configs`` and is read with :mod:`importlib.resources`; in a source
checkout it is the repository's top-level ``configs/``. Adding a model is adding a folder with its config.json
(or Meta params.json); adding a name users type for it is a line in ``models/aliases.yaml``.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

from kvplan.errors import AmbiguousModelError, CatalogFileError, ConfigFileError
from kvplan.limits import MAX_JSON_DEPTH

CONFIG_NAMES = ("config.json", "params.json")


@cache
def data_root() -> Traversable:
    """The bundled configs/ folder: inside the installed package, or beside it in a source checkout; through
    importlib.resources only when the package is not on a file system (a zip), which costs a planning command
    about 10 ms of imports otherwise."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs"):
        if folder.is_dir():
            return folder
    from importlib.resources import files

    return files("kvplan").joinpath("configs")


def load_json_text(text: str, where: str) -> Any:
    """Parse a config's text. Python's json accepts the bare ``Infinity`` some HF configs carry (Nemotron-H).

    Nesting deeper than MAX_JSON_DEPTH and integers past CPython's int-string conversion limit (4,300 digits,
    sys.get_int_max_str_digits) are errors naming the file and the line.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigFileError(where, f"not valid JSON: {err.msg} at line {err.lineno} column {err.colno}") from err
    except RecursionError:
        raise ConfigFileError(where, f"JSON nested more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError:  # an integer literal past the conversion limit
        limit = sys.get_int_max_str_digits()
        raise ConfigFileError(where, f"{_long_number(text)}, past the {limit:,} digits Python converts") from None
    if _depth_exceeds(data, MAX_JSON_DEPTH):
        raise ConfigFileError(where, f"JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return data


def _long_number(text: str) -> str:
    """Where the first overlong integer literal is, as ``an integer of N digits at line L``."""
    limit = sys.get_int_max_str_digits()
    match = re.search(rf"\d{{{limit + 1},}}", text) if limit else None
    if match is None:
        return "an integer too long to convert"
    line = text.count("\n", 0, match.start()) + 1
    return f"an integer of {len(match.group()):,} digits at line {line}"


def _depth_exceeds(data: Any, limit: int) -> bool:
    """Whether lists / objects nest more than ``limit`` levels (iterative: no recursion on hostile input)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


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
    return {key: target for key, (_, target) in _alias_table().items()}


#: One line of aliases.yaml's mapping: two spaces, a Hub id, ": ", a Hub id (an optional trailing comment).
_ALIAS_LINE = re.compile(r"  ([A-Za-z0-9][\w.-]*/[\w.-]+): ([A-Za-z0-9][\w.-]*/[\w.-]+)(?:\s+#.*)?")


@cache
def _alias_table() -> dict[str, tuple[str, str]]:
    """Alias (lower-cased) -> (the alias as written in aliases.yaml, bundled model id).

    The bundled file is one flat mapping under ``aliases:``, so it is read line by line rather than through
    PyYAML, which would cost a planning command 15-20 ms of imports for a 50-line table; any other line is an
    error (tests/test_catalog.py checks the result equals yaml.safe_load's)."""
    where = "kvplan:configs/models/aliases.yaml"
    table: dict[str, tuple[str, str]] = {}
    lines = data_root().joinpath("models", "aliases.yaml").read_text("utf-8").splitlines()
    body = [(n, line) for n, line in enumerate(lines, 1) if line.strip() and not line.lstrip().startswith("#")]
    if not body or body[0][1] != "aliases:":  # pragma: no cover - the bundled file is tested
        raise CatalogFileError(where, ["aliases: expected a mapping of alias -> model id"])
    for n, line in body[1:]:
        match = _ALIAS_LINE.fullmatch(line)
        if match is None:  # pragma: no cover - the bundled file is tested
            raise CatalogFileError(where, [f"line {n}: expected '  <hub id>: <bundled model id>', got {line!r}"])
        table[match[1].lower()] = (match[1], match[2])
    return table


@dataclass(frozen=True)
class CatalogName:
    """A name that reaches a bundled model: its own id, or an alias of it."""

    name: str
    #: The bundled model it stands for.
    entry: BundledModel

    @property
    def short(self) -> str:
        """The name without its organisation, lower-cased: ``gpt-oss-120b`` for ``openai/gpt-oss-120b``."""
        return self.name.rsplit("/", 1)[-1].lower()

    @property
    def is_alias(self) -> bool:
        return self.name != self.entry.model_id


@cache
def names() -> tuple[CatalogName, ...]:
    """Every bundled id and every alias that points at a bundled model, ids first."""
    models = bundled_models()
    own = [CatalogName(entry.model_id, entry) for entry in models.values()]
    extra = [
        CatalogName(name, models[target.lower()])
        for name, target in _alias_table().values()
        if target.lower() in models
    ]
    return (*own, *extra)


def lookup(name: str) -> tuple[BundledModel, str | None] | None:
    """The bundled model for an id, an alias or a short name (all case-insensitive), and the alias it went
    through, if any. A short name is a name without its organisation (``gpt-oss-120b``, ``llama-2-70b``), or
    the start of one up to a hyphen (``mixtral-8x7b``) when every name it starts stands for the same model.

    Raises :class:`AmbiguousModelError` when a short name stands for more than one bundled model.
    """
    key = name.strip().lower()
    if not key:
        return None
    models = bundled_models()
    if key in models:
        return models[key], None
    alias = _alias_table().get(key)
    if alias is not None and alias[1].lower() in models:
        return models[alias[1].lower()], alias[0]
    if "/" in key:
        return None
    found = _by_short_name(key)
    if not found:
        return None
    targets = sorted({n.entry.model_id for n in found}, key=str.lower)
    if len(targets) > 1:
        raise AmbiguousModelError(name.strip(), targets)
    via = next((n for n in found if not n.is_alias), found[0])
    return via.entry, via.name if via.is_alias else None


def _by_short_name(key: str) -> list[CatalogName]:
    """Names whose short form is ``key``; failing that, those whose short form starts with ``key`` + hyphen."""
    exact = [n for n in names() if n.short == key]
    if exact:
        return exact
    return [n for n in names() if n.short.startswith(key) and n.short[len(key) : len(key) + 1] in ("-", "_")]


def suggest(name: str, limit: int = 5) -> list[str]:
    """Bundled ids and aliases close to ``name`` (difflib over whole names and over short names), best first."""
    key = name.strip().lower()
    if not key:
        return []
    by_full = {n.name.lower(): n.name for n in names()}
    by_short: dict[str, str] = {}
    for n in names():
        by_short.setdefault(n.short, n.name)
    short = key.rsplit("/", 1)[-1]
    import difflib

    found = [by_full[m] for m in difflib.get_close_matches(key, list(by_full), n=limit, cutoff=0.6)]
    found += [by_short[m] for m in difflib.get_close_matches(short, list(by_short), n=limit, cutoff=0.6)]
    found += [n.name for n in names() if short in n.short]
    return list(dict.fromkeys(found))[:limit]

"""Where a model's config comes from, in this order:

1. a path: a config.json or params.json file, or a folder holding one;
2. the bundled catalog (offline, no huggingface_hub import), including the aliases users type and short names
   without the organisation (``gpt-oss-120b``); a name without an organisation goes no further than the local
   cache, so a typo gets "did you mean" from the catalog without a network call;
3. the local Hugging Face cache (HF_HUB_CACHE / HF_HOME), without touching the network;
4. the Hub through huggingface_hub: config.json only, or params.json when the repo has none (Meta's original
   repos such as meta-llama/Llama-2-70b). ``revision``, ``token`` / HF_TOKEN and HF_HUB_OFFLINE are respected.

Only those two small JSON files are ever fetched: no weights, and never remote code.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvplan import catalog
from kvplan.catalog import CONFIG_NAMES, load_json_text
from kvplan.errors import ConfigFileError, GatedModelError, ModelNotFoundError, OfflineError
from kvplan.layout import CacheLayout
from kvplan.readers.config import read_config

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


@dataclass(frozen=True)
class ModelSource:
    """A resolved config: what the user asked for, what we found, and where."""

    requested: str
    model_id: str
    origin: str  # "path" | "bundled" | "hf-cache" | "hub"
    location: str
    raw: Any = field(repr=False)
    note: str = ""

    def describe(self) -> str:
        """Where the config came from, in a few words."""
        text = {
            "path": f"local file {self.location}",
            "bundled": f"bundled config {self.model_id}",
            "hf-cache": f"Hugging Face cache {self.location}",
            "hub": f"Hugging Face Hub {self.model_id}",
        }[self.origin]
        return f"{text}, {self.note}" if self.note else text


def load_model(model: str, *, revision: str | None = None, token: str | None = None) -> CacheLayout:
    """Resolve ``model`` and read its config into a layout."""
    source = resolve(model, revision=revision, token=token)
    return read_config(source.raw, source.model_id, source.describe())


def resolve(model: str, *, revision: str | None = None, token: str | None = None) -> ModelSource:
    """Find a model's config: path, bundled catalog, local HF cache, then the Hub."""
    text = model.strip()
    if not text:
        raise ModelNotFoundError(model, "empty model name; pass a Hub id (org/name) or a path")
    path = Path(text).expanduser()
    if path.exists():
        return _from_path(text, path)
    if _looks_like_path(text):
        raise ConfigFileError(text, "no such file or folder (pass a config.json / params.json or a folder)")
    bundled = catalog.lookup(text)
    if bundled is not None:
        entry, alias = bundled
        if revision is not None:
            return _bundled_at_revision(alias or entry.model_id, revision, token)
        note = f"same architecture as {alias}" if alias else ""
        raw = load_json_text(entry.read_text(), entry.location)
        return ModelSource(text, entry.model_id, "bundled", entry.location, raw, note)
    if not _REPO_ID.match(text):
        raise ModelNotFoundError(
            text,
            "not a file, not a bundled model (`kvplan models` lists them) and not a valid Hub id (org/name)",
        )
    if "/" not in text:
        return _outside_catalog(text, revision)
    try:
        cached = _from_hf_cache(text, revision)
        if cached is not None:
            return cached
        return _from_hub(text, revision, token)
    except (ModelNotFoundError, OfflineError) as err:
        close = catalog.suggest(text)
        if close:
            err.add_hint(f"bundled models with similar names: {', '.join(close)}")
        raise


def _bundled_at_revision(repo_id: str, revision: str, token: str | None) -> ModelSource:
    """A bundled model at a named revision: only the Hub (or its local cache) keeps revisions."""
    cached = _from_hf_cache(repo_id, revision)
    if cached is not None:
        return cached
    try:
        return _from_hub(repo_id, revision, token)
    except OfflineError as err:
        raise OfflineError(repo_id, revision=revision, bundled=True) from err


def _outside_catalog(text: str, revision: str | None) -> ModelSource:
    """A name without an organisation that the catalog does not know. It never goes to the network: a Hub
    model needs its org/name id; legacy top-level ids (gpt2) already in the local cache are still found."""
    cached = _from_hf_cache(text, revision)
    if cached is not None:
        return cached
    close = catalog.suggest(text)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelNotFoundError(
        text,
        f"not a bundled model ({hint}`kvplan models` lists them and their short names); "
        "a model on the Hugging Face Hub needs its full id, org/name",
    )


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.endswith(".json")
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def _from_path(requested: str, path: Path) -> ModelSource:
    if path.is_dir():
        for name in CONFIG_NAMES:
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise ConfigFileError(str(path), "folder holds no config.json or params.json")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigFileError(str(path), f"cannot be read: {err}") from err
    name = path.parent.name if path.name in CONFIG_NAMES else path.stem
    return ModelSource(requested, name or requested, "path", str(path), load_json_text(text, str(path)))


def hub_cache_dir() -> str:
    """The huggingface_hub cache folder, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _read_cached(requested: str, repo_id: str, file_path: str, origin: str, revision: str | None) -> ModelSource:
    note = f"revision {revision}" if revision else ""
    text = Path(file_path).read_text("utf-8")
    return ModelSource(requested, repo_id, origin, file_path, load_json_text(text, file_path), note)


def _from_hf_cache(repo_id: str, revision: str | None) -> ModelSource | None:
    from huggingface_hub import try_to_load_from_cache

    for name in CONFIG_NAMES:
        found = try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir(), revision=revision)
        if isinstance(found, str):
            return _read_cached(repo_id, repo_id, found, "hf-cache", revision)
    return None


def _from_hub(repo_id: str, revision: str | None, token: str | None) -> ModelSource:
    if hub_offline():
        raise OfflineError(repo_id, "HF_HUB_OFFLINE is set")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    for name in CONFIG_NAMES:
        try:
            path = hf_hub_download(repo_id, name, revision=revision, token=token, cache_dir=hub_cache_dir())
        except GatedRepoError as err:
            raise GatedModelError(repo_id) from err
        except RepositoryNotFoundError as err:
            raise ModelNotFoundError(
                repo_id,
                "no such repository on the Hugging Face Hub (if it is private, log in or pass --token); "
                "`kvplan models` lists the bundled models, or pass a local config.json",
            ) from err
        except RevisionNotFoundError as err:
            raise ModelNotFoundError(repo_id, f"revision {revision!r} does not exist") from err
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
            raise OfflineError(repo_id, "the Hub could not be reached") from err
        except EntryNotFoundError:
            continue  # no config.json: try Meta's params.json
        except HfHubHTTPError as err:
            raise ModelNotFoundError(repo_id, f"the Hub answered: {err}") from err
        return _read_cached(repo_id, repo_id, path, "hub", revision)
    raise ModelNotFoundError(repo_id, "the repository has neither config.json nor params.json")

"""Where a model's config comes from, in this order:

1. a path: a config.json or params.json file, a GGUF file (or one split of a set), or a folder holding one;
2. ``ollama:NAME[:TAG]``: the local Ollama store (:mod:`kvplan.local_models`);
3. the bundled catalog (offline, no huggingface_hub import), including the aliases users type and short names
   without the organisation (``gpt-oss-120b``); a name without an organisation goes no further than the
   Ollama store and the local cache, so a typo gets "did you mean" from the catalog without a network call;
4. ``NAME:TAG`` (a colon is never in a Hub id), or a bare name the Ollama store holds: the Ollama store;
5. the local Hugging Face cache (HF_HUB_CACHE / HF_HOME), without touching the network;
6. the Hub through huggingface_hub: config.json only, or params.json when the repo has none (Meta's original
   repos such as meta-llama/Llama-2-70b). ``revision``, ``token`` / HF_TOKEN and HF_HUB_OFFLINE are respected.

Only those two small JSON files are ever fetched: no weights, and never remote code. Of a GGUF only the header
is read (:mod:`kvplan.readers.gguf`).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvplan import catalog, local_models
from kvplan.catalog import CONFIG_NAMES, load_json_text
from kvplan.errors import (
    AmbiguousModelError,
    ConfigFileError,
    FileReadError,
    GatedModelError,
    HubCacheError,
    HubError,
    KvplanError,
    ModelNotFoundError,
    OfflineError,
    OptionError,
    Param,
    spell,
)
from kvplan.files import expand_user, path_kind, read_text
from kvplan.layout import CacheLayout
from kvplan.limits import HUB_TIMEOUT_S, MAX_FILE_BYTES
from kvplan.readers.config import read_checked, read_model_config, refuse_not_understood
from kvplan.readers.model import ReadModel

_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_DEFAULT_ENDPOINT = "https://huggingface.co"


@dataclass(frozen=True)
class ModelSource:
    """A resolved config: what the user asked for, what we found, and where."""

    requested: str
    model_id: str
    origin: str  # "path" | "bundled" | "hf-cache" | "hub" | "gguf" | "ollama"
    location: str
    raw: Any = field(repr=False)
    note: str = ""
    #: The GGUF file(s) of a GGUF model (all splits, in order); empty for a JSON config.
    files: tuple[str, ...] = ()

    @property
    def is_gguf(self) -> bool:
        return bool(self.files)

    def describe(self) -> str:
        """Where the config came from, in a few words."""
        splits = f" ({len(self.files)} splits)" if len(self.files) > 1 else ""
        text = {
            "path": f"local file {self.location}",
            "bundled": f"bundled config {self.model_id}",
            "hf-cache": f"Hugging Face cache {self.location}",
            "hub": f"Hugging Face Hub {self.model_id}",
            "gguf": f"GGUF file {self.location}{splits}",
            "ollama": f"Ollama model {self.model_id} (GGUF blob {self.location})",
        }[self.origin]
        return f"{text}, {self.note}" if self.note else text


def read_layout(source: ModelSource, *, images: int | None = None, strict: bool = False) -> CacheLayout:
    """Read a resolved model into a layout (:func:`read_model`'s layout)."""
    return read_model(source, images=images, strict=strict).layout


def read_model(source: ModelSource, *, images: int | None = None, strict: bool = False) -> ReadModel:
    """Read a resolved model: its GGUF header(s), or its config.json / params.json, into a layout and the config
    its weights are counted from (empty for a GGUF: the file lists its tensors).

    ``images``: images per sequence for cross-attention models (a GGUF's language model has none);
    ``strict``: refuse a model the reader did not fully understand (NotUnderstoodError) instead of warning."""
    if not source.is_gguf:
        return read_checked(source.raw, source.model_id, source.describe(), images=images, strict=strict)
    from kvplan.readers.gguf import read_model as read_gguf
    from kvplan.readers.gguf_layout import read_gguf_layout

    if images:
        raise OptionError(Param.IMAGES, f"{source.model_id} is a GGUF language model: it has no cross-attention layers")
    layout = read_gguf_layout(read_gguf(source.files), source.model_id, source.describe())
    if strict:
        refuse_not_understood(source.model_id, layout.warnings)
    return ReadModel(layout)


def load_model(model: str, *, revision: str | None = None, token: str | None = None) -> CacheLayout:
    """Resolve ``model`` and read its config (or GGUF header) into a layout."""
    return load_read_model(model, revision=revision, token=token).layout


def load_read_model(model: str, *, revision: str | None = None, token: str | None = None) -> ReadModel:
    """Resolve ``model`` and read it: its layout and the config its weights are counted from."""
    return read_model(resolve(model, revision=revision, token=token))


def load_bundled(model: str) -> ReadModel:
    """A bundled model (id or alias), read from the catalog only: never a path, the cache or the network.

    For self-checks, whose answers must not change with the folder they run in.
    """
    found = catalog.lookup(model)
    if found is None:
        raise ModelNotFoundError(model, "not in the bundled catalog (`kvplan models` lists it)")
    entry, _ = found
    return read_model_config(load_json_text(entry.read_text(), entry.location), entry.model_id, entry.location)


def resolve(model: str, *, revision: str | None = None, token: str | None = None) -> ModelSource:
    """Find a model's config: path, bundled catalog, local HF cache, then the Hub."""
    text = model.strip()
    if not text:
        raise ModelNotFoundError(model, "empty model name; pass a Hub id (org/name) or a path")
    if text.startswith("ollama:"):
        return _from_ollama(text)
    path = _existing_path(text)
    if path is not None:
        return _from_path(text, path)
    if _looks_like_path(text):
        raise ConfigFileError(
            text, "no such file or folder (pass a config.json / params.json, a .gguf file or a folder)"
        )
    try:
        bundled = catalog.lookup(text)
    except AmbiguousModelError as err:
        if "/" not in text and local_models.plain_name(text) and local_models.find_ollama(text) is not None:
            err.add_hint(f"the Ollama store has {text}: pass ollama:{text} for it")
        raise
    if bundled is not None:
        entry, alias = bundled
        if revision is not None:
            return _bundled_at_revision(alias or entry.model_id, revision, token)
        note = f"same architecture as {alias}" if alias else ""
        raw = load_json_text(entry.read_text(), entry.location)
        return ModelSource(text, entry.model_id, "bundled", entry.location, raw, note)
    if local_models.looks_like_ollama(text):
        return _from_ollama(text)
    if "/" not in text and local_models.plain_name(text):
        # A bare name (``llama3``) is an Ollama name when the local store holds it.
        found = local_models.find_ollama(text)
        if found is not None:
            return _ollama_source(found)
    _check_repo_id(text)
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


def _existing_path(text: str) -> Path | None:
    """The path ``text`` names when something is there; None when nothing is (or it cannot be a path)."""
    path = expand_user(text) if text.startswith("~") else Path(text)
    try:
        os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        if err.errno == errno.ENAMETOOLONG and not _looks_like_path(text):
            return None  # not a path: a (too long) Hub id, which _check_repo_id reports
        if err.errno == errno.ENOTDIR:
            return None
        path_kind(path)  # raises FileReadError naming the problem (permissions, too long, loops)
    except ValueError:
        return None  # an embedded NUL: not a path, and not a Hub id either
    return path


def _from_ollama(text: str) -> ModelSource:
    found = local_models.find_ollama(text)
    if found is None:
        raise local_models.missing_ollama(text)
    return _ollama_source(found)


def _ollama_source(found: local_models.OllamaModel) -> ModelSource:
    name = found.name.removeprefix("ollama:")
    files = local_models.split_set(found.blob)
    return ModelSource(found.name, name, "ollama", str(found.blob), None, files=tuple(map(str, files)))


def _gguf_source(requested: str, files: tuple[Path, ...]) -> ModelSource:
    stem = local_models.model_stem(files[0])
    return ModelSource(requested, stem, "gguf", str(files[0]), None, files=tuple(map(str, files)))


def _looks_like_path(text: str) -> bool:
    return (
        text.startswith((".", "/", "~"))
        or text.endswith((".json", ".gguf"))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def _check_repo_id(text: str) -> None:
    """huggingface_hub's own rules for a repo id (length, characters, ``--``, ``..``, ``.git``), before any call."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils._validators import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError as err:
        reason = str(err).split(":")[0].rstrip(".")
        raise ModelNotFoundError(
            text,
            f"not a file, not a bundled model (`kvplan models` lists them) and not a valid Hub id: {reason}",
        ) from err


def _check_revision(revision: str) -> None:
    """A revision names a branch, tag or commit; it must not climb out of the cache folder."""
    parts = revision.split("/")
    if not revision.strip() or revision.startswith("/") or ".." in parts or "" in parts or "\x00" in revision:
        raise OptionError(Param.REVISION, f"{revision!r} is not a branch, tag or commit name")


def _from_path(requested: str, path: Path) -> ModelSource:
    if path_kind(path) == "a folder":
        for name in CONFIG_NAMES:
            candidate = path / name
            try:
                os.stat(candidate)
            except FileNotFoundError:
                continue
            except OSError:
                pass  # read_text below names the problem
            path = candidate
            break
        else:
            ggufs = local_models.folder_gguf(path)
            if ggufs is None:
                raise ConfigFileError(str(path), "folder holds no config.json, params.json or .gguf file")
            return _gguf_source(requested, ggufs)
    elif local_models.is_gguf_name(path) or (path_kind(path) is None and _has_gguf_magic(path)):
        return _gguf_source(requested, local_models.split_set(path))
    text = read_text(path)
    name = path.parent.name if path.name in CONFIG_NAMES else path.stem
    return ModelSource(requested, name or requested, "path", str(path), load_json_text(text, str(path)))


def _has_gguf_magic(path: Path) -> bool:
    from kvplan.readers.gguf import is_gguf

    return is_gguf(path)


def hub_cache_dir() -> str:
    """The huggingface_hub cache folder, read from the environment at call time (HF_HUB_CACHE, HF_HOME)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


# ----------------------------------------------------------------------------------------------------------
# The local Hugging Face cache


def _read_cached(repo_id: str, file_path: Path, origin: str, revision: str | None) -> ModelSource:
    """A config file of the HF cache; anything wrong with it is a HubCacheError naming the entry."""
    note = f"revision {revision}" if revision else ""
    try:
        raw = load_json_text(read_text(file_path), str(file_path))
    except FileReadError as err:
        raise HubCacheError(repo_id, str(file_path), err.problem) from err
    except ConfigFileError as err:
        raise HubCacheError(repo_id, str(file_path), err.message.removeprefix(f"{file_path}: ")) from err
    return ModelSource(repo_id, repo_id, origin, str(file_path), raw, note)


def _from_hf_cache(repo_id: str, revision: str | None) -> ModelSource | None:
    """The config in the local HF cache, or None when it is not there.

    The layout is huggingface_hub's (file_download.try_to_load_from_cache): models--org--name/refs/<revision>
    holds a commit hash, snapshots/<commit>/<file> links to blobs/<etag>. It is read here rather than through
    try_to_load_from_cache so that a broken entry is an error naming it, not a silent miss and a network call.
    """
    if revision is not None:
        _check_revision(revision)
    repo = Path(hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    if not repo.is_dir():
        return None
    commit = _cached_commit(repo_id, repo, revision or "main")
    if commit is None:
        return None
    for name in CONFIG_NAMES:
        file_path = repo / "snapshots" / commit / name
        if file_path.is_symlink() and not file_path.exists():
            raise HubCacheError(repo_id, str(file_path), "is a dangling link (its blob is missing)")
        if os.path.lexists(file_path):
            return _read_cached(repo_id, file_path, "hf-cache", revision)
    return None


def _cached_commit(repo_id: str, repo: Path, revision: str) -> str | None:
    if _COMMIT.match(revision):
        return revision
    ref = repo / "refs" / revision
    if not os.path.lexists(ref):
        return None
    try:
        text = read_text(ref, limit=4096).strip()
    except FileReadError as err:
        raise HubCacheError(repo_id, str(ref), err.problem) from err
    if not _COMMIT.match(text):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise HubCacheError(repo_id, str(ref), f"holds {shown!r}, not a 40-digit commit hash")
    return text


# ----------------------------------------------------------------------------------------------------------
# The Hub


def hub_endpoint() -> str:
    """HF_ENDPOINT (read at call time, so a test or a mirror can set it), checked to be an http(s) URL."""
    value = os.environ.get("HF_ENDPOINT")
    if value is None or not value.strip():
        return _DEFAULT_ENDPOINT
    text = value.strip()
    try:
        from urllib.parse import urlsplit

        parts = urlsplit(text)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in text)
        ok = ok and (parts.port is None or parts.port > 0)  # .port raises ValueError for a bad port
    except ValueError:
        ok = False
    if not ok:
        raise OptionError(
            Param.HF_ENDPOINT,
            f"{value!r} is not an http(s) URL; set it to the Hub or a mirror (https://huggingface.co), or unset it",
        )
    return text.rstrip("/")


def hub_timeout() -> float:
    """Seconds to wait for the Hub: HF_HUB_ETAG_TIMEOUT when it is a positive number, else HUB_TIMEOUT_S."""
    try:
        value = float(os.environ.get("HF_HUB_ETAG_TIMEOUT", ""))
    except ValueError:
        return HUB_TIMEOUT_S
    return value if 0 < value < 3600 else HUB_TIMEOUT_S


def _network_advice(endpoint: str) -> str:
    """What to do when the Hub cannot be reached; names HF_ENDPOINT only when it is set."""
    where = f", and HF_ENDPOINT ({endpoint})" if os.environ.get("HF_ENDPOINT") else ""
    return (
        f"check the network and proxy settings{where}; or pass a local config.json path, or set HF_HUB_OFFLINE=1 "
        "to use only bundled and cached configs"
    )


def _from_hub(repo_id: str, revision: str | None, token: str | None) -> ModelSource:
    if hub_offline():
        raise OfflineError(repo_id, "HF_HUB_OFFLINE is set")
    endpoint = hub_endpoint()
    for name in CONFIG_NAMES:
        try:
            remote = _remote_file(repo_id, name, revision, token, endpoint)
        except _NoSuchFile:
            continue  # no config.json: try Meta's params.json
        path = _store_in_cache(repo_id, name, revision, remote, _fetch(repo_id, name, remote, token, endpoint))
        try:
            return _read_cached(repo_id, path, "hub", revision)
        except HubCacheError as err:
            raise HubError(
                repo_id,
                f"the Hub's {name} cannot be used ({err.message.split('; repair')[0].split(' ', 2)[-1]})",
                f"if HF_ENDPOINT points at a proxy or mirror, check it; delete {path.parent.parent.parent} to retry, "
                "or pass a local config.json path",
            ) from err
    raise ModelNotFoundError(repo_id, "the repository has neither config.json nor params.json")


class _NoSuchFile(Exception):
    """The repo exists but has no such file (try the next config name)."""


@dataclass(frozen=True)
class _RemoteFile:
    """What the Hub's HEAD answer says of one file."""

    url: str
    commit: str
    etag: str
    size: int | None


#: An ETag becomes a file name in the cache: a hash, never a path.
_ETAG = re.compile(r"^[0-9A-Za-z_-]{1,128}$")


def _remote_file(repo_id: str, name: str, revision: str | None, token: str | None, endpoint: str) -> _RemoteFile:
    """One HEAD request, no retries, hub_timeout() seconds: the file's commit, ETag and size, or a clear error.

    hf_hub_download retries a failed HEAD for up to a minute (file_download._hf_hub_download_to_cache_dir,
    _ETAG_RETRY_TIMEOUT with retry_on_errors=True) and resumes a stalled GET five times, so kvplan makes the
    two requests of one small file itself: get_hf_file_metadata(retry_on_errors=False), then :func:`_fetch`.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    url = hf_hub_url(repo_id, name, revision=revision, endpoint=endpoint)
    try:
        meta = get_hf_file_metadata(url, token=token, timeout=hub_timeout(), endpoint=endpoint, retry_on_errors=False)
    except Exception as err:
        raise _hub_failure(err, repo_id, revision, endpoint) from err
    if meta.commit_hash is None or not _COMMIT.match(meta.commit_hash) or not _ETAG.match(meta.etag or ""):
        raise HubError(
            repo_id,
            f"{endpoint} does not answer like a Hugging Face Hub (no commit hash or ETag header)",
            _network_advice(endpoint),
        )
    if meta.size is not None and meta.size > MAX_FILE_BYTES:
        raise HubError(
            repo_id,
            f"the Hub's {name} is {meta.size:,} bytes, more than the {MAX_FILE_BYTES // 2**20} MiB kvplan reads",
            "pass a local config.json path",
        )
    return _RemoteFile(url, meta.commit_hash, str(meta.etag), meta.size)


def _fetch(repo_id: str, name: str, remote: _RemoteFile, token: str | None, endpoint: str) -> bytes:
    """GET the file: one try, hub_timeout() seconds for connect and for each read, at most MAX_FILE_BYTES."""
    from huggingface_hub import get_session, hf_raise_for_status
    from huggingface_hub.utils._headers import build_hf_headers

    headers = build_hf_headers(token=token)
    headers["Accept-Encoding"] = "identity"
    data = bytearray()
    try:
        with get_session().stream(
            "GET", remote.url, headers=headers, timeout=hub_timeout(), follow_redirects=True
        ) as response:
            hf_raise_for_status(response)
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > MAX_FILE_BYTES:
                    raise HubError(
                        repo_id,
                        f"the Hub's {name} is more than the {MAX_FILE_BYTES // 2**20} MiB kvplan reads",
                        "pass a local config.json path",
                    )
    except Exception as err:
        raise _hub_failure(err, repo_id, None, endpoint) from err
    if remote.size is not None and len(data) != remote.size:
        raise HubError(
            repo_id,
            f"the Hub sent {len(data):,} bytes of {name}, not the {remote.size:,} it announced",
            _network_advice(endpoint),
        )
    return bytes(data)


def _store_in_cache(repo_id: str, name: str, revision: str | None, remote: _RemoteFile, data: bytes) -> Path:
    """Write the file where huggingface_hub would (blobs/<etag>, snapshots/<commit>/<name> linking to it,
    refs/<revision> holding the commit; file_download.hf_hub_download), each file replaced atomically, so the
    next run reads it offline and concurrent runs never see half a file."""
    repo = Path(hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / remote.etag
    snapshot = repo / "snapshots" / remote.commit / name
    try:
        _write_atomic(blob, data)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        link = snapshot.with_name(f".{name}.{os.getpid()}.link")
        try:
            os.symlink(os.path.relpath(blob, snapshot.parent), link)
            os.replace(link, snapshot)
        except OSError:  # no symlinks here (Windows without developer mode): a copy, as huggingface_hub does
            _write_atomic(snapshot, data)
        if revision is None or not _COMMIT.match(revision):
            _write_atomic(repo / "refs" / (revision or "main"), remote.commit.encode())
    except OSError as err:
        raise HubCacheError(repo_id, str(repo), f"cannot be written ({err.strerror or err})") from err
    return snapshot


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _hub_failure(err: Exception, repo_id: str, revision: str | None, endpoint: str) -> Exception:
    """The user's error for one failed Hub call (huggingface_hub and httpx exceptions -> one clear line)."""
    import httpx2
    from huggingface_hub.errors import (
        EntryNotFoundError,
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(err, KvplanError):
        return err
    if isinstance(err, GatedRepoError):
        return GatedModelError(repo_id)
    if isinstance(err, RevisionNotFoundError):
        return ModelNotFoundError(repo_id, f"revision {revision!r} does not exist")
    if isinstance(err, EntryNotFoundError):
        return _NoSuchFile()
    if isinstance(err, RepositoryNotFoundError):
        return ModelNotFoundError(
            repo_id,
            f"no such repository on the Hugging Face Hub (if it is private, log in or pass {spell(Param.TOKEN)}); "
            "`kvplan models` lists the bundled models, or pass a local config.json",
        )
    if isinstance(err, OfflineModeIsEnabled):
        return OfflineError(repo_id, "huggingface_hub is in offline mode")
    if isinstance(err, HfHubHTTPError):
        return _http_failure(err.response.status_code if err.response is not None else 0, repo_id, endpoint)
    if isinstance(err, FileMetadataError):
        return HubError(
            repo_id,
            f"{endpoint} does not answer like a Hugging Face Hub (no commit header)",
            _network_advice(endpoint),
        )
    if isinstance(err, httpx2.TimeoutException):
        return HubError(repo_id, f"{endpoint} did not answer within {hub_timeout():g} s", _network_advice(endpoint))
    if isinstance(err, httpx2.HTTPError | OSError):
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return HubError(repo_id, f"cannot connect to {endpoint} ({reason[:120]})", _network_advice(endpoint))
    return err


def _http_failure(status: int, repo_id: str, endpoint: str) -> KvplanError:
    local = "or pass a local config.json path"
    if status == 429:
        return HubError(
            repo_id,
            "the Hub is rate limiting requests (HTTP 429)",
            f"wait a minute and retry, log in (`hf auth login`) or set HF_TOKEN for a higher limit, {local}",
        )
    if status in (401, 403):
        return GatedModelError(repo_id)
    if status == 404:
        return ModelNotFoundError(repo_id, f"the Hub at {endpoint} answered 404 (not found); check the id, {local}")
    if status >= 500:
        return HubError(
            repo_id,
            f"the Hub at {endpoint} answered HTTP {status} (a server error)",
            f"retry later, {local}, or set HF_HUB_OFFLINE=1 to use only bundled and cached configs",
        )
    return HubError(repo_id, f"the Hub at {endpoint} answered HTTP {status}", _network_advice(endpoint))

"""GGUF models on local disk: a ``.gguf`` path, a folder holding one, split sets, and the Ollama store.

- Splits (llama.cpp's gguf-split, ``NAME-00001-of-00003.gguf``): any one of them names the set; every split
  must be present, and the header reader takes metadata from the first and tensor infos from all.
- A folder: its GGUF files, leaving out multimodal projectors (``mmproj*.gguf``, llama.cpp's vision towers);
  more than one model there is an error that lists them.
- Ollama (``qwen3:8b``, ``ollama:qwen3``, ``user/model:tag``): the store is OLLAMA_MODELS or
  ``~/.ollama/models``; ``manifests/<registry>/<namespace>/<name>/<tag>`` is a JSON manifest whose layer with
  mediaType ``application/vnd.ollama.image.model`` names the GGUF blob, ``blobs/sha256-<hex>`` (Ollama's
  server/images.go and types/model/name.go: registry.ollama.ai, namespace library and tag latest by default).
LM Studio keeps plain GGUF files: they are paths.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from kvplan.errors import ConfigFileError, ModelNotFoundError

_SPLIT = re.compile(r"^(?P<base>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)
MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
DEFAULT_REGISTRY = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
#: An Ollama manifest is a few hundred bytes; anything past this is not one.
MAX_MANIFEST_BYTES = 1 << 20
#: Names listed when a model is not in the store.
MAX_LISTED = 40
_OLLAMA_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DIGEST = re.compile(r"^sha256[:-](?P<hex>[0-9a-f]{64})$")


def is_gguf_name(path: Path) -> bool:
    return path.name.lower().endswith(".gguf")


def model_stem(path: Path) -> str:
    """A GGUF model's name from its file: the split set's base, or the file name without ``.gguf``."""
    match = _SPLIT.match(path.name)
    if match:
        return match["base"]
    return path.name[: -len(".gguf")] if is_gguf_name(path) else path.name


def split_set(path: Path) -> tuple[Path, ...]:
    """The files of the model ``path`` belongs to: itself, or every split of its set, in order."""
    match = _SPLIT.match(path.name)
    if not match:
        return (path,)
    count = int(match["count"])
    if count < 1:
        raise ConfigFileError(str(path), "a split set of 0 files")
    width = len(match["no"])
    files = tuple(
        path.with_name(f"{match['base']}-{i:0{width}d}-of-{match['count']}.gguf") for i in range(1, count + 1)
    )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConfigFileError(str(path), f"split {len(missing)} of {count} missing: {', '.join(missing[:5])}")
    return files


def folder_gguf(folder: Path) -> tuple[Path, ...] | None:
    """The one GGUF model in a folder (all its splits), None when it holds none."""
    try:
        names = sorted(p for p in folder.iterdir() if p.is_file() and is_gguf_name(p))
    except OSError as err:
        raise ConfigFileError(str(folder), f"cannot be listed: {err.strerror or err}") from err
    # Multimodal projectors (llama.cpp's mmproj-*.gguf) sit beside the model; they are not the language model.
    candidates = [p for p in names if not p.name.lower().startswith("mmproj")]
    models: dict[str, Path] = {}
    for p in candidates:
        match = _SPLIT.match(p.name)
        models.setdefault(match["base"] if match else p.name, p)
    if not models:
        return None
    if len(models) > 1:
        listed = ", ".join(sorted(p.name for p in models.values()))
        raise ConfigFileError(str(folder), f"holds {len(models)} GGUF models ({listed}); pass one file")
    return split_set(next(iter(models.values())))


# ----------------------------------------------------------------------------------------------------------
# Ollama


def ollama_store() -> Path:
    """Ollama's model store: OLLAMA_MODELS, else ~/.ollama/models (read at call time)."""
    configured = os.environ.get("OLLAMA_MODELS", "").strip()
    return Path(configured).expanduser() if configured else Path("~/.ollama/models").expanduser()


@dataclass(frozen=True)
class OllamaModel:
    """A model in the Ollama store: the name as typed, the manifest and the GGUF blob it names."""

    name: str
    manifest: Path
    blob: Path


def plain_name(text: str) -> bool:
    """A name that could be an Ollama model without a tag (``llama3``)."""
    return bool(_OLLAMA_PART.match(text))


def looks_like_ollama(text: str) -> bool:
    """``ollama:`` names, and ``name:tag`` (a colon never appears in a Hub id or a bundled name)."""
    return text.startswith("ollama:") or (":" in text and "://" not in text)


def parse_ollama_name(text: str) -> tuple[str, str, str, str]:
    """registry, namespace, model, tag of an Ollama name (``qwen3``, ``qwen3:8b``, ``user/m:t``, ``host/ns/m:t``)."""
    name = text.removeprefix("ollama:")
    model_part, _, tag = name.rpartition(":") if ":" in name else (name, "", DEFAULT_TAG)
    tag = tag or DEFAULT_TAG
    parts = model_part.split("/")
    if len(parts) == 1:
        parts = [DEFAULT_REGISTRY, DEFAULT_NAMESPACE, *parts]
    elif len(parts) == 2:
        parts = [DEFAULT_REGISTRY, *parts]
    if len(parts) != 3 or not all(_OLLAMA_PART.match(p) for p in (*parts, tag)):
        raise ModelNotFoundError(text, "not an Ollama model name (name, name:tag, namespace/name:tag)")
    return parts[0], parts[1], parts[2], tag


def find_ollama(text: str) -> OllamaModel | None:
    """The store's model for ``text``, or None when the store does not have it."""
    registry, namespace, model, tag = parse_ollama_name(text)
    store = ollama_store()
    manifest = store / "manifests" / registry / namespace / model / tag
    if not manifest.is_file():
        # Ollama lower-cases names when it pulls; accept the user's capitals.
        manifest = store / "manifests" / registry.lower() / namespace.lower() / model.lower() / tag
        if not manifest.is_file():
            return None
    return OllamaModel(text, manifest, _model_blob(store, manifest))


def _model_blob(store: Path, manifest: Path) -> Path:
    try:
        with open(manifest, "rb") as handle:
            raw = handle.read(MAX_MANIFEST_BYTES + 1)
    except OSError as err:
        raise ConfigFileError(str(manifest), f"cannot be read: {err.strerror or err}") from err
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ConfigFileError(str(manifest), "is not an Ollama manifest (over 1 MiB)")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigFileError(str(manifest), f"is not an Ollama manifest (not JSON: {err})") from err
    layers = data.get("layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise ConfigFileError(str(manifest), "is not an Ollama manifest (no layers list)")
    for layer in layers:
        if isinstance(layer, dict) and layer.get("mediaType") == MODEL_MEDIA_TYPE:
            digest = layer.get("digest")
            match = _DIGEST.match(digest) if isinstance(digest, str) else None
            if match is None:
                raise ConfigFileError(str(manifest), f"model layer digest {digest!r} is not sha256:<64 hex>")
            blob = store / "blobs" / f"sha256-{match['hex']}"
            if not blob.is_file():
                raise ConfigFileError(str(blob), "the manifest's model blob is missing from the store")
            return blob
    raise ConfigFileError(str(manifest), f"has no {MODEL_MEDIA_TYPE} layer (not a language model)")


def ollama_names(limit: int = MAX_LISTED) -> list[str]:
    """The models the store holds, as ``ollama list`` names them (short names for the default registry)."""
    root = ollama_store() / "manifests"
    out: list[str] = []
    if not root.is_dir():
        return out
    for registry in sorted(p for p in root.iterdir() if p.is_dir()):
        for namespace in sorted(p for p in registry.iterdir() if p.is_dir()):
            for model in sorted(p for p in namespace.iterdir() if p.is_dir()):
                for tag in sorted(p for p in model.iterdir() if p.is_file()):
                    prefix = "" if registry.name == DEFAULT_REGISTRY else f"{registry.name}/"
                    ns = "" if namespace.name == DEFAULT_NAMESPACE and not prefix else f"{namespace.name}/"
                    out.append(f"{prefix}{ns}{model.name}:{tag.name}")
                    if len(out) >= limit:
                        return out
    return out


def missing_ollama(text: str) -> ModelNotFoundError:
    """The error for an Ollama name the store does not have: where we looked and what is there."""
    store = ollama_store()
    names = ollama_names()
    if not (store / "manifests").is_dir():
        where = "OLLAMA_MODELS" if os.environ.get("OLLAMA_MODELS", "").strip() else "~/.ollama/models"
        return ModelNotFoundError(
            text, f"no Ollama store at {store} ({where}); set OLLAMA_MODELS, or pass a .gguf path"
        )
    listed = ", ".join(names) if names else "nothing"
    more = " ..." if len(names) >= MAX_LISTED else ""
    return ModelNotFoundError(
        text, f"not in the Ollama store at {store}; it holds: {listed}{more} (`ollama pull` it, or pass a .gguf path)"
    )

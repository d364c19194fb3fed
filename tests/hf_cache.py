"""Build a real huggingface_hub cache folder (the layout hf_hub_download writes) for offline tests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def put_in_hf_cache(hub_cache: Path, repo_id: str, files: dict[str, Any], revision: str = "main") -> Path:
    """Write ``files`` (name -> JSON object) as one snapshot of ``repo_id``; return the snapshot folder.

    Layout: models--org--name/{blobs/<sha256>, snapshots/<commit>/<file> -> ../../blobs/<sha256>,
    refs/<revision> = <commit>}, as huggingface_hub's cache uses.
    """
    repo = hub_cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(f"{repo_id}@{revision}".encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = json.dumps(content).encode()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    return snapshot

"""A fake Hugging Face Hub on 127.0.0.1 for tests: threads, bounded stalls, stops itself.

It answers ``HEAD``/``GET /<org>/<name>/resolve/<revision>/<file>`` the way huggingface_hub expects from the
real Hub (X-Repo-Commit, ETag, Content-Length; X-Error-Code on errors), with per-repo behaviours chosen by the
test. Every request is recorded, so a test can assert what was asked for.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

COMMIT = "0123456789abcdef0123456789abcdef01234567"

#: The longest a stalled answer waits before the server gives up on it (the test fails long before).
STALL_S = 8.0


@dataclass
class Repo:
    """What one fake repository serves: files (name -> bytes), or an error status with X-Error-Code."""

    files: dict[str, bytes] = field(default_factory=dict)
    status: int = 200
    error_code: str | None = None
    stall: bool = False
    #: Answer HEAD, then stall the GET of the body (a server that hangs mid-download).
    stall_get: bool = False
    #: Serve the files without the X-Repo-Commit header (a proxy or a captive portal, not a Hub).
    no_commit: bool = False


@dataclass
class FakeHub:
    url: str
    repos: dict[str, Repo]
    requests: list[tuple[str, str]]
    stop: threading.Event

    def add(self, repo_id: str, repo: Repo) -> None:
        self.repos[repo_id] = repo

    def add_json(self, repo_id: str, files: dict[str, Any]) -> None:
        self.repos[repo_id] = Repo({name: json.dumps(obj).encode() for name, obj in files.items()})


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

        def _answer(self, body: bool) -> None:
            hub.requests.append((self.command, self.path))
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) < 5 or parts[2] != "resolve":
                self._send(404, b"", {"X-Error-Code": "RepoNotFound"}, body)
                return
            repo_id, filename = "/".join(parts[:2]), "/".join(parts[4:])
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._send(401, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
                return
            if repo.stall or (repo.stall_get and body):
                hub.stop.wait(STALL_S)
                return
            if repo.status != 200:
                headers = {"X-Error-Code": repo.error_code} if repo.error_code else {}
                self._send(repo.status, b'{"error":"simulated"}', headers, body)
                return
            if filename not in repo.files:
                self._send(404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT}, body)
                return
            data = repo.files[filename]
            headers = {"ETag": f'"{hashlib.sha1(data).hexdigest()}"'}
            if not repo.no_commit:
                headers["X-Repo-Commit"] = COMMIT
            self._send(200, data, headers, body)

        def _send(self, status: int, data: bytes, headers: dict[str, str], body: bool) -> None:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

    return Handler


@contextmanager
def fake_hub() -> Iterator[FakeHub]:
    """Serve a FakeHub on 127.0.0.1 (a free port) for the duration of the block."""
    hub = FakeHub("", {}, [], threading.Event())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

"""The Hub path against a fake Hub on 127.0.0.1: each failure is one clear line within seconds, and only
config.json / params.json are ever asked for. HF_HUB_OFFLINE is unset only inside these tests."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kvplan import errors
from kvplan.cli import app
from kvplan.resolve import hub_cache_dir, resolve

from .fake_hub import COMMIT, FakeHub, Repo, fake_hub

SMALL = {
    "model_type": "llama",
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "hidden_size": 256,
    "max_position_embeddings": 1024,
}


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    from huggingface_hub import constants

    with fake_hub() as served:
        monkeypatch.setenv("HF_ENDPOINT", served.url)
        monkeypatch.delenv("HF_HUB_OFFLINE")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read by huggingface_hub at import
        # huggingface_hub's user-agent builder may fetch {ENDPOINT}/api/agent-harnesses (utils/_detect_agent.py)
        # from the endpoint it read at import, the real Hub: that telemetry is off in these tests.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
        monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(proxy, raising=False)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        yield served


def _error(model: str, *args: str) -> str:
    result = CliRunner().invoke(app, ["size", model, "--ctx", "16", *args])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_config_is_downloaded_once_then_read_from_the_cache(hub: FakeHub) -> None:
    hub.add_json("acme/tiny", {"config.json": SMALL})
    source = resolve("acme/tiny")
    assert source.origin == "hub"
    assert source.raw == SMALL
    assert Path(source.location).is_relative_to(hub_cache_dir())
    assert all(path.endswith("/config.json") for _, path in hub.requests)
    asked = len(hub.requests)
    assert resolve("acme/tiny").origin == "hf-cache"
    assert len(hub.requests) == asked  # the second run does not touch the network


def test_params_json_when_the_repo_has_no_config_json(hub: FakeHub) -> None:
    hub.add_json("meta-llama/original", {"params.json": {"dim": 256, "n_layers": 1, "n_heads": 4}})
    source = resolve("meta-llama/original")
    assert source.origin == "hub"
    files = {path.rsplit("/", 1)[-1] for _, path in hub.requests}
    assert files == {"config.json", "params.json"}


@pytest.mark.parametrize(
    ("repo", "fragment"),
    [
        (Repo(status=403, error_code="GatedRepo"), "gated"),
        (Repo(status=401), "gated"),
        (Repo(status=403), "gated"),
        (Repo(status=429), "rate limiting requests (HTTP 429)"),
        (Repo(status=500), "HTTP 500 (a server error)"),
        (Repo(status=503), "HTTP 503 (a server error)"),
        (Repo(status=404), "answered 404"),
        (Repo(status=404, error_code="RevisionNotFound"), "revision"),
        (Repo(files={"config.json": b"<html>portal</html>"}), "not valid JSON"),
        (Repo(files={"config.json": b"{}"}, no_commit=True), "does not answer like a Hugging Face Hub"),
    ],
    ids=["gated", "401", "403", "429", "500", "503", "404", "revision", "non-json", "not-a-hub"],
)
def test_each_hub_failure_is_one_line(hub: FakeHub, repo: Repo, fragment: str) -> None:
    hub.add("acme/broken", repo)
    started = time.monotonic()
    line = _error("acme/broken")
    assert time.monotonic() - started < 5
    assert fragment in line
    assert "acme/broken" in line


def test_missing_repo(hub: FakeHub) -> None:
    line = _error("acme/not-there")
    assert "no such repository" in line


def test_stalled_server_fails_within_the_timeout(hub: FakeHub) -> None:
    hub.add("acme/stalled", Repo(stall=True))
    started = time.monotonic()
    line = _error("acme/stalled")
    elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed  # HF_HUB_ETAG_TIMEOUT=1; no minute of retries
    assert f"{hub.url} did not answer within 1 s" in line
    assert "HF_HUB_OFFLINE=1" in line
    assert "HF_ENDPOINT" in line  # it is set here, so checking it is advice


def test_server_stalling_mid_download_fails_within_the_timeout(hub: FakeHub) -> None:
    """huggingface_hub would resume a stalled GET five times; kvplan asks once."""
    hub.add_json("acme/stalled", {"config.json": SMALL})
    hub.repos["acme/stalled"].stall_get = True
    started = time.monotonic()
    line = _error("acme/stalled")
    assert time.monotonic() - started < 4
    assert "did not answer within 1 s" in line
    assert [method for method, path in hub.requests if "/acme/" in path] == ["HEAD", "GET"]
    assert not (Path(hub_cache_dir()) / "models--acme--stalled" / "snapshots").exists()


def test_default_timeout_is_seconds_not_minutes(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from kvplan.limits import HUB_TIMEOUT_S
    from kvplan.resolve import hub_timeout

    monkeypatch.delenv("HF_HUB_ETAG_TIMEOUT")
    assert hub_timeout() == HUB_TIMEOUT_S <= 10
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "not a number")
    assert hub_timeout() == HUB_TIMEOUT_S


def test_refused_connection_fails_at_once(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    line = _error("acme/anything")
    assert time.monotonic() - started < 3
    assert "cannot connect to http://127.0.0.1" in line


def test_dns_failure_fails_at_once_and_names_no_unset_variable(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dns(*args: object, **kwargs: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.delenv("HF_ENDPOINT")
    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    started = time.monotonic()
    line = _error("acme/anything")
    assert time.monotonic() - started < 3
    assert "cannot connect to https://huggingface.co" in line
    assert "HF_ENDPOINT" not in line  # not set: nothing to check or unset
    assert "unset" not in line
    assert "HF_HUB_OFFLINE=1" in line


@pytest.mark.parametrize("endpoint", ["huggingface.co", "ftp://x", "http://", "http://host:99999", "http://a b"])
def test_malformed_endpoint(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    line = _error("acme/anything")
    assert line.startswith("kvplan: error: HF_ENDPOINT:")
    assert "http(s) URL" in line
    assert hub.requests == []


def test_offline_error_only_when_offline_is_set(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "unset HF_HUB_OFFLINE" in _error("acme/anything")
    assert hub.requests == []


@pytest.mark.parametrize(
    "bad", ["a--b/c", "org/x..y", "org/name-", "org/name.", "org/x.git", "org/" + "a" * 97, "org/-x", "o/p/q/r"]
)
def test_invalid_hub_ids_never_reach_the_network(hub: FakeHub, bad: str) -> None:
    line = _error(bad)
    assert "not a valid Hub id" in line or "no such file" in line
    assert hub.requests == []


def test_revision_cannot_climb_out_of_the_cache(hub: FakeHub) -> None:
    line = _error("acme/tiny", "--revision", "../../etc")
    assert "revision" in line
    assert hub.requests == []


def test_oversized_remote_config_is_not_downloaded(hub: FakeHub) -> None:
    from kvplan.limits import MAX_FILE_BYTES

    hub.add("acme/huge", Repo(files={"config.json": b" " * (MAX_FILE_BYTES + 1)}))
    line = _error("acme/huge")
    assert f"more than the {MAX_FILE_BYTES // 2**20} MiB" in line
    assert [method for method, _ in hub.requests] == ["HEAD"]


def test_commit_header_is_used_for_the_cache(hub: FakeHub) -> None:
    hub.add_json("acme/tiny", {"config.json": SMALL})
    source = resolve("acme/tiny")
    assert f"/snapshots/{COMMIT}/" in source.location
    refs = Path(hub_cache_dir()) / "models--acme--tiny" / "refs" / "main"
    assert refs.read_text() == COMMIT
    assert json.loads(Path(source.location).read_text()) == SMALL


def test_hub_errors_are_kvplan_errors(hub: FakeHub) -> None:
    hub.add("acme/broken", Repo(status=500))
    with pytest.raises(errors.HubError, match="HTTP 500"):
        resolve("acme/broken")


def test_download_through_the_cli_prints_no_progress_or_warnings(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    hub.add_json("acme/tiny", {"config.json": SMALL})
    result = CliRunner().invoke(app, ["size", "acme/tiny", "--ctx", "16", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["source"]["origin"] == "hub"
    assert result.stderr == ""

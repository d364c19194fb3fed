"""Fuzzing the CLI: mutated configs, hostile flag values and GPU files.

The property, for every generated input: exit 0 with a well-formed answer (JSON that parses, or a non-empty
table), or exit 2 with one message on stderr and no traceback, within a time bound; a subprocess subset also
runs under an address-space limit (RLIMIT_AS). The ``ci`` hypothesis profile (the default) keeps the suite
near 30 s; HYPOTHESIS_PROFILE=deep runs ten times as many cases.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kvplan.cli import app
from kvplan.limits import MAX_FILE_BYTES

from .conftest import FIXTURES

#: Cases per test in CI: CONFIG and FLAG tests run about 120 each, GPU files 60 (see the report in the note).
settings.register_profile(
    "ci", max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("deep", max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: Seconds one in-process CLI run may take (the slowest real command takes well under one).
TIME_BOUND_S = 10.0
ROOT = Path(__file__).resolve().parent.parent


def base_configs() -> list[dict[str, Any]]:
    """Every fixture config and a few bundled ones: the valid (and some invalid) shapes to mutate."""
    out = []
    for folder in sorted(FIXTURES.iterdir()):
        for name in ("config.json", "params.json"):
            if (folder / name).is_file():
                out.append(json.loads((folder / name).read_text()))
    for model in ("meta-llama/Llama-2-7b-hf", "deepseek-ai/DeepSeek-V3", "google/gemma-3-27b-it"):
        path = ROOT / "configs" / "models" / model / "config.json"
        if path.is_file():
            out.append(json.loads(path.read_text()))
    return out


BASES = base_configs()

controls = st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So"]), max_size=8)
hostile_text = st.one_of(
    st.text(max_size=12),
    controls,
    st.sampled_from(["[bold]x[/bold]", "[link=http://evil.example]x[/link]", ":smile:", "\x1b[2J", "\u202e", ""]),
)
magnitudes = st.one_of(
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 2**31, 2**63, 10**30, 10**400, 10**6, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
)
leaf = st.one_of(st.none(), st.booleans(), magnitudes, hostile_text)
values = st.recursive(
    leaf,
    lambda children: st.one_of(st.lists(children, max_size=6), st.dictionaries(hostile_text, children, max_size=4)),
    max_leaves=12,
)


@st.composite
def mutated_config(draw: st.DrawFn) -> dict[str, Any]:
    """A fixture or bundled config with a few keys changed: types, signs, magnitudes, nesting, lists of the
    wrong length, unicode and control characters; sometimes a key removed or a nested config mutated."""
    config: dict[str, Any] = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    for _ in range(draw(st.integers(1, 3))):
        target = config
        nested = [k for k, v in target.items() if isinstance(v, dict)]
        if nested and draw(st.booleans()):
            target = target[draw(st.sampled_from(nested))]
        keys = sorted(target)
        action = draw(st.sampled_from(["replace", "replace", "scale", "drop", "list", "add"]))
        if not keys or action == "add":
            target[draw(hostile_text)] = draw(values)
            continue
        key = draw(st.sampled_from(keys))
        value = target[key]
        if action == "drop":
            del target[key]
        elif action == "scale" and isinstance(value, int) and not isinstance(value, bool):
            target[key] = value * draw(st.sampled_from([-1, 0, 2, 10**6, 10**30, 10**400]))
        elif action == "list" and isinstance(value, list):
            target[key] = value[: draw(st.integers(0, max(len(value) - 1, 0)))] + draw(st.lists(leaf, max_size=3))
        else:
            target[key] = draw(values)
    return config


def check_outcome(args: list[str], *, json_out: bool = False) -> None:
    """Run the CLI in-process and assert the property."""
    started = time.monotonic()
    result = CliRunner().invoke(app, args)
    elapsed = time.monotonic() - started
    assert elapsed < TIME_BOUND_S, (elapsed, args)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{args}: {type(result.exception).__name__}: {result.exception}") from result.exception
    assert "Traceback" not in result.output
    if result.exit_code == 0:
        assert result.stdout.strip(), args
        if json_out:
            json.loads(result.stdout)
        return
    assert result.exit_code == 2, (result.exit_code, args, result.output)
    lines = result.stderr.strip().splitlines()
    assert lines, args
    if lines[0].startswith("kvplan: error: ") and "invalid catalog file" not in lines[0]:
        assert len(lines) == 1, result.stderr
    else:  # a click usage error (its own box) or a catalog file's field: message list
        assert lines[0].startswith(("Usage:", "kvplan: error: ")), result.stderr
    assert result.stdout == "", result.stdout


def write_json(folder: str, config: object) -> str:
    path = os.path.join(folder, "config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)
    return path


@given(config=mutated_config(), as_json=st.booleans())
def test_mutated_configs_answer_or_fail_clean(config: dict[str, Any], as_json: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_json(folder, config)
        args = ["size", path, "--ctx", "4096", *(["--json"] if as_json else [])]
        check_outcome(args, json_out=as_json)


@given(config=mutated_config())
@settings(max_examples=40)
def test_mutated_configs_through_fit_and_capacity(config: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = write_json(folder, config)
        check_outcome(["fit", path, "--gpu", "h100", "--ctx", "8k", "--json"], json_out=True)
        check_outcome(["capacity", path, "--kv-memory", "8GiB", "--ctx", "4096", "--engine", "vllm"])


numbers = st.one_of(
    st.integers(-(10**6), 10**25).map(str),
    st.sampled_from(["9" * 5000, "1" + "0" * 400, "0", "-1", "1e9", "0x10", "1_000", "4k", "4K", "1.5k", ".5K"]),
)
suffixes = st.sampled_from(["", "k", "K", "m", "M", "G", "GiB", "GB", "B", "MiB", "kB", "TiB", "iB", "x", "\x1b"])
flag_value = st.one_of(st.tuples(numbers, suffixes).map("".join), hostile_text, st.text(max_size=20))


@given(
    command=st.sampled_from(["size", "fit", "capacity", "pick-g"]),
    flag=st.sampled_from(
        [
            "--ctx",
            "--batch",
            "--reserve",
            "--kv-memory",
            "--gpu",
            "--kv-cache-dtype",
            "--kv-heads",
            "--tensor-parallel-size",
            "--gpu-memory-utilization",
            "--dtype",
            "--engine",
            "--block-size",
            "--num-gpus",
        ]
    ),
    value=flag_value,
)
def test_flag_values_answer_or_fail_clean(command: str, flag: str, value: str) -> None:
    model = ["--model", "Qwen/Qwen3-8B"] if command == "pick-g" else ["Qwen/Qwen3-8B"]
    base = {"size": ["--ctx", "4096"], "fit": ["--gpu", "h100"], "capacity": ["--kv-memory", "8GiB"]}
    args = [command, *model, *base.get(command, ["--gpu", "h100", "--ctx", "4k", "--batch", "1"]), flag, value]
    check_outcome([*args, "--json"], json_out=True)


GPU_KEYS = ["id", "name", "vendor", "aliases", "usable_bytes", "usable_source", "usable_from", "notes", "smi_total_mib"]
gpu_values = st.one_of(
    values,
    st.sampled_from(["measured", "torch", "smi", "none", "h100", "my-gpu", 85899345920, [], ["a", "a"]]),
)


@st.composite
def gpu_file_text(draw: st.DrawFn) -> str:
    """A GPU file: well-formed entries with fields changed, or raw hostile YAML text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(
            st.one_of(
                st.text(max_size=80),
                st.sampled_from(["entries: [", "a: 1\na: 2", "!!python/object:os.system {}", "- x\n- y", "~"]),
            )
        )
    entries = []
    for i in range(draw(st.integers(0, 3))):
        entry: dict[Any, Any] = {
            "id": f"fuzz-{i}",
            "name": f"Fuzz {i}",
            "usable_bytes": 80 * 2**30,
            "usable_source": "measured",
        }
        for _ in range(draw(st.integers(0, 3))):
            entry[draw(st.sampled_from([*GPU_KEYS, "extra_key"]))] = draw(gpu_values)
        entries.append(entry)
    doc: Any = {"entries": entries} if draw(st.integers(0, 5)) else entries
    return yaml.safe_dump(doc, allow_unicode=True)


@given(text=gpu_file_text())
@settings(max_examples=60)
def test_gpu_files_load_or_fail_clean(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "gpus.yaml")
        Path(path).write_text(text, encoding="utf-8")
        check_outcome(["gpus", "--gpu-file", path, "--json"], json_out=True)
        check_outcome(["fit", "Qwen/Qwen3-8B", "--gpu", "fuzz-0", "--gpu-file", path, "--ctx", "4k"])


# ----------------------------------------------------------------------------------------------------------
# A subprocess subset under an address-space limit: no input may read or build without bound.

#: The address space each subprocess may map: room for Python, rich, pydantic and huggingface_hub, and far
#: less than what an unbounded read of /dev/zero or a 10^6-layer layout would take.
ADDRESS_SPACE = 1536 * 2**20


def _limited() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def _hostile_inputs(folder: Path) -> dict[str, list[str]]:
    small = json.loads((FIXTURES / "gqa" / "config.json").read_text())
    cases: dict[str, object] = {
        "layers-1e6": {**small, "num_hidden_layers": 10**6},
        "heads-1e9": {**small, "num_attention_heads": 10**9, "num_key_value_heads": 10**9},
        "bytes-1e400": {**small, "max_position_embeddings": 10**400},
    }
    out = {}
    for name, config in cases.items():
        (folder / name).mkdir()
        out[name] = ["size", write_json(str(folder / name), config)]
    deep = folder / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    out["deep"] = ["size", str(deep)]
    digits = folder / "digits.json"
    digits.write_text('{"num_hidden_layers": ' + "9" * 100_000 + "}")
    out["digits"] = ["size", str(digits)]
    big = folder / "big.json"
    with big.open("wb") as f:
        f.truncate(MAX_FILE_BYTES * 64)
    out["sparse-1GiB"] = ["size", str(big)]
    if os.path.exists("/dev/zero"):
        out["dev-zero"] = ["size", "/dev/zero"]
        out["gpu-file-dev-zero"] = ["gpus", "--gpu-file", "/dev/zero"]
    fifo = folder / "fifo.json"
    os.mkfifo(fifo)
    out["fifo"] = ["size", str(fifo)]
    return out


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /dev/zero semantics are Linux's")
def test_hostile_inputs_under_an_address_space_limit(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    for name, args in _hostile_inputs(tmp_path).items():
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "kvplan", *args],
            capture_output=True,
            text=True,
            env=env,
            preexec_fn=_limited,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        elapsed = time.monotonic() - started
        assert done.returncode == 2, (name, done.returncode, done.stderr[-500:])
        lines = done.stderr.strip().splitlines()
        assert lines[0].startswith("kvplan: error: "), (name, done.stderr[-500:])
        assert len(lines) == (2 if "invalid catalog file" in lines[0] else 1), (name, done.stderr[-500:])
        assert elapsed < 30, (name, elapsed)
        assert math.isfinite(elapsed)

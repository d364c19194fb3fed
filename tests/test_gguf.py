"""GGUF input: kvplan's header reader against gguf-py's GGUFReader, layouts against config.json, exact weights."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
from gguf import GGML_QUANT_SIZES, GGUFReader, GGUFValueType
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvplan.catalog import load_json_text
from kvplan.errors import ConfigError, ConfigFileError, KvplanError
from kvplan.layout import LayerKind, WarningKind
from kvplan.readers.config import read_config
from kvplan.readers.gguf import GGML_TYPES, GgufArray, read_header, read_model
from kvplan.readers.gguf_layout import read_gguf_layout
from kvplan.readers.model import ReadModel
from kvplan.resolve import load_model, resolve
from kvplan.weights import weight_bytes
from tests.gguf_fixtures import FAMILIES, Fixture, ggml_bytes, llama, write_gguf


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("gguf")
    return {name: write_gguf(root / f"{name}.gguf", make())[0] for name, make in FAMILIES.items()}


def _layout(path: Path, name: str = "m"):  # type: ignore[no-untyped-def]
    return read_gguf_layout(read_model([path]), name)


# ----------------------------------------------------------------------------------------------------------
# The header reader, checked against gguf-py on every fixture


def test_ggml_type_table_matches_gguf_py() -> None:
    ours = {t.type_id: (t.block_values, t.block_bytes) for t in GGML_TYPES.values()}
    theirs = {int(k): v for k, v in GGML_QUANT_SIZES.items()}
    assert ours == theirs


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_reader_agrees_with_gguf_py(written: dict[str, Path], family: str) -> None:
    path = written[family]
    ours = read_header(path)
    theirs = GGUFReader(path)
    assert set(ours.metadata) == set(theirs.fields) - {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}
    for key, value in ours.metadata.items():
        field = theirs.fields[key]
        if isinstance(value, GgufArray):
            assert field.types[0] == GGUFValueType.ARRAY
            assert value.item_type == field.types[-1]
            assert value.count == len(field.data)
            if value.values is not None:
                assert list(value.values) == field.contents()
            else:  # skipped: only tokenizer arrays and string arrays in these fixtures
                assert key.startswith("tokenizer.") or value.item_type == GGUFValueType.STRING
        elif isinstance(value, float):
            assert value == pytest.approx(field.contents(), rel=1e-6)
        else:
            assert value == field.contents()
    assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
    for mine, other in zip(ours.tensors, theirs.tensors, strict=True):
        assert list(mine.shape) == [int(d) for d in other.shape]
        assert mine.ggml_type.type_id == int(other.tensor_type)
        assert mine.nbytes == int(other.n_bytes)
        assert ours.data_offset + mine.offset == int(other.data_offset)
    assert ours.data_offset == theirs.data_offset


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_weights_are_the_tensor_bytes(written: dict[str, Path], family: str) -> None:
    fx = FAMILIES[family]()
    layout = _layout(written[family])
    expected = sum(ggml_bytes(shape, t) for _, shape, t in fx.tensors)
    assert weight_bytes(ReadModel(layout)).bytes_total == expected
    # the tensor data fills the file after the header, to the byte (the last tensor is padded to the alignment)
    header = read_header(written[family])
    assert header.file_size - header.data_offset >= expected > header.file_size - header.data_offset - 32


# ----------------------------------------------------------------------------------------------------------
# Layouts: the same model read from its GGUF and from its config.json


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_layout_equals_config_json(written: dict[str, Path], family: str) -> None:
    fx = FAMILIES[family]()
    assert fx.hf_config is not None
    gguf = _layout(written[family])
    config = read_config(fx.hf_config, "m")
    assert gguf.layers == config.layers
    # Mamba configs state no context; convert_hf_to_gguf writes 2**20 for it.
    assert gguf.max_context == (config.max_context or 2**20)
    assert gguf.warnings == ()


def test_gemma2_pattern_and_window(written: dict[str, Path]) -> None:
    # llama.cpp set_swa_pattern(2): layers 0, 2, 4 slide (512 tokens), 1, 3, 5 are full.
    layout = _layout(written["gemma2"])
    assert [layer.kind for layer in layout.layers] == [LayerKind.SLIDING, LayerKind.FULL] * 3
    assert {layer.window for layer in layout.layers if layer.kind is LayerKind.SLIDING} == {512}


def test_gemma2_default_window(tmp_path: Path) -> None:
    fx = FAMILIES["gemma2"]()
    del fx.metadata["gemma2.attention.sliding_window"]
    layout = _layout(write_gguf(tmp_path / "g.gguf", fx)[0])
    assert {layer.window for layer in layout.layers if layer.kind is LayerKind.SLIDING} == {4096}


def test_gemma3_one_full_in_six(written: dict[str, Path]) -> None:
    kinds = [layer.kind for layer in _layout(written["gemma3"]).layers]
    assert [i for i, k in enumerate(kinds) if k is LayerKind.FULL] == [5, 11]


def test_mla_latent(written: dict[str, Path]) -> None:
    layout = _layout(written["deepseek2"])
    assert {(layer.kind, layer.kv_lora_rank, layer.rope_dim) for layer in layout.layers} == {(LayerKind.MLA, 64, 32)}


def test_deepseek2_without_mla_keys_caches_per_head(tmp_path: Path) -> None:
    fx = FAMILIES["deepseek2"]()
    for key in ("key_length_mla", "value_length_mla"):
        del fx.metadata[f"deepseek2.attention.{key}"]
    fx.metadata.update(
        {
            "deepseek2.attention.head_count_kv": 8,
            "deepseek2.attention.key_length": 96,
            "deepseek2.attention.value_length": 64,
        }
    )
    layout = _layout(write_gguf(tmp_path / "d.gguf", fx)[0])
    assert {(layer.kind, layer.k_heads, layer.k_head_dim, layer.v_head_dim) for layer in layout.layers} == {
        (LayerKind.FULL, 8, 96, 64)
    }


def test_nextn_layers_reported_apart(tmp_path: Path) -> None:
    fx = llama()
    fx.metadata.update({"llama.nextn_predict_layers": 1})
    layout = _layout(write_gguf(tmp_path / "n.gguf", fx)[0])
    assert layout.num_layers == 3
    assert [layer.index for layer in layout.mtp_layers] == [3]


def test_per_layer_kv_heads(tmp_path: Path) -> None:
    # DeciLM / Nemotron-NAS: head_count_kv per layer; 0 = no attention in that layer (nothing cached).
    fx = llama()
    fx.metadata["llama.attention.head_count_kv"] = [2, 0, 4, 8]
    fx = Fixture("llama", fx.metadata, fx.tensors)
    layout = _layout(write_gguf(tmp_path / "p.gguf", fx)[0])
    assert [(layer.kind, layer.k_heads) for layer in layout.layers] == [
        (LayerKind.FULL, 2),
        (LayerKind.NONE, 0),
        (LayerKind.FULL, 4),
        (LayerKind.FULL, 8),
    ]


def test_mamba_state_sizes(written: dict[str, Path]) -> None:
    # llama-hparams.cpp: n_embd_r = (d_conv - 1) x d_inner, n_embd_s = d_state x d_inner (group_count 0).
    layer = _layout(written["mamba"]).layers[0]
    assert [(s.name, s.shape) for s in layer.state] == [("conv", (256, 3)), ("ssm", (256, 16))]


def test_qwen3next_interval(written: dict[str, Path]) -> None:
    kinds = [layer.kind for layer in _layout(written["qwen3next"]).layers]
    assert [i for i, k in enumerate(kinds) if k is LayerKind.FULL] == [3, 7]
    state = _layout(written["qwen3next"]).layers[0].state
    # conv over q, k, v: inner 256 + 2 x 4 groups x 32 = 512 channels; recurrent: 8 value heads x 32 x 32
    assert [(s.name, s.shape) for s in state] == [("conv", (512, 3)), ("recurrent", (8, 32, 32))]


# ----------------------------------------------------------------------------------------------------------
# Fail closed


def test_unread_cache_key_is_reported(tmp_path: Path) -> None:
    fx = llama()
    fx.metadata.update({"llama.attention.sliding_window": 4096, "llama.attention.compress_ratio": 4})
    layout = _layout(write_gguf(tmp_path / "u.gguf", fx)[0])
    assert [(w.kind, w.key) for w in layout.warnings] == [
        (WarningKind.UNREAD_KEY, "llama.attention.sliding_window"),
        (WarningKind.UNREAD_KEY, "llama.attention.compress_ratio"),
    ]
    assert {layer.kind for layer in layout.layers} == {LayerKind.FULL}


def test_unknown_architecture_says_so(tmp_path: Path) -> None:
    fx = llama()
    meta = {k.replace("llama.", "newarch."): v for k, v in fx.metadata.items()}
    layout = _layout(write_gguf(tmp_path / "x.gguf", Fixture("newarch", meta, fx.tensors))[0])
    assert (layout.warnings[0].kind, layout.warnings[0].key) == (WarningKind.UNKNOWN_FAMILY, "general.architecture")
    assert any("no kvplan rule" in rule for rule in layout.rules)


def test_wrong_type_is_an_error(tmp_path: Path) -> None:
    fx = llama()
    fx.metadata["llama.attention.head_count_kv"] = "2"
    with pytest.raises(ConfigError, match=r"llama.attention.head_count_kv"):
        _layout(write_gguf(tmp_path / "w.gguf", fx)[0])


def test_array_length_must_match_layers(tmp_path: Path) -> None:
    fx = llama()
    fx.metadata["llama.attention.head_count_kv"] = [2, 2]
    with pytest.raises(ConfigError, match=r"2 entries for 4 layers"):
        _layout(write_gguf(tmp_path / "a.gguf", fx)[0])


def test_truncated_file_is_an_error(written: dict[str, Path], tmp_path: Path) -> None:
    data = written["llama"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(ConfigFileError, match="truncated"):
        read_header(cut)
    cut.write_bytes(data[:5000])
    with pytest.raises(ConfigFileError, match="not a valid GGUF file"):
        read_header(cut)


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (b"GGUX", "magic"),
        (struct.pack("<I", 1), "version 1"),
        (struct.pack("<I", 9), "version 9"),
    ],
)
def test_bad_magic_or_version(written: dict[str, Path], tmp_path: Path, patch: bytes, message: str) -> None:
    data = bytearray(written["llama"].read_bytes())
    offset = 0 if patch.startswith(b"GG") else 4
    data[offset : offset + 4] = patch
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigFileError, match=message):
        read_header(bad)


def test_huge_counts_are_refused(written: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(written["llama"].read_bytes())
    data[16:24] = struct.pack("<Q", 2**62)  # kv count
    bad = tmp_path / "huge.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(ConfigFileError, match="keys"):
        read_header(bad)


def test_big_endian_file(tmp_path: Path) -> None:
    from gguf import GGUFEndian, GGUFWriter

    writer = GGUFWriter(tmp_path / "be.gguf", "llama", endianess=GGUFEndian.BIG)
    writer.add_uint32("llama.block_count", 2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    header = read_header(tmp_path / "be.gguf")
    assert header.big_endian
    assert header.metadata["llama.block_count"] == 2


# ----------------------------------------------------------------------------------------------------------
# Resolution: a file, a folder, splits


def test_split_files(tmp_path: Path) -> None:
    fx = llama()
    files = write_gguf(tmp_path / "big.gguf", fx, split_max_tensors=10)
    assert len(files) > 2
    assert files[0].name.endswith("-00001-of-0000" + str(len(files)) + ".gguf")
    source = resolve(str(files[1]))  # any split names the set
    assert source.files == tuple(map(str, files))
    layout = load_model(str(files[0]))
    assert layout.num_layers == 4
    assert weight_bytes(ReadModel(layout)).bytes_total == sum(ggml_bytes(s, t) for _, s, t in fx.tensors)


def test_missing_split_is_an_error(tmp_path: Path) -> None:
    files = write_gguf(tmp_path / "big.gguf", llama(), split_max_tensors=10)
    files[-1].unlink()
    with pytest.raises(ConfigFileError, match="missing"):
        resolve(str(files[0]))


def test_folder_with_one_gguf_and_a_projector(written: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(written["qwen3"].read_bytes())
    (tmp_path / "mmproj-model-f16.gguf").write_bytes(written["llama"].read_bytes())
    source = resolve(str(tmp_path))
    assert source.files == (str(tmp_path / "model.gguf"),)


def test_folder_with_two_models_is_an_error(written: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a.gguf").write_bytes(written["qwen3"].read_bytes())
    (tmp_path / "b.gguf").write_bytes(written["llama"].read_bytes())
    with pytest.raises(ConfigFileError, match=r"2 GGUF models \(a.gguf, b.gguf\)"):
        resolve(str(tmp_path))


def test_missing_gguf_path(tmp_path: Path) -> None:
    with pytest.raises(KvplanError, match="no such file"):
        resolve(str(tmp_path / "nope.gguf"))


def test_json_is_not_read_as_gguf(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(llama().hf_config))
    assert not resolve(str(config)).is_gguf
    assert load_model(str(config)).layers == read_config(load_json_text(config.read_text(), "x"), "m").layers


# ----------------------------------------------------------------------------------------------------------
# More families and the weights what-ifs


def test_gemma3n_shared_kv(tmp_path: Path) -> None:
    # 30 layers, pattern 5 (layer il slides when il % 5 < 4); llama.cpp caches the first 20 layers only
    # (llama-kv-cache.cpp n_layer_cache = 20) and layers 20.. reuse the last earlier layer of their kind.
    from tests.gguf_fixtures import _common, _decoder

    meta = _common("gemma3n", 30, 256, 4, 1, 32768)
    meta.update({"gemma3n.attention.key_length": 64, "gemma3n.attention.sliding_window": 512})
    fx = Fixture("gemma3n", meta, _decoder(30, 256, 4, 1, 64, 64, 256, tied=True))
    layout = _layout(write_gguf(tmp_path / "g3n.gguf", fx)[0])
    kinds = [layer.kind for layer in layout.layers]
    assert [i for i, k in enumerate(kinds[:20]) if k is LayerKind.FULL] == [4, 9, 14, 19]
    assert kinds[20:] == [LayerKind.SHARED] * 10
    assert {layout.layers[i].shares_with for i in range(20, 30) if (i % 5) == 4} == {19}
    assert {layout.layers[i].shares_with for i in range(20, 30) if (i % 5) != 4} == {18}


def test_nemotron_h_mlp_blocks_cache_nothing(tmp_path: Path) -> None:
    # head_count_kv 0 and feed_forward_length 0: Mamba2; head_count_kv 0 with an MLP width: an MLP block.
    from tests.gguf_fixtures import _common

    kv = [0, 0, 2, 0]
    meta = _common("nemotron_h", 4, 256, 8, kv, 8192)
    meta.update(
        {
            "nemotron_h.feed_forward_length": [0, 512, 0, 512],
            "nemotron_h.attention.key_length": 32,
            "nemotron_h.ssm.conv_kernel": 4,
            "nemotron_h.ssm.inner_size": 512,
            "nemotron_h.ssm.state_size": 64,
            "nemotron_h.ssm.group_count": 2,
            "nemotron_h.ssm.time_step_rank": 8,
        }
    )
    fx = Fixture("nemotron_h", meta, [("token_embd.weight", (256, 256), "Q8_0")])
    layout = _layout(write_gguf(tmp_path / "nh.gguf", fx)[0])
    assert [layer.kind for layer in layout.layers] == [
        LayerKind.STATE,
        LayerKind.NONE,
        LayerKind.FULL,
        LayerKind.NONE,
    ]
    # Mamba2: conv over inner + 2 x groups x state = 512 + 256 channels; SSM state 8 heads x 64 x 64
    assert [(s.name, s.shape) for s in layout.layers[0].state] == [("conv", (768, 3)), ("ssm", (8, 64, 64))]
    assert layout.warnings == ()


def test_kv_heads_what_if_shrinks_kv_projections(written: dict[str, Path]) -> None:
    layout = _layout(written["llama"])
    full = weight_bytes(ReadModel(layout)).bytes_total
    # llama fixture: attn_k Q4_K (144 B per 256 values), attn_v Q6_K (210 B per 256), rows of 256 inputs,
    # 32 rows per KV head; G 2 -> 1 drops 32 rows of each in each of 4 layers.
    assert weight_bytes(ReadModel(layout), kv_heads=1).bytes_total == full - 4 * 32 * (144 + 210)
    assert weight_bytes(ReadModel(layout), kv_heads=8).bytes_total == full + 4 * 6 * 32 * (144 + 210)


def test_explicit_dtype_reprices_the_tensors(written: dict[str, Path]) -> None:
    fx = FAMILIES["llama"]()
    params = sum(int.__mul__(*((*s, 1)[:2])) for _, s, _ in fx.tensors)
    assert weight_bytes(ReadModel(_layout(written["llama"])), dtype="bf16").bytes_total == 2 * params


def test_too_many_layers_is_refused(tmp_path: Path) -> None:
    fx = llama()
    fx.metadata["llama.block_count"] = 5000
    with pytest.raises(ConfigError, match="more than kvplan accepts"):
        _layout(write_gguf(tmp_path / "deep.gguf", fx)[0])


def test_fifo_named_gguf_does_not_hang(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.gguf"
    os.mkfifo(fifo)
    with pytest.raises(ConfigFileError, match="not a regular file"):
        load_model(str(fifo))


def test_alignment_must_be_a_power_of_two(tmp_path: Path) -> None:
    fx = llama()
    fx.metadata["general.alignment"] = 24
    with pytest.raises(ConfigFileError, match="power of 2"):
        read_header(write_gguf(tmp_path / "al.gguf", fx)[0])


# ----------------------------------------------------------------------------------------------------------
# Fuzzing: a corrupted header is one clean error, never a traceback or a hang

_FUZZ_SEED: dict[str, bytes] = {}


def _seed_bytes() -> bytes:
    if "llama" not in _FUZZ_SEED:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            fx = llama()
            _FUZZ_SEED["llama"] = write_gguf(Path(tmp) / "seed.gguf", Fixture("llama", fx.metadata, fx.tensors[:6]))[
                0
            ].read_bytes()
    return _FUZZ_SEED["llama"]


@given(st.lists(st.tuples(st.integers(0, 4095), st.integers(0, 255)), min_size=1, max_size=8), st.booleans())
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_header_fails_clean(tmp_path: Path, edits: list[tuple[int, int]], truncate: bool) -> None:
    data = bytearray(_seed_bytes())
    header_end = min(len(data), 4096)
    for pos, value in edits:
        data[pos % header_end] = value
    if truncate:
        data = data[: edits[0][0] % header_end]
    path = tmp_path / "fuzz.gguf"
    path.write_bytes(bytes(data))
    try:
        layout = load_model(str(path))
    except KvplanError:
        return
    assert layout.num_layers >= 1

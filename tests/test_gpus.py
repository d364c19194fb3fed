"""The GPU catalog, --gpu parsing and the memory budget. Expected figures are recomputed here by hand."""

from __future__ import annotations

import contextlib
import csv
import math
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from kvplan.catalog import data_root
from kvplan.errors import CatalogFileError, KvplanError, OptionError, Param, UnknownGPUError
from kvplan.gpus import (
    BUNDLED,
    DEFAULT_RESERVE,
    Catalog,
    budget,
    budget_lines,
    gpu_rows,
    load_catalog,
    normalize,
    parse_bytes,
    parse_gpu,
)

#: A copy of the team's GPU reference table (shared/reference/gpus.tsv); tests/test_catalog.py checks the copy
#: against the original when the shared folder is beside the checkout.
REFERENCE_TSV = Path(__file__).resolve().parent / "fixtures" / "gpus_reference.tsv"
MIB = 1024 * 1024
GIB = 1024 * 1024 * 1024
# Examples that read files: no per-example deadline (a slow CI disk is not a failure).
FILE_EXAMPLES = settings(deadline=None)


@pytest.fixture(autouse=True)
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test reads its user gpus.yaml from a tmp folder (empty unless the test writes one)."""
    folder = tmp_path / "kvplan-config"
    folder.mkdir()
    monkeypatch.setenv("KVPLAN_CONFIG_DIR", str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return folder


@pytest.fixture
def catalog() -> Catalog:
    return load_catalog()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def entry_yaml(gpu_id: str, usable: object, aliases: str = "[]", name: str = "Test GPU") -> str:
    return (
        f"  - id: {gpu_id}\n    name: {name}\n    aliases: {aliases}\n"
        f"    usable_bytes: {usable}\n    usable_source: measured\n"
    )


# ----------------------------------------------------------------------------------------------------------
# The bundled catalog


def test_bundled_file_is_package_data() -> None:
    assert data_root().joinpath("gpus.yaml").is_file()


def test_no_user_file_means_bundled_only(catalog: Catalog) -> None:
    assert catalog.files == (BUNDLED,)
    assert all(e.origin == BUNDLED for e in catalog.entries)


def _numbers(cell: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", cell)]


def test_every_reference_row_is_in_the_catalog(catalog: Catalog) -> None:
    with REFERENCE_TSV.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert len(rows) == 36
    assert {r["name"] for r in rows} == {e.id for e in catalog.entries}
    for row in rows:
        entry = catalog.get(row["name"])
        assert entry is not None, row["name"]
        assert entry.vendor == row["vendor"], entry.id
        if row["reported_mib"]:
            assert entry.smi_total_mib == int(row["reported_mib"]), entry.id
            assert int(row["reported_bytes"]) == int(row["reported_mib"]) * MIB
        if row["torch_total_mib_min"]:
            assert entry.torch_total_mib_min == int(row["torch_total_mib_min"]), entry.id
            assert entry.torch_total_mib_max == int(row["torch_total_mib_max"]), entry.id
            if entry.usable_source == "torch":
                assert entry.usable_bytes == int(row["torch_total_mib_min"]) * MIB, entry.id
            else:  # the one exception (rtx-4090): a lower Linux figure than the (Windows) torch total
                assert entry.usable_source == "torch-oom", entry.id
                assert entry.usable_bytes is not None
                assert entry.usable_bytes < int(row["torch_total_mib_min"]) * MIB
        if row["mem_type"]:
            assert entry.memory_type == row["mem_type"], entry.id
        if row["bandwidth_tbps"]:
            assert entry.bandwidth_tbps in _numbers(row["bandwidth_tbps"]), entry.id
        else:
            assert entry.bandwidth_tbps is None, entry.id
        for column, value in (("fp8", entry.fp8), ("bf16", entry.bf16)):
            cell = row[column].strip().lower()
            expected = True if cell.startswith("yes") else False if cell.startswith("no") else None
            assert value == expected, (entry.id, column)
        marketed = _numbers(row["marketed_gb"])
        if marketed:
            assert _numbers(entry.marketed)[0] == marketed[0], entry.id
        assert entry.sources, entry.id


def test_a100_80g_plans_with_the_lowest_torch_total(catalog: Catalog) -> None:
    # The reference: nvidia-smi 81,920 MiB, torch total_memory 81,038-81,251 MiB; we plan with the lowest.
    entry = catalog.get("a100-80g")
    assert entry is not None
    assert entry.usable_bytes == 81038 * 2**20
    assert entry.usable_source == "torch"
    assert parse_gpu("a100", catalog).usable_bytes == 81038 * 2**20


@pytest.mark.parametrize(
    ("gpu_id", "expected"),
    [
        ("h100-sxm-80g", 81082 * MIB),  # lowest torch total
        ("h200-141g", 143156 * MIB),
        ("mi300x-192g", 192 * GIB - 16 * MIB),  # torch = rocm-smi = 192 GiB - 16 MiB
        ("rtx-4090", (2361 * 1024 // 100) * MIB),  # OOM "23.61 GiB" -> 24,176.64 MiB, rounded down
        ("l40-48g", (4440 * 1024 // 100) * MIB),  # OOM "44.40 GiB" -> 45,465.6 MiB, rounded down
        ("a100-pcie-80g", 81038 * MIB),  # the A100 SXM4's torch figure
        ("a10-24g", 22587 * MIB),  # the A10G's
        ("gb200", 189471 * MIB),  # nvidia-smi total, nothing known to subtract
        ("gaudi2", (98304 - 768) * MIB),  # hl-smi total minus memory used when idle
        ("gaudi3", (131072 - 672) * MIB),
        ("mi210", 64 * GIB - 16 * MIB),
        ("mi325x-256g", 256 * GIB),  # marketed GiB (ROCm table)
        ("tpu-v5e", 16 * 10**9),  # marketed GB
        ("tpu-v6e", 32 * 10**9),
    ],
)
def test_usable_bytes_per_source_kind(catalog: Catalog, gpu_id: str, expected: int) -> None:
    entry = catalog.get(gpu_id)
    assert entry is not None
    assert entry.usable_bytes == expected


def test_siblings_borrow_exactly_the_sibling_torch_figure(catalog: Catalog) -> None:
    siblings = [e for e in catalog.entries if e.usable_source == "torch-sibling"]
    assert {e.id for e in siblings} == {"a100-pcie-80g", "a800-80g", "h100-pcie-80g", "h800-80g", "a10-24g"}
    for entry in siblings:
        assert entry.usable_from is not None
        sibling = catalog.get(entry.usable_from)
        assert sibling is not None
        assert sibling.torch_total_mib_min is not None
        assert entry.smi_total_mib == sibling.smi_total_mib
        assert entry.usable_bytes == sibling.torch_total_mib_min * MIB


def test_usable_never_exceeds_the_smi_total(catalog: Catalog) -> None:
    for entry in catalog.entries:
        if entry.smi_total_mib is not None and entry.usable_bytes is not None:
            assert entry.usable_bytes <= entry.smi_total_mib * MIB, entry.id


def test_every_name_is_unique(catalog: Catalog) -> None:
    seen: dict[str, str] = {}
    for entry in catalog.entries:
        for name in entry.names:
            key = normalize(name)
            assert key, (entry.id, name)
            assert key not in seen, f"{name!r} of {entry.id} collides with {seen.get(key)}"
            seen[key] = entry.id


def test_every_id_and_alias_resolves_in_any_spelling(catalog: Catalog) -> None:
    for entry in catalog.entries:
        for name in entry.names:
            for spelling in (name, name.upper(), name.replace("-", " "), f"  {name.replace('-', '_')}  "):
                assert catalog.lookup(spelling) == entry, spelling


@pytest.mark.parametrize(
    ("device_name", "gpu_id"),
    [
        ("NVIDIA A100-SXM4-80GB", "a100-80g"),
        ("NVIDIA A100 80GB PCIe", "a100-pcie-80g"),
        ("NVIDIA A100-SXM4-40GB", "a100-40g"),
        ("NVIDIA H100 80GB HBM3", "h100-sxm-80g"),
        ("NVIDIA H100 PCIe", "h100-pcie-80g"),
        ("NVIDIA H100 NVL", "h100-nvl-94g"),
        ("NVIDIA H200", "h200-141g"),
        ("NVIDIA B200", "b200-192g"),
        ("NVIDIA L4", "l4-24g"),
        ("NVIDIA L40S", "l40s-48g"),
        ("NVIDIA A10G", "a10g-24g"),
        ("Tesla T4", "t4-16g"),
        ("Tesla V100-SXM2-16GB", "v100-16g"),
        ("Tesla V100-SXM2-32GB", "v100-32g"),
        ("NVIDIA GeForce RTX 3090", "rtx-3090"),
        ("NVIDIA GeForce RTX 4090", "rtx-4090"),
        ("GeForce RTX 4090", "rtx-4090"),  # vendor words dropped when the name does not match as typed
        ("NVIDIA RTX 6000 Ada Generation", "rtx-6000-ada-48g"),
        ("NVIDIA RTX A6000", "rtx-a6000-48g"),
        ("AMD Instinct MI300X", "mi300x-192g"),
        ("h100", "h100-sxm-80g"),
        ("h200", "h200-141g"),
        ("mi300x", "mi300x-192g"),
        ("4090", "rtx-4090"),
        ("A100 80GB", "a100-80g"),
    ],
)
def test_device_names_resolve(catalog: Catalog, device_name: str, gpu_id: str) -> None:
    assert parse_gpu(device_name, catalog).entry == catalog.get(gpu_id)


def test_gpu_rows_list_every_entry(catalog: Catalog) -> None:
    rows = gpu_rows(catalog)
    assert [r.id for r in rows] == [e.id for e in catalog.entries]
    a100 = next(r for r in rows if r.id == "a100-80g")
    assert (a100.usable_bytes, a100.usable_source, a100.vendor, a100.fp8, a100.bf16) == (
        81038 * MIB,
        "torch",
        "NVIDIA",
        False,
        True,
    )
    assert "a100" in a100.aliases
    assert next(r for r in rows if r.id == "apple-m-series").usable_bytes is None


# ----------------------------------------------------------------------------------------------------------
# --gpu and sizes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("75GiB", 75 * 2**30),
        ("24GB", 24 * 10**9),
        ("80 GiB", 80 * 2**30),
        ("81920MiB", 81920 * 2**20),
        ("1.5TB", 15 * 10**11),
        ("512mib", 512 * 2**20),
        ("0.5GiB", 2**29),
    ],
)
def test_raw_sizes_are_exact(catalog: Catalog, text: str, expected: int) -> None:
    gpu = parse_gpu(text, catalog)
    assert gpu.entry is None
    assert gpu.usable_bytes == expected
    assert gpu.count == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GiB", 2 * 2**30),
        ("512MiB", 512 * 2**20),
        ("8GB", 8 * 10**9),
        ("0B", 0),
        ("1.5TiB", 3 * 2**39),
        ("0.1KiB", 102),  # 102.4 B: a fractional byte is rounded down
        ("7kB", 7000),
    ],
)
def test_parse_bytes(text: str, expected: int) -> None:
    assert parse_bytes(text, Param.RESERVE_BYTES) == expected


UNIT_FACTORS = {"B": 1, "kB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}
UNIT_FACTORS |= {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "TiB": 1024**4}


@given(
    whole=st.integers(0, 10**6),
    digits=st.text("0123456789", max_size=4),
    unit=st.sampled_from(sorted(UNIT_FACTORS)),
    space=st.sampled_from(["", " "]),
)
def test_parse_bytes_is_exact_for_any_decimal(whole: int, digits: str, unit: str, space: str) -> None:
    text = f"{whole}.{digits}{space}{unit}" if digits else f"{whole}{space}{unit}"
    scale = 10 ** len(digits)
    numerator = (whole * scale + int(digits or "0")) * UNIT_FACTORS[unit]
    assert parse_bytes(text, Param.KV_MEMORY) == numerator // scale
    assert parse_bytes(text.lower(), Param.KV_MEMORY) == numerator // scale


@pytest.mark.parametrize("text", ["80", "80 ", "2.5", "81920"])
def test_a_number_without_a_unit_is_an_error(catalog: Catalog, text: str) -> None:
    with pytest.raises(OptionError, match="no unit") as err:
        parse_gpu(text, catalog)
    assert err.value.param is Param.GPU
    with pytest.raises(OptionError, match="no unit"):
        parse_bytes(text, Param.RESERVE_BYTES)


@pytest.mark.parametrize("text", ["80G", "24g", "512M", "2T"])
def test_a_bare_prefix_is_ambiguous(catalog: Catalog, text: str) -> None:
    with pytest.raises(OptionError, match="ambiguous") as err:
        parse_gpu(text, catalog)
    assert "GiB" in str(err.value) or "MiB" in str(err.value) or "TiB" in str(err.value)


@pytest.mark.parametrize("text", ["-2GiB", "GiB", "two GiB", "2 GiBs", ""])
def test_parse_bytes_rejects_non_sizes(text: str) -> None:
    with pytest.raises(OptionError) as err:
        parse_bytes(text, Param.RESERVE_BYTES)
    assert err.value.param is Param.RESERVE_BYTES


@pytest.mark.parametrize("text", ["8xh100", "8x h100", "8 x h100", "8Xh100", "8*h100", "8×h100"])
def test_count_prefix(catalog: Catalog, text: str) -> None:
    gpu = parse_gpu(text, catalog)
    assert gpu.entry == catalog.get("h100-sxm-80g")
    assert gpu.count == 8
    assert gpu.usable_bytes == 81082 * MIB
    assert gpu.total_usable_bytes == 8 * 81082 * MIB


def test_count_with_id_and_with_raw_size(catalog: Catalog) -> None:
    a100 = parse_gpu("2xA100-80G", catalog)
    assert (a100.entry, a100.count) == (catalog.get("a100-80g"), 2)
    raw = parse_gpu("4x80GiB", catalog)
    assert (raw.entry, raw.count, raw.usable_bytes) == (None, 4, 80 * 2**30)


def test_num_gpus_sets_or_must_match_the_count(catalog: Catalog) -> None:
    assert parse_gpu("h100", catalog, num_gpus=4).count == 4
    assert parse_gpu("8xh100", catalog, num_gpus=8).count == 8
    assert parse_gpu("h100", catalog).count == 1
    with pytest.raises(OptionError) as err:
        parse_gpu("8xh100", catalog, num_gpus=4)
    assert "8" in str(err.value)
    assert "4" in str(err.value)
    assert "8xh100" in str(err.value)


@pytest.mark.parametrize(("text", "num_gpus"), [("0xh100", None), ("h100", 0), ("h100", -1), ("8x", None)])
def test_bad_counts(catalog: Catalog, text: str, num_gpus: int | None) -> None:
    with pytest.raises(OptionError):
        parse_gpu(text, catalog, num_gpus=num_gpus)


def test_zero_raw_size_is_an_error(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match=r"^gpu:"):
        parse_gpu("0GiB", catalog)


@pytest.mark.parametrize(
    ("typo", "expected"),
    [("h1000", "h100"), ("a100-8g", "a100-80g"), ("mi300", "mi300x-192g"), ("rtx-4900", "rtx-4090")],
)
def test_unknown_gpu_suggests_close_names(catalog: Catalog, typo: str, expected: str) -> None:
    with pytest.raises(UnknownGPUError) as err:
        parse_gpu(typo, catalog)
    assert err.value.name == typo
    assert 1 <= len(err.value.suggestions) <= 5
    target = catalog.lookup(expected)
    assert target is not None
    assert any(catalog.lookup(s) == target for s in err.value.suggestions), err.value.suggestions
    assert typo in str(err.value)


def test_ambiguous_family_name_lists_both(catalog: Catalog) -> None:
    with pytest.raises(UnknownGPUError) as err:
        parse_gpu("v100", catalog)
    assert {"v100-16g", "v100-32g"} <= set(err.value.suggestions)


def test_apple_asks_for_a_raw_size(catalog: Catalog) -> None:
    with pytest.raises(OptionError, match="raw size") as err:
        parse_gpu("apple-m-series", catalog)
    assert err.value.param is Param.GPU
    assert "recommendedMaxWorkingSetSize" in str(err.value)


# ----------------------------------------------------------------------------------------------------------
# User files


def test_user_file_adds_and_overrides(user_config: Path) -> None:
    write(
        user_config / "gpus.yaml",
        "entries:\n"
        + entry_yaml("my-gpu", 50 * 10**9, "[ours]")
        + entry_yaml("a100-80g", 79 * 2**30, "[a100, our-a100]", name="Our A100"),
    )
    catalog = load_catalog()
    assert catalog.files == (BUNDLED, str(user_config / "gpus.yaml"))
    mine = parse_gpu("ours", catalog)
    assert mine.entry is not None
    assert mine.entry.id == "my-gpu"
    assert mine.usable_bytes == 50 * 10**9
    a100 = parse_gpu("a100", catalog)
    assert a100.usable_bytes == 79 * 2**30
    assert a100.label == "Our A100"
    assert str(user_config / "gpus.yaml") in a100.source
    # The override replaced the whole entry: the bundled aliases it did not restate are gone.
    assert catalog.lookup("NVIDIA A100-SXM4-80GB") is None
    # Still one a100-80g, in its bundled position.
    ids = [e.id for e in catalog.entries]
    assert ids.count("a100-80g") == 1
    assert ids.index("a100-80g") == 0
    assert ids[-1] == "my-gpu"


def test_gpu_files_come_after_the_user_file(user_config: Path, tmp_path: Path) -> None:
    write(user_config / "gpus.yaml", "entries:\n" + entry_yaml("my-gpu", 1000))
    extra = write(tmp_path / "extra.yaml", "entries:\n" + entry_yaml("my-gpu", 2000))
    assert parse_gpu("my-gpu", load_catalog([extra])).usable_bytes == 2000


def test_xdg_config_home_is_the_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVPLAN_CONFIG_DIR")
    folder = tmp_path / "xdg" / "kvplan"
    folder.mkdir(parents=True)
    write(folder / "gpus.yaml", "entries:\n" + entry_yaml("xdg-gpu", 1234))
    assert parse_gpu("xdg-gpu", load_catalog()).usable_bytes == 1234


def test_empty_user_file_is_fine(user_config: Path) -> None:
    write(user_config / "gpus.yaml", "")
    assert len(load_catalog().entries) == len(load_catalog([]).entries)


def test_broken_user_file_names_each_field(user_config: Path) -> None:
    path = write(
        user_config / "gpus.yaml",
        "entries:\n"
        + entry_yaml("ok-gpu", 1000)
        + entry_yaml("float-gpu", "8.5e10")
        + "  - id: typo-gpu\n    name: T\n    usable_byte: 5\n    usable_source: measured\n"
        + "  - id: lie-gpu\n    name: L\n    usable_bytes: 123\n    usable_source: torch\n"
        + "    torch_total_mib_min: 1000\n",
    )
    with pytest.raises(CatalogFileError) as err:
        load_catalog()
    assert err.value.path == str(path)
    problems = "\n".join(err.value.problems)
    assert re.search(r"^entries\.1\.usable_bytes: .*valid integer", problems, re.M), problems
    assert re.search(r"^entries\.2\.usable_byte: Extra inputs are not permitted", problems, re.M), problems
    assert re.search(r"^entries\.2\.usable_bytes: Field required", problems, re.M), problems
    # torch means torch_total_mib_min x 2^20 = 1000 x 1,048,576 = 1,048,576,000
    assert re.search(r"^entries\.3\.usable_bytes: .*1,048,576,000", problems, re.M), problems
    assert not any(p.startswith("entries.0") for p in err.value.problems)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (entry_yaml("h100", 1000), "entries.0.id"),  # an id that is another entry's alias
        (entry_yaml("new-gpu", 1000, "[a100]"), "entries.0.aliases.0"),  # an alias that is taken
        (entry_yaml("new-gpu", 1000, '["H100 SXM"]'), "entries.0.aliases.0"),  # the same after normalising
        (entry_yaml("new-gpu", 1000) + entry_yaml("new-gpu", 2000), "entries.1.id"),  # a duplicate id
        (entry_yaml("BadId", 1000), "entries.0.id"),
        (entry_yaml("new-gpu", 0), "entries.0.usable_bytes"),
        (entry_yaml("new-gpu", "null"), "entries.0.usable_bytes"),
        (
            entry_yaml("new-gpu", 1000).replace("measured", "torch-sibling\n    usable_from: nope"),
            "entries.0.usable_from",
        ),
    ],
)
def test_user_file_conflicts_are_field_errors(tmp_path: Path, body: str, field: str) -> None:
    path = write(tmp_path / "g.yaml", "entries:\n" + body)
    with pytest.raises(CatalogFileError) as err:
        load_catalog([path])
    assert any(p.startswith(f"{field}: ") for p in err.value.problems), err.value.problems


@pytest.mark.parametrize("text", ["entries:\n  - id: [\n", "entries: {a: 1\n", "\tentries: x\n"])
def test_invalid_yaml_is_a_catalog_file_error(tmp_path: Path, text: str) -> None:
    path = write(tmp_path / "g.yaml", text)
    with pytest.raises(CatalogFileError, match="YAML") as err:
        load_catalog([path])
    assert err.value.path == str(path)


@pytest.mark.parametrize("text", ["- id: x\n", "just text\n", "42\n", "entries: 5\n", "gpus: []\n"])
def test_wrong_shapes_are_catalog_file_errors(tmp_path: Path, text: str) -> None:
    with pytest.raises(CatalogFileError):
        load_catalog([write(tmp_path / "g.yaml", text)])


def test_missing_gpu_file_is_a_catalog_file_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogFileError, match="cannot be read"):
        load_catalog([tmp_path / "nope.yaml"])


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
entry_keys = st.sampled_from(["id", "name", "aliases", "usable_bytes", "usable_source", "vendor", "fp8", "x"])


@FILE_EXAMPLES
@given(
    data=st.one_of(
        yaml_values,
        st.fixed_dictionaries({"entries": st.lists(st.dictionaries(entry_keys, yaml_values, max_size=6))}),
    )
)
def test_any_user_file_loads_or_gives_a_catalog_file_error(data: object) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gpus.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        problems: tuple[str, ...] = ()
        try:
            load_catalog([path])
        except CatalogFileError as err:
            problems = err.problems or ("(none)",)
        assert all(": " in p for p in problems), problems


@FILE_EXAMPLES
@given(text=st.text(max_size=60))
def test_any_text_loads_or_gives_a_catalog_file_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "gpus.yaml"
        path.write_text(text, encoding="utf-8")
        with contextlib.suppress(CatalogFileError):
            load_catalog([path])


@FILE_EXAMPLES
@given(text=st.text(max_size=20))
def test_any_gpu_text_parses_or_gives_a_kvplan_error(text: str) -> None:
    catalog = load_catalog()
    try:
        gpu = parse_gpu(text, catalog)
    except KvplanError:
        return
    assert gpu.usable_bytes > 0
    assert gpu.count >= 1


# ----------------------------------------------------------------------------------------------------------
# The budget


def test_budget_hand_worked(catalog: Catalog) -> None:
    # 80 GiB x 0.9 = 72 GiB requested; 72 - 20 GiB weights - 2 GiB reserve = 50 GiB for the KV cache.
    gpu = parse_gpu("2x80GiB", catalog)
    b = budget(gpu, weights_bytes_per_gpu=20 * 2**30, utilization=0.9, reserve_bytes=2 * 2**30)
    assert b.usable_bytes == 85_899_345_920
    assert b.requested_bytes == 77_309_411_328 == 72 * 2**30
    assert b.kv_bytes_per_gpu == 53_687_091_200 == 50 * 2**30
    assert b.kv_bytes_total == 100 * 2**30
    assert (b.weights_bytes, b.reserve_bytes, b.count, b.fits) == (20 * 2**30, 2 * 2**30, 2, True)
    lines = budget_lines(b)
    assert lines[0] == (
        "80 GiB usable x 0.90 = 72 GiB - 20 GiB weights - 2 GiB reserve = 50 GiB for the KV cache per GPU"
    )
    text = "\n".join(lines)
    assert "77,309,411,328" in text
    assert "53,687,091,200" in text
    assert "107,374,182,400" in text


def test_budget_rounds_up_like_vllm(catalog: Catalog) -> None:
    # A100 80GB: 81,038 MiB = 84,974,501,888 B; x 0.9 = 76,477,051,699.2 -> ceil 76,477,051,700.
    b = budget(parse_gpu("a100", catalog), weights_bytes_per_gpu=0, reserve_bytes=0)
    assert b.utilization == 0.9
    assert b.requested_bytes == -(-(81038 * 2**20 * 9) // 10) == 76_477_051_700
    assert b.kv_bytes_per_gpu == b.requested_bytes


def test_default_reserve_is_2_gib(catalog: Catalog) -> None:
    assert DEFAULT_RESERVE == 2 * 1024**3
    b = budget(parse_gpu("24GB", catalog), weights_bytes_per_gpu=0)
    assert b.reserve_bytes == 2 * 1024**3
    assert b.kv_bytes_per_gpu == 24 * 10**9 * 9 // 10 - 2 * 1024**3


def test_negative_budget_stays_negative(catalog: Catalog) -> None:
    # 24 GB x 0.9 = 21.6e9 B; 21.6e9 - 26e9 weights - 2 GiB = -6,547,483,648 B.
    b = budget(parse_gpu("24GB", catalog), weights_bytes_per_gpu=26 * 10**9)
    assert b.requested_bytes == 21_600_000_000
    assert b.kv_bytes_per_gpu == 21_600_000_000 - 26_000_000_000 - 2_147_483_648 == -6_547_483_648
    assert not b.fits
    assert b.shortfall_bytes == 6_547_483_648
    assert b.kv_bytes_total == 0
    assert any("nothing fits" in line and "6,547,483,648" in line for line in budget_lines(b))


@given(
    usable=st.integers(1, 2**42),
    percent=st.integers(1, 100),
    weights=st.integers(0, 2**40),
    reserve=st.integers(0, 2**34),
)
def test_budget_terms_add_up_exactly(usable: int, percent: int, weights: int, reserve: int) -> None:
    gpu = parse_gpu(f"{usable}B", Catalog(()))
    b = budget(gpu, weights_bytes_per_gpu=weights, utilization=percent / 100, reserve_bytes=reserve)
    assert b.requested_bytes == -(-usable * percent // 100)  # ceil(usable x percent / 100) in integers
    assert b.kv_bytes_per_gpu + weights + reserve == b.requested_bytes
    more = budget(gpu, weights_bytes_per_gpu=weights, utilization=percent / 100, reserve_bytes=reserve + 1)
    assert more.kv_bytes_per_gpu == b.kv_bytes_per_gpu - 1


@pytest.mark.parametrize("utilization", [0, 0.0, -0.1, 1.01, 2, float("nan"), float("inf"), True])
def test_utilization_is_validated(catalog: Catalog, utilization: float) -> None:
    with pytest.raises(OptionError) as err:
        budget(parse_gpu("80GiB", catalog), weights_bytes_per_gpu=0, utilization=utilization)
    assert err.value.param is Param.UTILIZATION


def test_utilization_of_one_is_allowed(catalog: Catalog) -> None:
    b = budget(parse_gpu("80GiB", catalog), weights_bytes_per_gpu=0, utilization=1.0, reserve_bytes=0)
    assert b.kv_bytes_per_gpu == 80 * 2**30


@pytest.mark.parametrize("reserve", [-1, -(2**30)])
def test_reserve_is_validated(catalog: Catalog, reserve: int) -> None:
    with pytest.raises(OptionError) as err:
        budget(parse_gpu("80GiB", catalog), weights_bytes_per_gpu=0, reserve_bytes=reserve)
    assert err.value.param is Param.RESERVE_BYTES


def test_reserve_of_zero_is_allowed(catalog: Catalog) -> None:
    b = budget(parse_gpu("10GiB", catalog), weights_bytes_per_gpu=2**30, utilization=0.5, reserve_bytes=0)
    assert b.kv_bytes_per_gpu == 5 * 2**30 - 2**30


def test_explanation_names_the_source(catalog: Catalog) -> None:
    b = budget(parse_gpu("8xh100", catalog), weights_bytes_per_gpu=10 * 2**30)
    text = "\n".join(b.explain())
    assert "h100-sxm-80g" in text
    assert "torch" in text
    assert f"{81082 * MIB:,}" in text
    assert "KV cache on 8 GPUs" in text
    assert math.isclose(b.utilization, 0.9)

"""The GPU catalog (configs/gpus.yaml plus the user's own files), ``--gpu`` parsing and the memory budget.

Which capacity kvplan plans with: vLLM sizes its budget as ``ceil(total x gpu_memory_utilization)`` where total
is cudaMemGetInfo's total, the figure ``torch.cuda.get_device_properties(i).total_memory`` reports. On Linux
that is the nvidia-smi total minus what the driver reserves (A100 80GB: 81,920 MiB in nvidia-smi, 81,038 to
81,251 MiB in torch). So each catalog entry's ``usable_bytes`` is the lowest torch total observed where one is
known, else a figure derived from the vendor tool's total, else the marketed capacity; ``usable_source`` says
which, and the loader checks the bytes against the figure it names. docs/gpus.md has the details.

The budget is then, per GPU, ``ceil(usable x utilization) - weights - reserve``; every term is kept on
:class:`Budget` and :func:`budget_lines` writes the arithmetic out. All sizes are exact integer bytes.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from kvplan.catalog import data_root
from kvplan.errors import CatalogFileError, FileReadError, OptionError, Param, UnknownGPUError, spell
from kvplan.files import read_text
from kvplan.limits import MAX_COUNT
from kvplan.units import exact_and_human, human_bytes
from kvplan.yamlread import load_yaml

if TYPE_CHECKING:
    from kvplan.engines import Engine, Workload
    from kvplan.engines.budget import KvBudget

MiB = 2**20
GiB = 2**30

#: Per-GPU memory kept back for what is neither weights nor KV cache, for engines without measured terms
#: (ideal, transformers, llama.cpp) when the user gives no --reserve. The rule and its reasons live with the
#: engines (kvplan.engines.base.Engine.STATED_RESERVE); tests/test_engine_budget.py holds the two equal.
DEFAULT_RESERVE = 2 * GiB

UsableSource = Literal["torch", "torch-oom", "torch-sibling", "smi", "marketed", "measured", "none"]

#: One-line meaning of each usable_source, for listings and explanations.
SOURCE_MEANINGS: dict[str, str] = {
    "torch": "torch total_memory (lowest observed)",
    "torch-oom": "torch OOM 'total capacity' (lowest seen)",
    "torch-sibling": "derived: torch total_memory of a card with the same memory",
    "smi": "derived: vendor tool (nvidia-smi, rocm-smi, hl-smi) total minus reserved",
    "marketed": "marketed capacity (no software-reported figure)",
    "measured": "your own measurement",
    "none": "no fixed capacity: pass a raw size",
}

BUNDLED = "kvplan:configs/gpus.yaml"
USER_FILE_NAME = "gpus.yaml"

# ----------------------------------------------------------------------------------------------------------
# The file format (pydantic, at the edge)

Positive = Annotated[StrictInt, Field(gt=0, le=MAX_COUNT)]
NonNegative = Annotated[StrictInt, Field(ge=0, le=MAX_COUNT)]
Text = Annotated[str, Field(min_length=1)]


class MeasuredModel(BaseModel):
    """What ``kvplan verify --save-gpu`` measured on a CUDA device (the ``measured:`` block of an entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: cudaMemGetInfo's total (torch.cuda.mem_get_info), the figure vLLM's budget starts from.
    total_bytes: Positive
    #: cudaMemGetInfo's free once verify's process held its CUDA context, before it allocated anything.
    free_bytes: NonNegative
    #: total - free then: this process's CUDA context and whatever else held the device.
    context_bytes: NonNegative
    #: The caching allocator's reserve beyond the tensors' storage, the largest over verify's plans.
    allocator_bytes: NonNegative | None = None
    device_name: Text
    torch_version: Text
    cuda_version: str = ""
    #: ISO 8601 date and time (UTC) of the measurement.
    measured_at: Text
    kvplan_version: str = ""


class GpuEntryModel(BaseModel):
    """One entry of a gpus.yaml file, as written. A typo in a key is an error (extra="forbid")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")]
    name: Text
    vendor: str = ""
    aliases: list[Text] = Field(default_factory=list)
    #: The capacity as the vendor states it ("80 GB", "192 GiB (per ROCm table)").
    marketed: str = ""
    memory_type: str | None = None
    bandwidth_tbps: Annotated[float, Field(gt=0)] | None = None
    fp8: StrictBool | None = None
    bf16: StrictBool | None = None
    #: The vendor tool that printed smi_total_mib.
    smi_tool: Literal["nvidia-smi", "rocm-smi", "rocminfo", "hl-smi"] | None = None
    smi_total_mib: Positive | None = None
    #: Driver-reserved memory (nvidia-smi -q Reserved) or memory used on an idle device (hl-smi), largest seen.
    smi_reserved_mib: NonNegative | None = None
    torch_total_mib_min: Positive | None = None
    torch_total_mib_max: Positive | None = None
    torch_oom_gib_min: Annotated[float, Field(gt=0)] | None = None
    torch_oom_gib_max: Annotated[float, Field(gt=0)] | None = None
    #: The per-device capacity kvplan plans with (null only with usable_source: none).
    usable_bytes: Positive | None
    usable_source: UsableSource
    #: torch-sibling: the id of the entry whose torch figure this one borrows.
    usable_from: str | None = None
    usable_note: str = ""
    notes: str = ""
    sources: list[str] = Field(default_factory=list)
    #: Written by ``kvplan verify --save-gpu`` (with usable_source: measured and usable_bytes = total_bytes).
    measured: MeasuredModel | None = None


class GpuFileModel(BaseModel):
    """A whole gpus.yaml file: ``entries:``, a list of GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: list[GpuEntryModel] = Field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------
# The internal model


@dataclass(frozen=True)
class MeasuredGpu:
    """A device's memory as ``kvplan verify --save-gpu`` measured it (see :class:`MeasuredModel`)."""

    total_bytes: int
    free_bytes: int
    context_bytes: int
    allocator_bytes: int | None
    device_name: str
    torch_version: str
    cuda_version: str
    measured_at: str
    kvplan_version: str


@dataclass(frozen=True)
class GpuEntry:
    """One accelerator (one device: an MI250X GCD is one) of the loaded catalog."""

    id: str
    name: str
    vendor: str
    aliases: tuple[str, ...]
    marketed: str
    memory_type: str | None
    bandwidth_tbps: float | None
    fp8: bool | None
    bf16: bool | None
    smi_tool: str | None
    smi_total_mib: int | None
    smi_reserved_mib: int | None
    torch_total_mib_min: int | None
    torch_total_mib_max: int | None
    torch_oom_gib_min: float | None
    torch_oom_gib_max: float | None
    #: Bytes per device kvplan plans with; None where there is no fixed capacity (Apple).
    usable_bytes: int | None
    usable_source: str
    usable_from: str | None
    usable_note: str
    notes: str
    sources: tuple[str, ...]
    #: Where the entry was read: ``kvplan:configs/gpus.yaml`` or a user file's path.
    origin: str = BUNDLED
    #: What ``kvplan verify --save-gpu`` measured, for an entry it wrote.
    measured: MeasuredGpu | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """The id and every alias."""
        return (self.id, *self.aliases)

    @property
    def source_text(self) -> str:
        """Where usable_bytes comes from, in words, with the file when it is not the bundled catalog."""
        text = self.usable_note or SOURCE_MEANINGS[self.usable_source]
        return text if self.origin == BUNDLED else f"{text} (from {self.origin})"


def _entry(model: GpuEntryModel, origin: str) -> GpuEntry:
    data = model.model_dump()
    data["aliases"] = tuple(model.aliases)
    data["sources"] = tuple(model.sources)
    data["measured"] = None if model.measured is None else MeasuredGpu(**model.measured.model_dump())
    return GpuEntry(**data, origin=origin)


def normalize(name: str) -> str:
    """The lookup key of a GPU name: lower case, without spaces, underscores or hyphens."""
    return re.sub(r"[\s_-]+", "", name).lower()


#: Vendor words that torch / nvidia-smi put before a product name; dropped when a name does not match as typed
#: ("NVIDIA GeForce RTX 4090" -> "rtx4090", "AMD Instinct MI300X" -> "mi300x").
_VENDOR_PREFIXES = ("nvidia", "geforce", "tesla", "amd", "instinct", "intel", "google")


@dataclass(frozen=True)
class Catalog:
    """The loaded catalog: bundled entries, then the user's file, then each --gpu-file (later ones win)."""

    entries: tuple[GpuEntry, ...]
    #: The files read, in order.
    files: tuple[str, ...] = ()
    #: normalize(id or alias) -> id. Built by :func:`load_catalog`, which checks that no two names collide.
    index: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def get(self, gpu_id: str) -> GpuEntry | None:
        """The entry with this exact id."""
        return next((e for e in self.entries if e.id == gpu_id), None)

    def lookup(self, name: str) -> GpuEntry | None:
        """The entry an id or alias names (case, space, underscore and hyphen insensitive), or None."""
        key = normalize(name)
        while key:
            if key in self.index:
                return self.get(self.index[key])
            prefix = next((p for p in _VENDOR_PREFIXES if key.startswith(p) and len(key) > len(p)), None)
            if prefix is None:
                return None
            key = key.removeprefix(prefix)
        return None

    def suggestions(self, name: str, limit: int = 5) -> list[str]:
        """The closest ids and aliases (at most one per GPU, the id when it is among the matches)."""
        spelled: dict[str, tuple[str, str]] = {}
        for entry in self.entries:
            for n in entry.names:
                spelled.setdefault(normalize(n), (n, entry.id))
        query = normalize(name)
        # Names that extend what was typed ("v100" -> v100-16g, v100-32g) first, then difflib's closest.
        extending = sorted(k for k in spelled if query and k.startswith(query) and k != query)
        matches = extending + difflib.get_close_matches(query, list(spelled), n=len(spelled), cutoff=0.6)
        out: dict[str, str] = {}
        for key in matches:
            shown, gpu_id = spelled[key]
            if gpu_id not in out:
                out[gpu_id] = shown
            elif shown == gpu_id:
                out[gpu_id] = gpu_id
        return list(out.values())[:limit]


# ----------------------------------------------------------------------------------------------------------
# Loading


def config_dir() -> Path:
    """kvplan's user config folder: $KVPLAN_CONFIG_DIR, else $XDG_CONFIG_HOME/kvplan, else ~/.config/kvplan."""
    explicit = os.environ.get("KVPLAN_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "kvplan"


def user_catalog_path() -> Path:
    """The user's own GPU file (it need not exist)."""
    return config_dir() / USER_FILE_NAME


def _loc(parts: Sequence[str | int]) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _pydantic_problems(err: ValidationError, model: type[BaseModel]) -> list[str]:
    """``field: message`` lines, with a did-you-mean for a misspelled key."""
    known = list(GpuEntryModel.model_fields) + list(model.model_fields)
    lines = []
    for e in err.errors(include_url=False):
        message = str(e["msg"]).removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and e["loc"]:
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            if close:
                message += f" (did you mean {close[0]}?)"
        lines.append(f"{_loc(e['loc'])}: {message}")
    return lines


def _fraction(value: float) -> Fraction:
    """The decimal a float was written as (0.9 -> 9/10), not its binary approximation."""
    return Fraction(str(value))


def _expected_usable(m: GpuEntryModel) -> tuple[int | None, str]:
    """What usable_bytes must be for the entry's usable_source, and the arithmetic (None: nothing to check)."""
    if m.usable_source == "torch" and m.torch_total_mib_min is not None:
        return m.torch_total_mib_min * MiB, f"torch_total_mib_min x 2^20 = {m.torch_total_mib_min:,} x 2^20"
    if m.usable_source == "torch-oom" and m.torch_oom_gib_min is not None:
        mib = math.floor(_fraction(m.torch_oom_gib_min) * 1024)
        return mib * MiB, f"floor(torch_oom_gib_min x 1024) MiB = {mib:,} x 2^20"
    if m.usable_source == "smi" and m.smi_total_mib is not None:
        reserved = m.smi_reserved_mib or 0
        how = f"(smi_total_mib - smi_reserved_mib) x 2^20 = ({m.smi_total_mib:,} - {reserved:,}) x 2^20"
        return (m.smi_total_mib - reserved) * MiB, how
    return None, ""


def _entry_problems(i: int, m: GpuEntryModel) -> list[str]:
    """Checks across fields of one entry (types were checked by pydantic)."""
    at = f"entries.{i}"
    problems = []
    needs = {"torch": "torch_total_mib_min", "torch-oom": "torch_oom_gib_min", "smi": "smi_total_mib"}
    if m.usable_source in needs and getattr(m, needs[m.usable_source]) is None:
        problems.append(
            f"{at}.{needs[m.usable_source]}: required by usable_source {m.usable_source!r} "
            "(or use usable_source: measured for a figure of your own)"
        )
    expected, how = _expected_usable(m)
    if expected is not None and m.usable_bytes != expected:
        problems.append(
            f"{at}.usable_bytes: usable_source {m.usable_source!r} means {how} = {expected:,}, "
            f"not {m.usable_bytes!r} (use usable_source: measured for a figure of your own)"
        )
    if (m.usable_bytes is None) != (m.usable_source == "none"):
        problems.append(f"{at}.usable_bytes: must be null exactly when usable_source is 'none'")
    if (m.usable_from is not None) != (m.usable_source == "torch-sibling"):
        problems.append(
            f"{at}.usable_from: give the id of the sibling entry exactly when usable_source is 'torch-sibling'"
        )
    for low, high in (("torch_total_mib_min", "torch_total_mib_max"), ("torch_oom_gib_min", "torch_oom_gib_max")):
        lo, hi = getattr(m, low), getattr(m, high)
        if lo is not None and hi is not None and lo > hi:
            problems.append(f"{at}.{high}: {hi} is below {low} ({lo})")
    if m.smi_reserved_mib is not None and m.smi_total_mib is not None and m.smi_reserved_mib >= m.smi_total_mib:
        problems.append(f"{at}.smi_reserved_mib: must be below smi_total_mib ({m.smi_total_mib})")
    if m.measured is not None:
        if m.usable_source != "measured":
            problems.append(f"{at}.usable_source: an entry with a measured: block has usable_source: measured")
        if m.usable_bytes != m.measured.total_bytes:
            problems.append(
                f"{at}.usable_bytes: must equal measured.total_bytes ({m.measured.total_bytes:,}), what was measured"
            )
        if m.measured.context_bytes != m.measured.total_bytes - m.measured.free_bytes:
            problems.append(f"{at}.measured.context_bytes: must be total_bytes - free_bytes")
    return problems


def _read(text: str, where: str) -> list[GpuEntryModel]:
    """Parse and validate one file's text; every problem becomes a CatalogFileError line."""
    import yaml

    try:
        data: Any = load_yaml(text)
    except ValueError as err:  # an integer past CPython's 4,300-digit conversion limit
        raise CatalogFileError(where, [f"(file): a number is too long to read ({str(err).split(':')[0]})"]) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or (str(err).splitlines() or ["cannot be parsed"])[0]
        raise CatalogFileError(where, [f"(file): not valid YAML: {problem}{at}"]) from err
    if data is None:
        return []
    if not isinstance(data, dict):
        raise CatalogFileError(where, ["(top level): expected a mapping with an 'entries:' list of GPUs"])
    try:
        parsed = GpuFileModel.model_validate(data)
    except ValidationError as err:
        problems = _pydantic_problems(err, GpuFileModel)
        # Also report the cross-field problems of the entries that are well typed, so one run shows them all.
        raw = data.get("entries")
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            try:
                problems += _entry_problems(i, GpuEntryModel.model_validate(item))
            except ValidationError:
                continue
        raise CatalogFileError(where, problems) from err
    problems = [p for i, m in enumerate(parsed.entries) for p in _entry_problems(i, m)]
    first: dict[str, int] = {}
    for i, m in enumerate(parsed.entries):
        if m.id in first:
            problems.append(f"entries.{i}.id: duplicate id {m.id!r} (first at entries.{first[m.id]})")
        first.setdefault(m.id, i)
    if problems:
        raise CatalogFileError(where, problems)
    return parsed.entries


def _merge(
    current: list[GpuEntry], models: Sequence[GpuEntryModel], where: str
) -> tuple[list[GpuEntry], dict[str, str]]:
    """Add one file's entries (same id: replace) and rebuild the name index, blaming collisions on this file."""
    merged = list(current)
    position = {e.id: n for n, e in enumerate(merged)}
    mine: dict[str, int] = {}
    for i, m in enumerate(models):
        entry = _entry(m, where)
        mine[m.id] = i
        if m.id in position:
            if "aliases" not in m.model_fields_set:  # an override keeps the names users type unless it sets them
                entry = replace(entry, aliases=merged[position[m.id]].aliases)
            merged[position[m.id]] = entry
        else:
            position[m.id] = len(merged)
            merged.append(entry)

    index: dict[str, str] = {}
    claimed_at: dict[str, str] = {}
    problems = [
        f"entries.{i}.usable_from: no entry has the id {m.usable_from!r}"
        for i, m in enumerate(models)
        if m.usable_from is not None and m.usable_from not in position
    ]

    def describe(gpu_id: str) -> str:
        origin = merged[position[gpu_id]].origin
        return gpu_id if origin == where else f"{gpu_id} ({origin})"

    def claim(key: str, gpu_id: str, loc: str, shown: str) -> None:
        holder = index.get(key)
        if holder is None:
            index[key] = gpu_id
            claimed_at[key] = loc
        elif holder != gpu_id:
            if gpu_id in mine:
                problems.append(f"{loc}: {shown!r} is already a name of {describe(holder)}")
            else:  # an earlier entry's alias collides with a name this file claimed first
                problems.append(f"{claimed_at[key]}: {shown!r} is already a name of {describe(gpu_id)}")

    for entry in merged:
        loc = f"entries.{mine[entry.id]}.id" if entry.id in mine else entry.id
        claim(normalize(entry.id), entry.id, loc, entry.id)
    for entry in merged:
        for k, alias in enumerate(entry.aliases):
            loc = f"entries.{mine[entry.id]}.aliases.{k}" if entry.id in mine else entry.id
            if not normalize(alias):
                problems.append(f"{loc}: an alias needs a letter or digit")
                continue
            claim(normalize(alias), entry.id, loc, alias)
    if problems:
        raise CatalogFileError(where, sorted(problems, key=_problem_order))
    return merged, index


def _problem_order(line: str) -> int:
    """Sort key: ``entries.N...`` lines by entry number (sorted() keeps the order within an entry)."""
    match = re.match(r"entries\.(\d+)\.", line)
    return int(match.group(1)) if match else 1 << 30


def _read_file(path: Path, missing_ok: bool = False) -> str | None:
    """The file's text; None for a missing file when ``missing_ok`` (the user's own gpus.yaml is optional)."""
    if missing_ok and not os.path.lexists(path):
        return None
    try:
        return read_text(path)
    except FileReadError as err:
        raise CatalogFileError(str(path), [f"(file): cannot be read: {err.problem}"]) from err


@cache
def _bundled() -> tuple[GpuEntryModel, ...]:
    """The bundled file, parsed once per process (it is package data: it cannot change while we run)."""
    return tuple(_read(str(data_root().joinpath("gpus.yaml").read_text("utf-8")), BUNDLED))


def load_catalog(extra_files: Sequence[Path] = ()) -> Catalog:
    """The bundled catalog, then the user's gpus.yaml (if any), then each ``--gpu-file``, validated.

    An entry whose id is already in the catalog replaces that entry; any other entry is added. A file that does
    not validate raises :class:`~kvplan.errors.CatalogFileError` with one ``field: message`` line per problem.
    """
    entries, index = _merge([], _bundled(), BUNDLED)
    files = [BUNDLED]
    paths = [(user_catalog_path(), True)] + [(Path(p), False) for p in extra_files]
    for path, missing_ok in paths:
        text = _read_file(path, missing_ok)
        if text is None:
            continue
        where = str(path)
        entries, index = _merge(entries, _read(text, where), where)
        files.append(where)
    return Catalog(tuple(entries), tuple(files), index)


# ----------------------------------------------------------------------------------------------------------
# Sizes and --gpu

_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")
_SIZE_EXAMPLES = "e.g. 80GiB (80 x 2^30 B), 24GB (24 x 10^9 B), 512MiB"


def _size(text: str, option: Param) -> int | None:
    """Bytes for ``<number><unit>``, or None when the text is not a number with a unit at all."""
    match = _SIZE.match(text)
    if not match:
        return None
    number, unit = match.groups()
    if len(number) > 40:
        raise OptionError(option, f"a {len(number):,}-digit number is past the largest size, {MAX_COUNT:,} B")
    if not unit:
        raise OptionError(option, f"{text.strip()!r} has no unit: write it with one, {_SIZE_EXAMPLES}")
    factor = _UNITS.get(unit.lower())
    if factor is None:
        powers = {"k": (3, 10), "m": (6, 20), "g": (9, 30), "t": (12, 40)}
        if unit.lower() in powers:
            ten, two = powers[unit.lower()]
            big = unit.upper()
            raise OptionError(
                option,
                f"{text.strip()!r} is ambiguous: write {number}{big}B ({number} x 10^{ten} B) "
                f"or {number}{big}iB ({number} x 2^{two} B)",
            )
        return None
    # Rounded down: a fractional byte (0.1KiB = 102.4 B) is not memory you have.
    value = math.floor(Fraction(number) * factor)
    if value > MAX_COUNT:
        raise OptionError(option, f"{text.strip()!r} is past the largest size kvplan plans with, {MAX_COUNT:,} B")
    return value


def parse_bytes(text: str, option: Param, *, bare_bytes: bool = False) -> int:
    """An exact byte count from a size with a unit: ``2GiB``, ``512MiB``, ``8GB``, ``1.5TB``, ``0B``.

    GB/MB/kB/TB are powers of 10 and GiB/MiB/KiB/TiB powers of 2 (any letter case); a bare number is an
    error, so nobody gets GB when they meant GiB, except with ``bare_bytes``, where a bare whole number is a
    byte count (engines print KV memory that way: TensorRT-LLM's "Allocate 69524783104 bytes for k/v cache",
    vLLM's --kv-cache-memory=19468210074 suggestion). A fractional byte is rounded down.
    """
    if bare_bytes and re.fullmatch(r"[0-9]+", text.strip()):
        text = text.strip() + "B"
    value = _size(text, option)
    if value is None:
        raise OptionError(option, f"{text.strip()!r} is not a size; {_SIZE_EXAMPLES}")
    return value


@dataclass(frozen=True)
class GpuSelection:
    """What ``--gpu`` (and ``--num-gpus``) selected: a catalog entry or a raw size, and how many."""

    #: The catalog entry, or None for a raw size.
    entry: GpuEntry | None
    #: The GPU's name ("NVIDIA A100 80GB SXM4") or the raw size as given ("80 GiB").
    label: str
    #: Bytes per GPU that the plan starts from.
    usable_bytes: int
    count: int
    #: Where usable_bytes came from, in words.
    source: str
    #: What the user typed.
    requested: str = ""

    @property
    def total_usable_bytes(self) -> int:
        return self.usable_bytes * self.count

    @property
    def title(self) -> str:
        """``8 x NVIDIA H100 80GB SXM5 (h100-sxm-80g)`` or ``80 GiB``."""
        name = f"{self.label} ({self.entry.id})" if self.entry is not None else self.label
        return f"{self.count} x {name}" if self.count != 1 else name


_COUNT = re.compile(r"^\s*(\d+)\s*[x×*]\s*(.*)$", re.IGNORECASE)


def _count(value: int, option: Param) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise OptionError(option, f"the GPU count must be a whole number of at least 1, got {value!r} (e.g. 8xh100)")
    return value


def parse_gpu(text: str, catalog: Catalog, num_gpus: int | None = None) -> GpuSelection:
    """Parse ``--gpu``: an id or alias, a raw size (``80GiB``, ``24GB``), optionally with a count (``8xh100``).

    ``num_gpus`` (``--num-gpus``) sets the count when the text has none; when both give one they must agree.
    """
    raw = text.strip()
    if not raw:
        raise OptionError(
            Param.GPU,
            f"is empty; give a GPU name or a size, e.g. {spell(Param.GPU)} h100 or {spell(Param.GPU)} 8xa100 or "
            f"{spell(Param.GPU)} 80GiB",
        )
    count: int | None = None
    name = raw
    if catalog.lookup(raw) is None and (match := _COUNT.match(raw)):
        count = _count(int(match.group(1)), Param.GPU)
        name = match.group(2).strip()
        if not name:
            raise OptionError(Param.GPU, f"{raw!r} has a count but no GPU; e.g. 8xh100 or 4x80GiB")
    if num_gpus is not None:
        _count(num_gpus, Param.NUM_GPUS)
        if count is not None and count != num_gpus:
            raise OptionError(
                Param.NUM_GPUS,
                f"{spell(Param.NUM_GPUS)} {num_gpus} contradicts the count in {spell(Param.GPU)} {raw!r} ({count}); "
                "give the count once",
            )
        count = num_gpus
    count = count or 1

    entry = catalog.lookup(name)
    if entry is not None:
        if entry.usable_bytes is None:
            raise OptionError(Param.GPU, f"{entry.id}: {entry.usable_note or SOURCE_MEANINGS['none']}")
        return GpuSelection(entry, entry.name, entry.usable_bytes, count, f"{entry.id}: {entry.source_text}", raw)
    size = _size(name, Param.GPU)
    if size is not None:
        if size == 0:
            raise OptionError(Param.GPU, f"{name!r} is no memory at all; {_SIZE_EXAMPLES}")
        match = _SIZE.match(name)
        assert match is not None  # _size matched it
        label = f"{match.group(1)} {match.group(2)}"
        return GpuSelection(None, label, size, count, f"raw size given as {spell(Param.GPU)} {name} = {size:,} B", raw)
    raise UnknownGPUError(name, catalog.suggestions(name))


# ----------------------------------------------------------------------------------------------------------
# The budget


@dataclass(frozen=True)
class Budget:
    """Memory for the KV cache on each GPU, with every term that produced it. All byte figures are per GPU."""

    gpu: GpuSelection
    #: The per-GPU capacity the plan starts from (the gpu's usable_bytes).
    usable_bytes: int
    utilization: float
    #: What the engine may hold in all: ceil(usable x utilization) under vLLM's rule (its request_memory);
    #: weights + reserve + KV under TensorRT-LLM's, whose fraction applies to the free memory.
    requested_bytes: int
    weights_bytes: int
    reserve_bytes: int
    #: The engine's budget rule applied. Negative when nothing fits: then -kv_bytes_per_gpu is the shortfall.
    kv_bytes_per_gpu: int
    count: int
    #: The engine's rule with its arithmetic (engines/budget.py).
    rule: KvBudget

    @property
    def fits(self) -> bool:
        return self.kv_bytes_per_gpu > 0

    @property
    def shortfall_bytes(self) -> int:
        """How many bytes per GPU are missing before any KV cache fits (0 when some does)."""
        return max(0, -self.kv_bytes_per_gpu)

    @property
    def kv_bytes_total(self) -> int:
        """KV bytes over all GPUs (0 when nothing fits)."""
        return max(0, self.kv_bytes_per_gpu) * self.count

    def explain(self, units: str = "iec") -> list[str]:
        return budget_lines(self, units)


def requested_memory(usable_bytes: int, utilization: float) -> int:
    """``ceil(usable x utilization)`` exactly, reading the utilization as the decimal it was written as."""
    return math.ceil(usable_bytes * _fraction(utilization))


def _whole_bytes(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def check_utilization(utilization: float) -> float:
    if isinstance(utilization, bool) or not isinstance(utilization, int | float) or not 0 < utilization <= 1:
        raise OptionError(
            Param.UTILIZATION,
            f"must be a fraction above 0 and at most 1 (vLLM's default is 0.9), got {utilization!r}",
        )
    return utilization


def budget(
    gpu: GpuSelection,
    *,
    weights_bytes_per_gpu: int,
    utilization: float | None = None,
    reserve_bytes: int | None = None,
    engine: Engine | None = None,
    work: Workload | None = None,
) -> Budget:
    """Per-GPU KV memory under ``engine``'s budget rule (may be negative); without an engine, the ideal rule,
    ``ceil(usable x utilization) - weights - reserve``. ``utilization`` None takes the engine's default fraction;
    ``reserve_bytes`` None the engine's own terms for ``work`` (the stated reserve without one)."""
    if utilization is not None:
        check_utilization(utilization)
    if reserve_bytes is not None and not _whole_bytes(reserve_bytes):
        raise OptionError(
            Param.RESERVE_BYTES, f"must be a size of 0 or more, e.g. 2GiB or 512MiB; got {reserve_bytes!r}"
        )
    if not _whole_bytes(weights_bytes_per_gpu):
        raise OptionError(Param.WEIGHTS_BYTES_PER_GPU, f"must be whole bytes, 0 or more; got {weights_bytes_per_gpu!r}")
    if engine is None:
        from kvplan.engines import get_engine

        engine = get_engine("ideal")
    fraction = None if utilization is None else _fraction(utilization)
    rule = engine.kv_budget(gpu.usable_bytes, weights_bytes_per_gpu, reserve_bytes, fraction, work)
    return Budget(
        gpu=gpu,
        usable_bytes=gpu.usable_bytes,
        utilization=float(rule.fraction) if utilization is None else utilization,
        requested_bytes=rule.requested_bytes,
        weights_bytes=weights_bytes_per_gpu,
        reserve_bytes=rule.terms_bytes - weights_bytes_per_gpu,
        kv_bytes_per_gpu=rule.kv_bytes,
        count=gpu.count,
        rule=rule,
    )


def utilization_text(utilization: float) -> str:
    """``0.90`` for 0.9 (two places when that is exact), else the value as written (``0.925``)."""
    two = f"{utilization:.2f}"
    return two if Fraction(two) == _fraction(utilization) else str(utilization)


def budget_lines(b: Budget, units: str = "iec") -> list[str]:
    """The budget's arithmetic as text lines (kvplan.render prints them): a summary, then each exact term."""
    from kvplan.engines.budget import BudgetBasis

    per = " per GPU" if b.count > 1 else ""
    u = utilization_text(b.utilization)
    result = f"{human_bytes(b.kv_bytes_per_gpu, units)} for the KV cache{per}"
    terms = " - ".join(f"{human_bytes(t.bytes, units)} {t.name}" for t in b.rule.terms)
    exact_terms = " - ".join(f"{t.bytes:,}" for t in b.rule.terms)
    if b.rule.basis is BudgetBasis.FREE:
        headline = f"({human_bytes(b.usable_bytes, units)} usable - {terms}) x {u} = {result}"
        share = [
            f"free: {b.usable_bytes:,} - {exact_terms} = {exact_and_human(b.rule.free_bytes, units)}",
            f"KV cache{per}: floor({b.rule.free_bytes:,} B x {u}) = {exact_and_human(b.kv_bytes_per_gpu, units)} "
            f"({spell(Param.UTILIZATION)} as free_gpu_memory_fraction: {b.rule.source})",
        ]
    else:
        requested = human_bytes(b.requested_bytes, units)
        headline = f"{human_bytes(b.usable_bytes, units)} usable x {u} = {requested} - {terms} = {result}"
        share = [
            f"KV cache{per}: {b.requested_bytes:,} - {exact_terms} = {exact_and_human(b.kv_bytes_per_gpu, units)}",
        ]
    lines = [headline, f"usable{per}: {exact_and_human(b.usable_bytes, units)}; {b.gpu.source}"]
    if b.rule.version:
        lines.append(f"rules: {b.rule.engine} {b.rule.version} ({spell(Param.ENGINE_VERSION)})")
    lines += list(b.rule.settings)
    if b.rule.fraction_note != spell(Param.UTILIZATION):
        lines.append(f"fraction: {b.rule.fraction_note}")
    if b.rule.basis is BudgetBasis.TOTAL:
        lines.append(
            f"requested: ceil({b.usable_bytes:,} B x {u}) = {exact_and_human(b.requested_bytes, units)} "
            f"({spell(Param.UTILIZATION)}, as vLLM's request_memory)"
        )
    lines += [f"weights{per}: {exact_and_human(b.weights_bytes, units)}"]
    lines += [f"{t.name}{per}: {exact_and_human(t.bytes, units)} ({t.note})" for t in b.rule.terms[1:]]
    lines += share
    measured = b.gpu.entry.measured if b.gpu.entry is not None else None
    if measured is not None:
        lines.append(
            f"measured on {measured.measured_at[:10]} by kvplan verify: the CUDA context and other use took "
            f"{exact_and_human(measured.context_bytes, units)}"
            + (
                ""
                if measured.allocator_bytes is None
                else f", the caching allocator {exact_and_human(measured.allocator_bytes, units)} beyond the tensors"
            )
            + f" (outside the {u} share when they fit in the rest)"
        )
    if b.fits and b.count > 1:
        lines.append(
            f"KV cache on {b.count} GPUs: {b.count} x {b.kv_bytes_per_gpu:,} = "
            f"{exact_and_human(b.kv_bytes_total, units)}"
        )
    if not b.fits:
        lines.append(
            "nothing fits: weights and reserve exceed the requested memory by "
            f"{exact_and_human(b.shortfall_bytes, units)}"
            f"{per}; use more GPUs, a bigger GPU, a higher {spell(Param.UTILIZATION)} or a smaller "
            f"{spell(Param.RESERVE_BYTES)}"
        )
    return lines


# ----------------------------------------------------------------------------------------------------------
# Listing


@dataclass(frozen=True)
class GpuRow:
    """One catalog entry, as ``kvplan gpus`` lists it."""

    id: str
    name: str
    vendor: str
    #: None: no fixed capacity (give a raw size).
    usable_bytes: int | None
    #: The usable_source kind ("torch", "smi" ...) and the sentence behind it.
    usable_source: str
    usable_note: str
    marketed: str
    memory_type: str | None
    bandwidth_tbps: float | None
    fp8: bool | None
    bf16: bool | None
    aliases: tuple[str, ...]
    #: ``kvplan:configs/gpus.yaml`` or the user file that defined it.
    origin: str
    #: What ``kvplan verify --save-gpu`` measured, for an entry it wrote.
    measured: MeasuredGpu | None = None


def gpu_rows(catalog: Catalog) -> list[GpuRow]:
    """Every catalog entry, in catalog order (bundled first, then user additions)."""
    return [
        GpuRow(
            id=e.id,
            name=e.name,
            vendor=e.vendor,
            usable_bytes=e.usable_bytes,
            usable_source=e.usable_source,
            usable_note=e.usable_note or SOURCE_MEANINGS[e.usable_source],
            marketed=e.marketed,
            memory_type=e.memory_type,
            bandwidth_tbps=e.bandwidth_tbps,
            fp8=e.fp8,
            bf16=e.bf16,
            aliases=e.aliases,
            origin=e.origin,
            measured=e.measured,
        )
        for e in catalog.entries
    ]


# ----------------------------------------------------------------------------------------------------------
# Measured entries (kvplan verify --save-gpu)


def measured_id(device_name: str) -> str:
    """An entry id for a device the catalog does not know: ``NVIDIA H200`` -> ``nvidia-h200``."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", device_name.lower()).strip("-._")
    return slug or "measured-gpu"


def measured_entry(measured: MeasuredGpu, base: GpuEntry | None) -> dict[str, Any]:
    """The user-file entry for a measurement: the catalog entry's facts (same id, so it replaces that entry for
    every later plan) with usable_bytes = the measured total, and the measurement itself."""
    total = measured.total_bytes
    entry: dict[str, Any] = {
        "id": base.id if base is not None else measured_id(measured.device_name),
        "name": base.name if base is not None else measured.device_name,
    }
    if base is not None:
        entry.update(
            {
                key: value
                for key, value in (
                    ("vendor", base.vendor),
                    ("aliases", list(base.aliases)),
                    ("marketed", base.marketed),
                    ("memory_type", base.memory_type),
                    ("bandwidth_tbps", base.bandwidth_tbps),
                    ("fp8", base.fp8),
                    ("bf16", base.bf16),
                )
                if value not in (None, "", [])
            }
        )
    elif normalize(measured.device_name) != normalize(entry["id"]):
        entry["aliases"] = [measured.device_name]
    entry["usable_bytes"] = total
    entry["usable_source"] = "measured"
    entry["usable_note"] = (
        f"measured by kvplan verify on {measured.measured_at[:10]}: torch total {total:,} B on {measured.device_name}"
    )
    entry["measured"] = {k: v for k, v in measured.__dict__.items() if v is not None}
    entry["sources"] = [f"kvplan verify {spell(Param.SAVE_GPU)}"]
    return entry


def save_measured_gpu(measured: MeasuredGpu, base: GpuEntry | None, path: Path | None = None) -> tuple[Path, str]:
    """Write (or replace, by id) the measured entry in the user's GPU file and return (path, id).

    The file must already be valid (a broken file is reported, never overwritten); the result is validated
    before it replaces the old file, atomically. Comments in the file are not kept (it is rewritten as YAML).
    """
    import yaml

    path = path or user_catalog_path()
    text = _read_file(path, missing_ok=True)
    data: dict[str, Any] = {"entries": []}
    if text is not None:
        _read(text, str(path))  # raises CatalogFileError on a broken file: leave it as it is
        loaded = yaml.safe_load(text)
        data = loaded if isinstance(loaded, dict) else {"entries": []}
        data.setdefault("entries", [])
    if base is None:  # a device the catalog knows by its torch name keeps that entry's id and facts
        bundled, index = _merge([], _bundled(), BUNDLED)
        base = Catalog(tuple(bundled), (BUNDLED,), index).lookup(measured.device_name)
    entry = measured_entry(measured, base)
    entries = [e for e in data["entries"] if not (isinstance(e, dict) and e.get("id") == entry["id"])]
    data["entries"] = [*entries, entry]
    new_text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    _merge(list(_merge([], _bundled(), BUNDLED)[0]), _read(new_text, str(path)), str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(new_text, "utf-8")
    os.replace(tmp, path)
    return path, str(entry["id"])

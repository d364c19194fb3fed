"""A small, bounded GGUF header reader: magic, version, metadata key/values and tensor infos. Never tensor data.

The layout follows llama.cpp's ggml/src/gguf.cpp (``gguf_init_from_file_impl``) and its spec, docs/gguf.md:
``"GGUF"``, a uint32 version (2 or 3; version 1 used 32-bit counts and is refused, as llama.cpp does), uint64
tensor and key/value counts, then ``count`` key/values (a length-prefixed UTF-8 key, a uint32 value type, the
value), then the tensor infos (name, uint32 n_dims, n_dims x uint64 ne, uint32 ggml type, uint64 offset into
the data section, which starts at the next multiple of ``general.alignment``, default 32). A big-endian file
is recognised the way gguf-py's GGUFReader does it: the version reads with its low 16 bits zero.

Everything is bounded: counts, key and string lengths are capped, every read is checked against the file size
(the file is memory-mapped, so only the pages the header touches are read), and arrays are not materialised
unless a rule can want them: the tokenizer's arrays (tens of thousands of strings) are skipped by their length
prefixes, and only numeric / bool arrays of at most :data:`MAX_KEPT_ARRAY` items outside ``tokenizer.*`` are
kept. A malformed or truncated file is a :class:`~kvplan.errors.ConfigFileError` naming the file and the field.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

from kvplan.errors import ConfigFileError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
#: ggml's GGML_MAX_DIMS.
MAX_DIMS = 4
MAX_KEYS = 1 << 20
MAX_TENSORS = 1 << 22
MAX_KEY_BYTES = 1 << 16
#: Longest string kept or skipped (chat templates run to tens of KiB; 16 MiB is far beyond any real one).
MAX_STRING_BYTES = 1 << 24
#: Numeric / bool arrays up to this many items are kept (per-layer head counts, window patterns).
MAX_KEPT_ARRAY = 1 << 16
#: Prefixes whose arrays are never kept: the vocabulary, merges, scores and token types.
SKIPPED_PREFIXES = ("tokenizer.",)

# GGUF value types (ggml/src/gguf.cpp, enum gguf_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
#: Fixed-size value types -> struct format character.
_SCALAR_FORMATS = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "?",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}
TYPE_NAMES = {
    UINT8: "uint8",
    INT8: "int8",
    UINT16: "uint16",
    INT16: "int16",
    UINT32: "uint32",
    INT32: "int32",
    FLOAT32: "float32",
    BOOL: "bool",
    STRING: "string",
    ARRAY: "array",
    UINT64: "uint64",
    INT64: "int64",
    FLOAT64: "float64",
}


@dataclass(frozen=True)
class GgmlType:
    """One ggml storage type: ``block_values`` values packed (with their scales) into ``block_bytes`` bytes."""

    type_id: int
    name: str
    block_values: int
    block_bytes: int

    def row_bytes(self, values: int) -> int | None:
        """Bytes of a row of ``values`` values (ggml_row_size), or None when the row is not whole blocks."""
        if values % self.block_values:
            return None
        return values // self.block_values * self.block_bytes


_QK_K = 256


def _ggml_types() -> dict[int, GgmlType]:
    # ggml/src/ggml.c type_traits: blck_size and type_size = sizeof(block_*) with the block structs of
    # ggml/src/ggml-common.h (QK_K = 256; a ggml_half is 2 B). Ids 4, 5 (Q4_2, Q4_3) and 31-33, 36-38 (the
    # removed repacked Q4_0_4_4 ... and IQ4_NL_4_x types) are gone from ggml and refused. The table is checked
    # against gguf-py's GGML_QUANT_SIZES in the tests.
    k = _QK_K
    rows = (
        (0, "F32", 1, 4),
        (1, "F16", 1, 2),
        (2, "Q4_0", 32, 2 + 16),
        (3, "Q4_1", 32, 2 + 2 + 16),
        (6, "Q5_0", 32, 2 + 4 + 16),
        (7, "Q5_1", 32, 2 + 2 + 4 + 16),
        (8, "Q8_0", 32, 2 + 32),
        (9, "Q8_1", 32, 4 + 4 + 32),
        (10, "Q2_K", k, 2 + 2 + k // 16 + k // 4),
        (11, "Q3_K", k, 2 + k // 4 + k // 8 + 12),
        (12, "Q4_K", k, 2 + 2 + k // 2 + 12),
        (13, "Q5_K", k, 2 + 2 + k // 2 + k // 8 + 12),
        (14, "Q6_K", k, 2 + k // 2 + k // 4 + k // 16),
        (15, "Q8_K", k, 4 + k + k // 8),
        (16, "IQ2_XXS", k, 2 + k // 4),
        (17, "IQ2_XS", k, 2 + k // 4 + k // 32),
        (18, "IQ3_XXS", k, 2 + k // 4 + k // 8),
        (19, "IQ1_S", k, 2 + k // 8 + k // 16),
        (20, "IQ4_NL", 32, 2 + 16),
        (21, "IQ3_S", k, 2 + k // 4 + k // 8 + k // 32 + 4),
        (22, "IQ2_S", k, 2 + k // 4 + k // 16),
        (23, "IQ4_XS", k, 2 + 2 + k // 2 + k // 64),
        (24, "I8", 1, 1),
        (25, "I16", 1, 2),
        (26, "I32", 1, 4),
        (27, "I64", 1, 8),
        (28, "F64", 1, 8),
        (29, "IQ1_M", k, k // 8 + k // 16 + k // 32),
        (30, "BF16", 1, 2),
        (34, "TQ1_0", k, 2 + 4 * 13),
        (35, "TQ2_0", k, 2 + 64),
        (39, "MXFP4", 32, 1 + 16),
        (40, "NVFP4", 64, 4 + 32),
        (41, "Q1_0", 128, 2 + 16),
    )
    return {tid: GgmlType(tid, name, values, size) for tid, name, values, size in rows}


GGML_TYPES: dict[int, GgmlType] = _ggml_types()


@dataclass(frozen=True)
class GgufArray:
    """An array value. ``values`` is None when the reader skipped it (tokenizer arrays, long or string arrays)."""

    item_type: int
    count: int
    values: tuple[int | float | bool, ...] | None = None

    @property
    def type_name(self) -> str:
        return f"array[{TYPE_NAMES.get(self.item_type, str(self.item_type))}]"


Value = int | float | bool | str | GgufArray


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's header entry: name, shape in ggml order (ne[0] is the contiguous row), type, data offset."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GgmlType
    offset: int

    @property
    def elements(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Exact bytes on disk (ggml_nbytes): whole blocks per row times the rows."""
        row = self.ggml_type.row_bytes(self.shape[0])
        assert row is not None  # checked when read
        return row * prod(self.shape[1:])


@dataclass(frozen=True)
class GgufHeader:
    """What the header of one GGUF file says."""

    path: str
    version: int
    big_endian: bool
    metadata: dict[str, Value]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    #: Where the tensor data section starts (after the header and its padding).
    data_offset: int
    file_size: int

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


class _Cursor:
    """Bounds-checked little/big-endian reads over a memory-mapped file."""

    def __init__(self, buf: mmap.mmap | bytes, path: str, big_endian: bool) -> None:
        self.buf = buf
        self.size = len(buf)
        self.path = path
        self.order = ">" if big_endian else "<"
        self.pos = 0
        self._u64 = struct.Struct(self.order + "Q")

    def fail(self, what: str) -> ConfigFileError:
        return ConfigFileError(self.path, f"not a valid GGUF file: {what} (at byte {self.pos:,})")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} runs past the end of the file ({self.size:,} bytes)")

    def scalar(self, fmt: str, what: str) -> int | float | bool:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + fmt, self.buf, self.pos)
        self.pos += size
        return value  # type: ignore[no-any-return]

    def u32(self, what: str) -> int:
        return int(self.scalar("I", what))

    def u64(self, what: str) -> int:
        return int(self.scalar("Q", what))

    def string(self, what: str, limit: int = MAX_STRING_BYTES) -> str:
        n = self.u64(f"{what} length")
        if n > limit:
            raise self.fail(f"{what} is {n:,} bytes long (at most {limit:,} accepted)")
        self.need(n, what)
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise self.fail(f"{what} is not UTF-8 ({err.reason})") from err

    def skip_strings(self, count: int, what: str) -> None:
        """Skip ``count`` length-prefixed strings without decoding them (the tokenizer's vocabulary)."""
        unpack, buf, size, pos = self._u64.unpack_from, self.buf, self.size, self.pos
        for _ in range(count):
            if pos + 8 > size:
                self.pos = pos
                raise self.fail(f"{what} runs past the end of the file")
            (n,) = unpack(buf, pos)
            if n > MAX_STRING_BYTES:
                self.pos = pos
                raise self.fail(f"a string of {what} is {n:,} bytes long")
            pos += 8 + n
        if pos > size:
            raise self.fail(f"{what} runs past the end of the file")
        self.pos = pos


def _read_value(cur: _Cursor, key: str, value_type: int) -> Value:
    if value_type == STRING:
        return cur.string(f"value of {key}")
    if value_type == ARRAY:
        return _read_array(cur, key)
    fmt = _SCALAR_FORMATS.get(value_type)
    if fmt is None:
        raise cur.fail(f"key {key!r} has unknown value type {value_type}")
    return cur.scalar(fmt, f"value of {key}")


def _read_array(cur: _Cursor, key: str) -> GgufArray:
    item_type = cur.u32(f"item type of {key}")
    count = cur.u64(f"length of {key}")
    if count > cur.size:  # every item takes at least one byte
        raise cur.fail(f"array {key!r} claims {count:,} items, more than the file has bytes")
    if item_type == STRING:
        cur.skip_strings(count, f"array {key!r}")
        return GgufArray(item_type, count)
    if item_type == ARRAY:
        raise cur.fail(f"array {key!r} holds arrays (nested arrays are not GGUF)")
    fmt = _SCALAR_FORMATS.get(item_type)
    if fmt is None:
        raise cur.fail(f"array {key!r} has unknown item type {item_type}")
    size = struct.calcsize(fmt) * count
    cur.need(size, f"array {key!r}")
    if count > MAX_KEPT_ARRAY or key.startswith(SKIPPED_PREFIXES):
        cur.pos += size
        return GgufArray(item_type, count)
    values = struct.unpack_from(f"{cur.order}{count}{fmt}", cur.buf, cur.pos)
    cur.pos += size
    return GgufArray(item_type, count, tuple(values))


def _read_tensor(cur: _Cursor, index: int) -> TensorInfo:
    name = cur.string(f"name of tensor {index}", MAX_KEY_BYTES)
    n_dims = cur.u32(f"dimension count of tensor {name!r}")
    if not 1 <= n_dims <= MAX_DIMS:
        raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (ggml allows 1 to {MAX_DIMS})")
    shape = tuple(cur.u64(f"shape of tensor {name!r}") for _ in range(n_dims))
    if any(d <= 0 for d in shape):
        raise cur.fail(f"tensor {name!r} has shape {list(shape)}")
    type_id = cur.u32(f"type of tensor {name!r}")
    ggml_type = GGML_TYPES.get(type_id)
    if ggml_type is None:
        raise cur.fail(f"tensor {name!r} has ggml type {type_id}, which kvplan does not know")
    if ggml_type.row_bytes(shape[0]) is None:
        raise cur.fail(
            f"tensor {name!r}: rows of {shape[0]} values are not whole {ggml_type.name} blocks "
            f"of {ggml_type.block_values}"
        )
    offset = cur.u64(f"offset of tensor {name!r}")
    return TensorInfo(name, shape, ggml_type, offset)


def parse_header(buf: mmap.mmap | bytes, path: str) -> GgufHeader:
    """Parse a GGUF header from a buffer holding (at least) the whole file."""
    cur = _Cursor(buf, path, big_endian=False)
    cur.need(4, "magic")
    if bytes(buf[:4]) != MAGIC:
        raise cur.fail(f"magic is {bytes(buf[:4])!r}, expected {MAGIC!r}")
    cur.pos = 4
    version = cur.u32("version")
    big_endian = False
    if version & 0xFFFF == 0 and version:
        big_endian = True
        cur = _Cursor(buf, path, big_endian=True)
        cur.pos = 4
        version = cur.u32("version")
    if version not in SUPPORTED_VERSIONS:
        raise cur.fail(f"version {version} (kvplan reads GGUF versions {', '.join(map(str, SUPPORTED_VERSIONS))})")
    n_tensors = cur.u64("tensor count")
    n_kv = cur.u64("key/value count")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KEYS:
        raise cur.fail(f"{n_tensors:,} tensors and {n_kv:,} keys (at most {MAX_TENSORS:,} and {MAX_KEYS:,})")
    metadata: dict[str, Value] = {}
    for i in range(n_kv):
        key = cur.string(f"key {i}", MAX_KEY_BYTES)
        if key in metadata:
            raise cur.fail(f"key {key!r} appears twice")
        metadata[key] = _read_value(cur, key, cur.u32(f"value type of {key}"))
    tensors = tuple(_read_tensor(cur, i) for i in range(n_tensors))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    # gguf.cpp: "alignment ... is not a power of 2" is an error there too.
    if isinstance(alignment, bool) or not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise cur.fail(f"general.alignment = {alignment!r}, expected a power of 2")
    data_offset = -(-cur.pos // alignment) * alignment
    header = GgufHeader(path, version, big_endian, metadata, tensors, alignment, data_offset, cur.size)
    _check_tensor_data(cur, header)
    return header


def _check_tensor_data(cur: _Cursor, header: GgufHeader) -> None:
    """Every tensor's data must lie inside the file: a truncated download is an error, not smaller weights."""
    room = header.file_size - header.data_offset
    names: set[str] = set()
    for t in header.tensors:
        if t.name in names:
            raise cur.fail(f"tensor {t.name!r} appears twice")
        names.add(t.name)
        if t.offset % header.alignment or t.offset + t.nbytes > room:
            raise ConfigFileError(
                header.path,
                f"tensor {t.name!r} ({t.nbytes:,} B at data offset {t.offset:,}) does not fit in the file's "
                f"{room:,} B of tensor data: the file is truncated or corrupt",
            )


def read_header(path: str | Path) -> GgufHeader:
    """Read one GGUF file's header (metadata and tensor infos), never its tensor data.

    The file is opened without blocking and must be a regular file (a FIFO or a device would hang or never end);
    it is memory-mapped, so only the header's pages are read.
    """
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise ConfigFileError(where, f"cannot be read: {err.strerror or err}") from err
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigFileError(where, "is not a regular file: pass a .gguf file")
        if info.st_size < 24:
            raise ConfigFileError(where, f"not a valid GGUF file: only {info.st_size} bytes")
        with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as buf:
            return parse_header(buf, where)
    except OSError as err:
        raise ConfigFileError(where, f"cannot be read: {err.strerror or err}") from err
    finally:
        os.close(fd)


def is_gguf(path: str | Path) -> bool:
    """Whether the file starts with the GGUF magic (a cheap 4-byte read)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class GgufModel:
    """One model in GGUF form: one file, or the splits of one (``-00001-of-00003.gguf`` ...). Metadata comes from
    the first split, as llama.cpp's loader reads it (llama-model-loader.cpp); tensor infos from every split."""

    paths: tuple[str, ...]
    metadata: dict[str, Value]
    tensors: tuple[TensorInfo, ...]
    file_bytes: int

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def read_model(paths: Sequence[str | Path]) -> GgufModel:
    """Read a model's GGUF header(s): one file or all splits, in order."""
    if not paths:
        raise ConfigFileError("(none)", "no GGUF file given")
    headers = [read_header(p) for p in paths]
    first = headers[0]
    if len(headers) > 1:
        _check_splits(headers)
    names: set[str] = set()
    tensors: list[TensorInfo] = []
    for h in headers:
        for t in h.tensors:
            if t.name in names:
                raise ConfigFileError(h.path, f"tensor {t.name!r} is in more than one split")
            names.add(t.name)
            tensors.append(t)
    return GgufModel(tuple(h.path for h in headers), first.metadata, tuple(tensors), sum(h.file_size for h in headers))


def _check_splits(headers: Sequence[GgufHeader]) -> None:
    # gguf-split writes split.no (0-based), split.count and split.tensors.count into every split
    # (examples/gguf-split/gguf-split.cpp: LLM_KV_SPLIT_NO, LLM_KV_SPLIT_COUNT, LLM_KV_SPLIT_TENSORS_COUNT).
    total = sum(len(h.tensors) for h in headers)
    for i, h in enumerate(headers):
        no, count = h.metadata.get("split.no"), h.metadata.get("split.count")
        if no != i or count != len(headers):
            raise ConfigFileError(
                h.path, f"split.no = {no!r}, split.count = {count!r}: expected split {i} of {len(headers)}"
            )
    stated = headers[0].metadata.get("split.tensors.count")
    if stated is not None and stated != total:
        raise ConfigFileError(headers[0].path, f"split.tensors.count = {stated!r}, but the splits hold {total}")

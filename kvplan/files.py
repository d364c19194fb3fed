"""Reading the user's files (config.json, params.json, GPU YAML) so that no path can hang or exhaust memory.

A path is opened without blocking (a FIFO with no writer would wait forever), kept only when it is a regular
file, and read up to :data:`~kvplan.limits.MAX_FILE_BYTES` and one byte more: /dev/zero, /dev/urandom, a socket,
a folder or a symlink to any of them is a :class:`~kvplan.errors.FileReadError`, never a hang or a 4 GB read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from kvplan.errors import FileReadError
from kvplan.limits import MAX_FILE_BYTES

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)

_BOMS = ((b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"), (b"\xef\xbb\xbf", "UTF-8 with a byte-order mark"))


def expand_user(text: str) -> Path:
    """``~/x`` and ``~user/x`` expanded; an unknown user is a FileReadError, not a RuntimeError."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        user = text[1:].split("/", 1)[0] or "the current user"
        raise FileReadError(text, f"cannot expand ~: no home folder for {user}") from None


def _os_problem(err: OSError) -> str:
    """What an OSError from opening or stat-ing a path means, in words."""
    reasons = {
        errno.ENOENT: "no such file or folder",
        errno.ENOTDIR: "a part of the path is not a folder",
        errno.EACCES: "permission denied (check the file's and its folders' permissions)",
        errno.EPERM: "permission denied (check the file's and its folders' permissions)",
        errno.ENAMETOOLONG: "the name is too long for the filesystem",
        errno.ELOOP: "too many levels of symbolic links",
        errno.ENXIO: "not a regular file (a socket or a device with nothing behind it)",
    }
    return reasons.get(err.errno or 0, err.strerror or str(err))


def path_kind(path: Path) -> str | None:
    """``None`` for a regular file (following symlinks); otherwise what the path is, in words.

    Raises FileReadError when the path cannot be looked at at all.
    """
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise FileReadError(str(path), _os_problem(err)) from err
    except ValueError as err:  # an embedded NUL byte
        raise FileReadError(repr(str(path)), f"not a usable path: {err}") from err
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bytes(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    where = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise FileReadError(where, _os_problem(err)) from err
    except ValueError as err:
        raise FileReadError(repr(where), f"not a usable path: {err}") from err
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise FileReadError(where, f"is {kind}, not a regular file: pass a config.json / params.json / YAML file")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise FileReadError(where, _os_problem(err)) from err
    finally:
        os.close(fd)
    if size > limit:
        raise FileReadError(where, f"larger than {limit:,} bytes ({limit // 2**20} MiB), the most kvplan reads")
    return b"".join(chunks)


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text; UTF-16, a byte-order mark or binary data is a FileReadError saying which."""
    for bom, name in _BOMS:
        if data.startswith(bom):
            raise FileReadError(where, f"is {name} text; save it as UTF-8 without a byte-order mark")
    if b"\x00" in data:
        raise FileReadError(where, "holds NUL bytes: binary data or UTF-16 text, not a UTF-8 text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise FileReadError(where, f"is not UTF-8 text (byte {err.start:,} cannot be decoded)") from err


def read_text(path: Path, limit: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of a regular file of at most ``limit`` bytes, or a FileReadError naming the path."""
    return decode_text(read_bytes(path, limit), str(path))

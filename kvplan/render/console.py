"""The safe console and text layout every renderer shares: control characters escaped, paragraphs wrapped
to the width, tables that drop columns to fit, and the one-line messages on stderr."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from kvplan.errors import Param, spell
from kvplan.layout import ConfigWarning

#: Characters that must not reach a terminal as they are: C0 controls but the newline (ESC starts a colour, a
#: title change or a clipboard write; CR overwrites a line), DEL, the C1 controls (U+009B is a CSI on some
#: terminals) and the bidirectional overrides that reorder what is shown.
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_control(text: str) -> str:
    """``text`` with each control character written as its escape (``\\x1b``, ``\\u202e``)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100 else f"\\u{ord(m[0]):04x}", text)


class SafeConsole(Console):
    """A Console for untrusted text: rich markup (``[bold]``, ``[link=...]``) and emoji codes in strings are
    shown as written, and control characters are escaped in everything printed (tables, notes, errors).

    Every print goes through :meth:`render` (rich Console.print), so escaping there covers every renderable;
    the style codes rich itself writes are control segments and pass unchanged.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, soft_wrap=True, **kwargs)

    def render(self, renderable: Any, options: Any = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and _CONTROL.search(segment.text):
                yield Segment(escape_control(segment.text), segment.style)
            else:
                yield segment


def stdout_console() -> Console:
    """Console for data, as wide as the terminal (COLUMNS wins). When stdout is not a terminal (a pipe, a file)
    and COLUMNS is not set, 200 columns. Prose wraps to the width (:func:`emit`); tables pick their columns."""
    console = SafeConsole()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = SafeConsole(width=200)
    return console


def emit(console: Console, text: Text | str, hang: int | None = None) -> None:
    """Print one paragraph, word-wrapped to the console width. Continuation lines are indented ``hang`` columns
    (default: the paragraph's own indent + 4), so a wrapped line still reads as one item. Styles are kept."""
    line = text if isinstance(text, Text) else Text(text)
    plain = line.plain
    lead = len(plain) - len(plain.lstrip(" "))
    indent = lead + 4 if hang is None else hang
    width = max(console.width, 20)
    pieces = _wrap_offsets(plain, width, max(width - indent, 10))
    for k, piece in enumerate(line.divide(pieces)):
        if k == 0:
            console.print(piece, soft_wrap=True)
        else:
            console.print(Text(" " * indent) + _lstrip(piece), soft_wrap=True)


def _wrap_offsets(plain: str, first: int, rest: int) -> list[int]:
    """Where to break ``plain`` (greedy, at spaces): the first line at most ``first`` columns, the rest ``rest``.
    A word longer than a line is kept whole (it overflows rather than being cut)."""
    offsets: list[int] = []
    start, limit = 0, first
    while len(plain) - start > limit:
        cut = _last_break(plain, start + 1, start + limit + 1)
        if cut <= start:
            cut = _next_break(plain, start + limit)
            if cut < 0:
                break
        offsets.append(cut)
        start = cut
        while start < len(plain) and plain[start] == " ":
            start += 1
        limit = rest
    return offsets


#: A unit after a number stays on the number's line ("68.01 GiB", "4,096 B").
_UNIT = re.compile(r" (B|KiB|MiB|GiB|TiB|PiB|kB|KB|MB|GB|TB|PB)\b")


def _last_break(plain: str, lo: int, hi: int) -> int:
    cut = plain.rfind(" ", lo, hi)
    while cut >= lo and _UNIT.match(plain, cut):
        cut = plain.rfind(" ", lo, cut)
    return cut


def _next_break(plain: str, lo: int) -> int:
    cut = plain.find(" ", lo)
    while cut >= 0 and _UNIT.match(plain, cut):
        cut = plain.find(" ", cut + 1)
    return cut


def _lstrip(text: Text) -> Text:
    plain = text.plain
    return text[len(plain) - len(plain.lstrip(" ")) :]


@dataclass(frozen=True)
class Column:
    """One column of a table that picks its columns by width: ``drop`` orders what goes first when the table is
    wider than the terminal (0: never dropped; higher numbers go first)."""

    name: str
    right: bool = True
    drop: int = 0
    #: The narrowest this column may wrap to (0: its cells never wrap; rich wraps longer text at spaces).
    squeeze: int = 0


def print_table(
    console: Console,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
) -> tuple[str, ...]:
    """A plain table with the columns that fit the console width (dropping by ``drop``); cells never end in an
    ellipsis (a cell wider than its column folds). Returns the names of the columns left out."""
    keep = list(range(len(columns)))

    def natural(i: int) -> int:
        cells = [len(part) for row in rows for part in row[i].split("\n")]
        widest = max([len(columns[i].name), *cells])
        return min(widest, max(columns[i].squeeze, len(columns[i].name))) if columns[i].squeeze else widest

    def total() -> int:
        return sum(natural(i) for i in keep) + 2 * (len(keep) - 1)

    while total() > console.width and any(columns[i].drop for i in keep):
        keep.remove(max(keep, key=lambda i: (columns[i].drop, i)))
    if title:
        emit(console, Text(title, style="bold"))
    table = Table(header_style="bold", box=None, pad_edge=False)
    for i in keep:
        table.add_column(columns[i].name, justify="right" if columns[i].right else "left", overflow="fold")
    for row in rows:
        table.add_row(*(row[i] for i in keep))
    console.print(table)
    return tuple(columns[i].name for i in range(len(columns)) if i not in keep)


def stderr_console() -> Console:
    return SafeConsole(stderr=True)


def say(console: Console, *parts: Text | str | Table) -> None:
    """Print a paragraph (parts joined by a space, wrapped by :func:`emit`), a table as it is, or a blank line.
    Plain strings are never read as rich markup: text from configs is printed as it is."""
    if not parts:
        console.print()
    elif len(parts) == 1 and isinstance(parts[0], Table):
        console.print(parts[0])
    else:
        emit(console, Text(" ").join(p if isinstance(p, Text) else Text(str(p)) for p in parts))


def print_error(message: str) -> None:
    """One message on stderr (no markup interpretation of user text)."""
    stderr_console().print(Text(f"kvplan: error: {message}", style="bold red"))


def print_warnings(warnings: Sequence[ConfigWarning]) -> None:
    """One stderr line per thing the reader did not fully understand (the message says the figure may be
    wrong; --strict turns them into an error)."""
    console = stderr_console()
    for warning in warnings:
        console.print(Text(f"kvplan: warning: {warning.message}", style="yellow"))


def debug_enabled() -> bool:
    return os.environ.get("KVPLAN_DEBUG", "").strip() not in ("", "0")


_KIND_SHORT = {"full_attention": "full", "sliding_attention": "sliding", "chunked_attention": "chunked"}


def _left_out(console: Console, dropped: Sequence[str]) -> None:
    if dropped:
        more = spell(Param.JSON)
        say(
            console,
            Text(
                f"left out at {console.width} columns: {', '.join(dropped)} (a wider terminal or {more})", style="dim"
            ),
        )


def print_info(message: str) -> None:
    """A line on stderr that is neither data nor an error (what a command wrote where)."""
    stderr_console().print(Text(f"kvplan: {message}"))


def print_note(message: str) -> None:
    """A one-line verdict on stderr (``--check`` failures)."""
    stderr_console().print(Text(f"kvplan: {message}", style="bold red"))


def shell_lines(words: list[str], width: int) -> list[str]:
    """Shell words as lines of at most ``width`` columns (a longer word stands alone), joined by " \\"."""
    lines: list[str] = []
    current = "  " + words[0]
    for word in words[1:]:
        if len(current) + 1 + len(word) + 2 > width:
            lines.append(current + " \\")
            current = "      " + word
        else:
            current += " " + word
    return [*lines, current]

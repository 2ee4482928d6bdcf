"""How the command shows things: rich tables and progress bars on a terminal, plain text everywhere else.

When stdout is not a terminal (a pipe, a log, a test), output carries no ANSI codes and no live progress,
and tables are aligned plain text as wide as their widest value: nothing is ever cut or wrapped, so ``grep``,
``awk`` and people all read it. ``--json`` prints one JSON document instead (:func:`emit_json`).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderResult
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

_PLAIN_WIDTH = 200


def make_console(stderr: bool = False, file: Any = None) -> Console:
    """A console on stdout (or stderr, or ``file``) that is rich only when that stream is a terminal."""
    stream = file or (sys.stderr if stderr else sys.stdout)
    # Never markup or emoji codes: names, paths and error text are printed as they are.
    if _is_tty(stream):
        return Console(stderr=stderr, file=file, highlight=False, markup=False, emoji=False)
    # Unless ``file`` is given, no file is bound: the console writes to whatever sys.stdout/stderr is at print
    # time (pytest's capture).
    return Console(stderr=stderr, file=file, force_terminal=False, no_color=True, highlight=False, markup=False,
                   emoji=False, width=_PLAIN_WIDTH, soft_wrap=True)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainOrRichTable:
    """A table that draws itself with rich on a terminal and as aligned plain text everywhere else.

    Plain text is as wide as the widest value of each column (rich would cut rows at the console width
    when piped); columns are separated by three spaces, numbers right-aligned, trailing spaces dropped.
    """

    def __init__(self, title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str]):
        self.title, self.columns, self.right = title, list(columns), set(right)
        self.rows = [[cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row]
                     for row in rows]

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        if console.is_terminal:
            yield self.rich()
        else:
            yield Text(self.plain(), no_wrap=True, overflow="ignore")

    def rich(self) -> Any:
        out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        for name in self.columns:
            out.add_column(name, justify="right" if name in self.right else "left", no_wrap=True)
        for row in self.rows:
            out.add_row(*row)
        return Group(Text(self.title, style="bold"), out) if self.title else out

    def plain(self) -> str:
        cells = [self.columns, *([c.plain for c in row] for row in self.rows)]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title] if self.title else []
        for row in cells:
            parts = [text.rjust(w) if name in self.right else text.ljust(w)
                     for name, text, w in zip(self.columns, row, widths, strict=True)]
            lines.append("   ".join(parts).rstrip())
        return "\n".join(lines)


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = ()) -> Any:
    """A borderless table under an optional title line: rich on a terminal, never-cut plain text elsewhere.

    :param right: names of the columns to right-align (numbers).
    """
    return PlainOrRichTable(title, columns, rows, right)


def _json_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit_json(out: Console, payload: Any) -> None:
    """Print ``payload`` as one JSON document on the console's stream (never wrapped, never styled).

    Callers put only masked values in it; every registered secret is scrubbed from the text as a last guard.
    """
    from airflow_provider_duckling.common.redaction import scrub

    text = json.dumps(payload, indent=2, default=_json_value, ensure_ascii=False)
    out.file.write(scrub(text) + "\n")
    out.file.flush()


def coverage_bar(done: int, expected: int | None, width: int = 20) -> Text:
    """``███████░░░░  35.0%``: green when complete, yellow when partial, red when nothing is covered."""
    if not expected:
        return Text("–")
    share = min(done / expected, 1.0)
    filled = round(share * width)
    if done and not filled:
        filled = 1  # a started backfill never looks empty
    style = "green" if share >= 1 else ("yellow" if done else "red")
    return Text("█" * filled + "░" * (width - filled) + f" {share * 100:5.1f}%", style=style)


def status_text(ok: bool | None, text: str) -> Text:
    """A cell saying ``ok``/a problem/``skipped`` with the matching colour."""
    style = {True: "green", False: "bold red", None: "dim"}[ok]
    return Text(text, style=style)


def mask(secret: str) -> str:
    """Show that a secret-ish value is set without showing it: ``****2345`` (the last 4 of 12+ chars)."""
    if not secret:
        return ""
    return "****" + (secret[-4:] if len(secret) >= 12 else "")


@contextmanager
def progress(console: Console, description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A progress bar on a terminal; nothing at all in plain output. Yields ``advance(n=1, note=None)``."""
    bar = Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def advance(n: int = 1, note: str | None = None) -> None:
            bar.update(task, advance=n, description=f"{description} {note}" if note else description)

        yield advance

"""How the command shows things: rich tables and progress bars on a terminal, plain text everywhere else.

When stdout is not a terminal (a pipe, a log, a test), output carries no ANSI codes, no live progress and
is wide enough that table rows are never wrapped, so ``grep`` and people both read it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich import box
from rich.console import Console, Group
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


def make_console(stderr: bool = False) -> Console:
    """A console on stdout (or stderr) that is rich only when that stream is a terminal."""
    stream = sys.stderr if stderr else sys.stdout
    # Never markup or emoji codes: names, paths and error text are printed as they are.
    if _is_tty(stream):
        return Console(stderr=stderr, highlight=False, markup=False, emoji=False)
    # No file is bound: the console writes to whatever sys.stdout/stderr is at print time (pytest's capture).
    return Console(stderr=stderr, force_terminal=False, no_color=True, highlight=False, markup=False, emoji=False,
                   width=_PLAIN_WIDTH, soft_wrap=True)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = ()) -> Any:
    """A borderless table with one header rule, under an optional title line: readable as plain text and on
    a terminal.

    :param right: names of the columns to right-align (numbers).
    """
    right = set(right)
    out = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    for row in rows:
        out.add_row(*(cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row))
    return Group(Text(title, style="bold"), out) if title else out


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

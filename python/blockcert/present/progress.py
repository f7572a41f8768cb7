"""Progress bars and messages, always on stderr so stdout stays machine-readable."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stderr = Console(stderr=True, highlight=False)
T = TypeVar("T")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """A live bar on a terminal; in a log (CI, `2> file`) about 20 plain lines, so long runs still show progress."""
    if not stderr.is_terminal:
        yield from _logged(items, description, total)
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=False) as bar:
        yield from bar.track(items, total=total, description=description)


def _logged(items: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    start = time.monotonic()
    every = max(1, (total or 0) // 20)
    for done, item in enumerate(items, start=1):
        yield item
        if done % every == 0 or done == total:
            of = f"/{total}" if total else ""
            say(f"{description}: {done}{of} ({time.monotonic() - start:.0f} s)")


def say(msg: str) -> None:
    stderr.print(msg, markup=False)

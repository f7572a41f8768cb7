"""Executors: how independent per-block work is run. The workflows take one; local is the default.

Per-block certification (and later verification and stitched-suffix losses) is independent given the
traces, so a workflow hands it to `executor.map(fn, items)` and gets the results back in item order. The
local executor runs them in this process, one after another, with a progress line per item; a cluster
executor (Ray, issue 15) implements the same method, and must return the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from blockcert.present.progress import track

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str) -> list[R]: ...


class LocalExecutor:
    """In this process, in order."""

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str) -> list[R]:
        items = list(items)
        return [fn(x) for x in track(items, description, total=len(items))]


EXECUTORS: dict[str, Callable[[], Executor]] = {"local": LocalExecutor}

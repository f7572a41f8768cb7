"""Executors: how independent per-block work is run. The workflows take one; local is the default.

Per-block certification (and later verification and stitched-suffix losses) is independent given the
traces, so a workflow hands it to `executor.map(fn, items)` and gets the results back in item order. With
`on_result`, each result is handed to it in the driver as soon as it arrives (extraction writes the block's
files there and keeps only the certificate), and `map` returns what `on_result` returned. The
local executor runs them in this process; the Ray executor runs them as Ray tasks on a local cluster or at
an address. Both return the same values: every task runs with the driver's torch thread count, so the
float kernels (and therefore the certificate bytes) are the same wherever a task lands.

Ray moves the task arguments (IR tensors, traces) between processes with its own serialisation; that is
transport inside one certification, never a file format: every artifact is still written as safetensors
and strict JSON by the driver. `in_process` says whether a task runs in the driver's own process: only then
may an item carry a loader of a file the driver wrote instead of the data itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

import torch

from blockcert.errors import BlockCertError
from blockcert.present.progress import track

T = TypeVar("T")
R = TypeVar("R")


class Executor(Protocol):
    in_process: bool

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str,
            on_result: Callable[[int, R], Any] | None = None) -> list: ...


class LocalExecutor:
    """In this process, in order."""

    in_process = True

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str,
            on_result: Callable[[int, R], Any] | None = None) -> list:
        items = list(items)
        out = []
        for k, x in enumerate(track(items, description, total=len(items))):
            r = fn(x)
            out.append(r if on_result is None else on_result(k, r))
            items[k] = None  # a finished item's data (a block's IR, its traces) is not held to the end
        return out


def _with_threads(threads: int, fn, item):
    torch.set_num_threads(threads)
    return fn(item)


class RayExecutor:
    """Ray tasks: a local cluster started on first use (`address=None`), or the cluster at `address`."""

    in_process = False

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address, self.num_cpus = address, num_cpus

    def _ray(self):
        try:
            import ray  # optional and heavy: imported only when a Ray executor is asked for
        except ImportError:
            raise BlockCertError("--executor ray needs the ray package: pip install 'ray>=2.9'") from None
        if not ray.is_initialized():
            try:
                if self.address is None:
                    ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=False)
                else:
                    ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = self.address or "(local)"
                raise BlockCertError(f"cannot start or reach the Ray cluster {where}: {e}") from None
        return ray

    def map(self, fn: Callable[[T], R], items: Iterable[T], description: str,
            on_result: Callable[[int, R], Any] | None = None) -> list:
        ray = self._ray()
        task = ray.remote(_with_threads)
        threads = torch.get_num_threads()
        fn_ref = ray.put(fn)
        refs = [task.remote(threads, fn_ref, x) for x in items]
        out: dict[int, R] = {}
        pending = {r: k for k, r in enumerate(refs)}
        for _ in track(range(len(refs)), description, total=len(refs)):
            done, _rest = ray.wait(list(pending), num_returns=1)
            k = pending.pop(done[0])
            r = ray.get(done[0])
            out[k] = r if on_result is None else on_result(k, r)
            refs[k] = None  # the result is the driver's now: let the object store drop it
        return [out[k] for k in range(len(refs))]

    def shutdown(self) -> None:
        import ray  # see _ray

        if ray.is_initialized():
            ray.shutdown()


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def executor_for(name: str, address: str | None = None) -> Executor:
    if name not in EXECUTORS:
        raise BlockCertError(f"--executor {name!r} is not known; use one of {', '.join(EXECUTORS)}")
    if name == "ray":
        return RayExecutor(address)
    if address is not None:
        raise BlockCertError("--ray-address needs --executor ray")
    return LocalExecutor()

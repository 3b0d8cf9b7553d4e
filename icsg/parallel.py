"""Order-preserving parallel map with a progress bar, for per-crystal work."""

from __future__ import annotations

import os
from multiprocessing import get_context
from typing import Callable, Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _one_thread() -> None:
    """Each worker process uses one BLAS thread: workers × BLAS threads beyond the cores only slow them."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def pmap(fn: Callable[[T], R], items: Iterable[T], workers: int | None = None, desc: str = "",
         total: int | None = None, chunksize: int = 8, progress: bool = True) -> Iterator[R]:
    """``map(fn, items)`` over worker processes (fork), results in input order.

    ``fn`` must catch its own per-item errors and return them as values, so one bad
    crystal never stops a batch.
    """
    workers = default_workers() if workers is None else workers
    bar = tqdm(total=total, desc=desc, disable=not progress, unit="crystal")
    try:
        if workers <= 1:
            for x in items:
                yield fn(x)
                bar.update()
        else:
            with get_context("fork").Pool(workers, initializer=_one_thread) as pool:
                for r in pool.imap(fn, items, chunksize=chunksize):
                    yield r
                    bar.update()
    finally:
        bar.close()

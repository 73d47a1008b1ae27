"""Run seeded generation chunks over a process pool; the result does not depend on the number of workers."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Result = TypeVar("Result")


def map_chunks(work: Callable[[Any], Result], tasks: Sequence[Any], workers: int | None = None) -> list[Result]:
    """`[work(t) for t in tasks]`, in order, on up to `workers` processes (None: one per CPU)."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    if workers == 1:
        return [work(task) for task in tasks]
    with multiprocessing.get_context().Pool(workers) as pool:
        return pool.map(work, tasks, chunksize=1)

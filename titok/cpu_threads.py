"""Work items whose results do not depend on the machine's thread count: one intra-op thread each.

PyTorch's CPU kernels (oneDNN convolutions, MKL matrix products) may split a reduction differently with
the number of intra-op threads, and so round differently: on an Intel Xeon with AMX, decoding the same
tokens with 1 and with 2 threads changed 46 of 245,760 pixel values by 1 (issue 19). `ItemRunner` removes
the thread count from the result: on a CPU device every work item runs with exactly one intra-op thread,
and the process's cores are used by running independent items at once on a small pool of Python threads
(PyTorch releases the GIL inside its operators). An item's result is then a function of its inputs, its
shapes and the CPU's kernels only, never of how many threads the process has.

On other devices (CUDA) items run one after another in the calling thread, unchanged.

Contract:
- `ItemRunner(device, workers=None)`: `workers` defaults to the caller's intra-op thread count at entry
  (`torch.get_num_threads()`; 1 under torchrun, which sets OMP_NUM_THREADS=1).
- `runner.map(fn, items)` yields `fn(item)` in item order; an exception in an item is raised here.
- Inside `with runner:` the process's intra-op thread count is 1 (CPU); on exit it is restored.
- Torch's grad mode and autocast are thread-local: `fn` must set what it needs (`Pipeline`'s public
  methods run under `torch.no_grad()` themselves).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import torch

THREADS_PER_ITEM = 1


def _one_thread(fn: Callable, item):
    # ATen keeps the OpenMP thread count per native thread (initialised lazily from the process-wide value):
    # set it in the worker itself, so that a pool thread created before `__enter__` obeys too.
    torch.set_num_threads(THREADS_PER_ITEM)
    return fn(item)


class ItemRunner:
    """Runs work items with one intra-op thread each, several at once (CPU); see the module docstring."""

    def __init__(self, device: torch.device | str, workers: int | None = None):
        self.device = torch.device(device)
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._saved: int | None = None
        self._pool: ThreadPoolExecutor | None = None

    @property
    def fixed_threads(self) -> bool:
        """True when items run with one intra-op thread (a CPU device)."""
        return self.device.type == "cpu"

    def __enter__(self) -> "ItemRunner":
        if self.fixed_threads:
            self._saved = torch.get_num_threads()
            if self.workers is None:
                self.workers = self._saved
            torch.set_num_threads(THREADS_PER_ITEM)
            if self.workers > 1:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="titok-item")
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        if self._saved is not None:
            torch.set_num_threads(self._saved)
            self._saved = None

    def map(self, fn: Callable, items: Iterable) -> Iterator:
        """fn(item) for each item, in order (computed up to `workers` at a time on CPU)."""
        if self.fixed_threads and self._saved is None:
            raise RuntimeError("ItemRunner.map on a CPU device runs inside `with runner:` only")
        items = list(items)
        if not self.fixed_threads:
            return (fn(item) for item in items)
        if self._pool is None or len(items) < 2:
            return (_one_thread(fn, item) for item in items)
        return self._pool.map(lambda item: _one_thread(fn, item), items)

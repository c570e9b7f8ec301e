"""Progress of a run: one line per shard and a summary line on rank 0, and the crash test hook."""
from __future__ import annotations

import os
import sys
import time

from titok.evalset.dist import DistContext
from titok.evalset.plan import TEST_EXIT_ENV


class Reporter:
    """Rank 0's progress: a bar with the job's aggregate samples/s and ETA on a terminal, a line every 30 s
    otherwise; other ranks say nothing."""

    def __init__(self, ctx: DistContext, total: int, done_before: int, console):
        self.ctx, self.total, self.before = ctx, total, done_before
        self.own = 0                 # samples this process made
        self.job = 0                 # samples the job made in this run (the store's count, or shard files)
        self.t0 = time.perf_counter()
        self.progress = self.task = None
        self.last_line = self.t0
        self.finished = False
        self.console = console
        if ctx.rank == 0 and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                     TextColumn("ETA {task.fields[eta]}"), console=console, transient=False)
            self.task = self.progress.add_task("sampling", total=total, completed=done_before, rate="", eta="-")
            self.progress.start()

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return self.job / dt if dt > 0 else 0.0

    def advance(self, n: int) -> None:
        self.own += n
        count = self.ctx.add_done(n)
        self.refresh(count if count is not None else None)

    def refresh(self, job_count: int | None = None, shard_count: int | None = None) -> None:
        if self.ctx.rank != 0:
            return
        if job_count is not None:
            self.job = max(self.job, job_count)
        elif shard_count is not None:
            self.job = max(self.job, shard_count, self.own)
        else:
            self.job = max(self.job, self.own)
        done, rate = self.before + self.job, self.rate()
        eta = _duration((self.total - done) / rate) if rate > 0 else "-"
        if self.progress is not None:
            self.progress.update(self.task, completed=done, rate=f"{rate:.3g} samples/s", eta=eta)
        elif time.perf_counter() - self.last_line >= 30 or (done >= self.total and not self.finished):
            self.last_line = time.perf_counter()
            self.finished = done >= self.total
            print(f"titok sample: {done}/{self.total} samples ({100 * done / max(self.total, 1):.0f}%), "
                  f"{rate:.3g} samples/s, ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _test_exit_after() -> tuple[int, int] | None:
    value = os.environ.get(TEST_EXIT_ENV, "")
    if not value:
        return None
    rank, _, count = value.partition(":")
    return int(rank), int(count or 1)

"""GPU time of a call under a CUDA graph: N calls captured in one graph, the graph replayed between CUDA events.

Contract of `time_graph(fn, device=..., calls=N, replays=R)`:
  1. warm-up: `fn()` `warmup_calls` times eagerly on a side stream (compiles, autotuning, allocator pools),
     then a synchronisation;
  2. capture: `fn()` N times inside one `torch.cuda.graph` (outputs come from the graph's private pool);
  3. `warmup_replays` untimed replays, then R replays, each between two CUDA events created before the timed
     region, one synchronisation at the end;
  4. per-call GPU time = replay time / N; reported as median (p50), p20 and p80 over the R replays.
Launch, dispatch and argument validation happen once, at capture: the replays measure the GPU's work (the
working set stays in L2 between the N calls when it fits: the caller says whether it does).

Never a made-up number: off CUDA, or when the capture fails (a host synchronisation or CPU work inside `fn`),
the result has `timing=None` and a one-line `reason`. An out-of-memory error is re-raised (the caller makes
an "oom" row). The device pieces (graph, capture context, side stream, events, synchronisation) come from a
backend object, `CudaGraphBackend` by default, so the logic runs on CPU with a fake one in the tests.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Callable

import torch

from titok_bench.harness.env import is_out_of_memory
from titok_bench.harness.timing import Timing, summarize_ms

GRAPH_TARGET_MS = 2.0      # aim for graphs of about this much GPU time (the eager p50 bounds it from above)
MAX_CALLS = 50             # calls captured in one graph at most (outputs of every call live in the graph pool)


@dataclasses.dataclass
class GraphTiming:
    """Per-call GPU milliseconds from graph replays, or None and why."""

    timing: Timing | None
    calls: int | None          # calls captured in the graph
    replays: int               # timed replays
    reason: str | None         # why `timing` is None

    def fields(self) -> dict:
        """The row fields: graph_p50_ms/_p20_ms/_p80_ms, graph_calls, graph_replays, graph_note."""
        t = self.timing
        return {"graph_p50_ms": t.p50_ms if t else None, "graph_p20_ms": t.p20_ms if t else None,
                "graph_p80_ms": t.p80_ms if t else None, "graph_calls": self.calls if t else None,
                "graph_replays": self.replays if t else None, "graph_note": self.reason}


class CudaGraphBackend:
    """The real device pieces: torch.cuda graphs, streams and events on one CUDA device."""

    def __init__(self, device: torch.device):
        self.device = device

    def warmup_stream(self):
        """A side stream for the eager warm-up (what torch.cuda.graph's documentation asks for before capture)."""
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))

        @contextlib.contextmanager
        def scope():
            with torch.cuda.stream(stream):
                yield
            torch.cuda.current_stream(self.device).wait_stream(stream)
        return scope()

    def new_graph(self):
        return torch.cuda.CUDAGraph()

    def capture(self, graph):
        return torch.cuda.graph(graph)

    def new_event(self):
        return torch.cuda.Event(enable_timing=True)

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)


def unavailable_reason(device: torch.device | str) -> str | None:
    """Why CUDA-graph timing cannot run on `device` (None when it can)."""
    device = torch.device(device)
    if device.type != "cuda":
        return f"no CUDA graphs on a {device.type} device: GPU time needs a CUDA device (eager time only)"
    return None


def calls_per_graph(eager_ms: float, target_ms: float = GRAPH_TARGET_MS, max_calls: int = MAX_CALLS) -> int:
    """N for `time_graph`: ceil(target / eager per-call ms), in [1, max_calls]. The eager time is at least the
    GPU time, so a graph lasts at most about `target_ms` of GPU work (less for launch-bound calls)."""
    if not eager_ms > 0:
        return max_calls
    return max(1, min(max_calls, math.ceil(target_ms / eager_ms)))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def time_graph(fn: Callable[[], object], *, device: torch.device | str, calls: int, replays: int = 20,
               warmup_calls: int = 3, warmup_replays: int = 2, backend=None) -> GraphTiming:
    """Per-call GPU time of `fn()` from replays of a graph of `calls` calls (see the module docstring)."""
    if calls < 1 or replays < 1 or warmup_calls < 0 or warmup_replays < 0:
        raise ValueError(f"time_graph needs calls >= 1, replays >= 1, warm-ups >= 0; got calls={calls}, "
                         f"replays={replays}, warmup_calls={warmup_calls}, warmup_replays={warmup_replays}")
    if backend is None:
        reason = unavailable_reason(device)
        if reason is not None:
            return GraphTiming(None, None, 0, reason)
        backend = CudaGraphBackend(torch.device(device))
    with backend.warmup_stream():
        for _ in range(warmup_calls):
            fn()
    backend.synchronize()
    graph = backend.new_graph()
    try:
        with backend.capture(graph):
            for _ in range(calls):
                fn()
    except Exception as exc:  # noqa: BLE001 - any capture failure becomes the row's reason
        if is_out_of_memory(exc):
            raise
        with contextlib.suppress(Exception):
            backend.synchronize()
        return GraphTiming(None, calls, 0, f"graph capture failed ({_first_line(exc)}): eager time only")
    for _ in range(warmup_replays):
        graph.replay()
    events = [(backend.new_event(), backend.new_event()) for _ in range(replays)]
    backend.synchronize()
    for start, end in events:
        start.record()
        graph.replay()
        end.record()
    backend.synchronize()
    per_call = [start.elapsed_time(end) / calls for start, end in events]
    del graph
    return GraphTiming(summarize_ms(per_call), calls, replays, None)

"""Kernel micro-benchmarks (issue 17, defects 2 and 7): the CUDA-graph timer's logic with fake device pieces, the
row fields, the one case registry, error rows instead of a lost kernels.json, results written as ops finish.
The real CUDA-graph timing is the `gpu` test at the end."""
import contextlib
import json
import statistics

import pytest
import torch

from titok_bench import kernel_bench
from titok_bench.harness import cli
from titok_bench.harness.graph_timing import GraphTiming, calls_per_graph, time_graph
from titok_bench.harness.micro import TIMING_FIELDS, Cost, MicroRun, ident
from titok_bench.harness.timing import MicroSettings, micro_settings
from titok_bench.ops import cases as case_registry

IDENT_FIELDS = ("op", "provider", "case", "shape", "dtype", "status", "message")


# ---- fake device pieces: a clock the replays advance, events that read it, a log of what happened in order ----

class FakeBackend:
    def __init__(self, replay_ms, fail_capture=None):
        self.now, self.log, self.capturing, self.captured = 0.0, [], False, 0
        self.replay_ms, self.replays, self.fail_capture = list(replay_ms), 0, fail_capture

    def warmup_stream(self):
        self.log.append("warmup_stream")
        return contextlib.nullcontext()

    def new_graph(self):
        backend = self

        class Graph:
            def replay(self):
                backend.log.append("replay")
                backend.now += backend.replay_ms[backend.replays % len(backend.replay_ms)]
                backend.replays += 1
        return Graph()

    @contextlib.contextmanager
    def capture(self, graph):
        self.log.append("capture_begin")
        self.capturing = True
        try:
            yield
        finally:
            self.capturing = False
        self.log.append("capture_end")

    def new_event(self):
        backend = self
        self.log.append("new_event")

        class Event:
            def record(self):
                backend.log.append("record")
                self.t = backend.now

            def elapsed_time(self, end):
                return end.t - self.t
        return Event()

    def synchronize(self):
        self.log.append("sync")

    def call(self):
        """The op being timed: counts eager calls and captured calls."""
        if self.capturing:
            if self.fail_capture is not None:
                raise self.fail_capture
            self.captured += 1
        self.log.append("call")


def test_graph_timer_divides_replay_time_by_the_captured_calls():
    replay_ms = [1.0, 2.0, 3.0, 4.0, 5.0]
    fake = FakeBackend(replay_ms)
    result = time_graph(fake.call, device="cpu", calls=10, replays=5, warmup_calls=3, warmup_replays=2, backend=fake)
    assert isinstance(result, GraphTiming) and result.reason is None
    assert fake.captured == 10 and fake.log.count("call") == 3 + 10          # replays never call fn
    assert fake.replays == 2 + 5
    # Timed replays are the 3rd..7th: durations 3, 4, 5, 1, 2 ms per 10 calls.
    timed = [replay_ms[i % 5] / 10 for i in range(2, 7)]
    assert result.timing.p50_ms == pytest.approx(statistics.median(timed))
    assert result.timing.p20_ms == pytest.approx(0.18) and result.timing.p80_ms == pytest.approx(0.42)
    assert result.timing.iters == 5 and result.calls == 10 and result.replays == 5


def test_graph_timer_orders_warmup_capture_and_timed_replays():
    fake = FakeBackend([1.0])
    time_graph(fake.call, device="cpu", calls=4, replays=3, warmup_calls=2, warmup_replays=1, backend=fake)
    log = fake.log
    assert log[:4] == ["warmup_stream", "call", "call", "sync"]              # warm-up eager, then synchronised
    assert log[log.index("capture_begin") + 1:log.index("capture_end")] == ["call"] * 4
    first_record = log.index("record")
    assert "new_event" not in log[first_record:]                              # events made before the timed region
    assert log[first_record - 1] == "sync" and log[-1] == "sync"
    assert log[first_record:-1] == ["record", "replay", "record"] * 3         # one replay between each event pair
    assert log.index("replay") < log.index("new_event")                       # the untimed warm-up replay


def test_a_failed_capture_gives_no_graph_time_and_says_why():
    fake = FakeBackend([1.0], fail_capture=RuntimeError("operation not permitted when stream is capturing\nmore"))
    result = time_graph(fake.call, device="cpu", calls=4, replays=3, backend=fake)
    assert result.timing is None and fake.replays == 0
    assert result.reason == ("graph capture failed (RuntimeError: operation not permitted when stream is "
                             "capturing): eager time only")
    fields = result.fields()
    assert fields["graph_p50_ms"] is None and fields["graph_note"] == result.reason


def test_an_out_of_memory_during_capture_is_raised_for_an_oom_row():
    fake = FakeBackend([1.0], fail_capture=torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    with pytest.raises(torch.cuda.OutOfMemoryError):
        time_graph(fake.call, device="cpu", calls=2, replays=2, backend=fake)


def test_no_graph_time_on_cpu_and_the_op_is_not_called():
    calls = []
    result = time_graph(lambda: calls.append(1), device="cpu", calls=4)
    assert result.timing is None and calls == [] and "no CUDA graphs on a cpu device" in result.reason
    with pytest.raises(ValueError, match="calls >= 1"):
        time_graph(lambda: None, device="cpu", calls=0)


def test_calls_per_graph_aims_at_the_target_within_bounds():
    assert calls_per_graph(0.015) == 50                  # a 15-us call: capped at 50 calls per graph
    assert calls_per_graph(0.5) == 4 and calls_per_graph(1.0) == 2
    assert calls_per_graph(10.0) == 1 and calls_per_graph(0.0) == 50


def test_measure_takes_the_graph_time_and_judges_the_l2_fit():
    fake = FakeBackend([2.0])                            # every replay 2 ms
    micro = MicroRun(micro_settings("cpu"), peaks={"bandwidth_gbps": 1000.0, "tflops": {"fp32": 10.0}},
                     l2_bytes=1000, graph_backend=fake, graph_replays=4)
    identity = ident("op", "prov", "c", {"N": 1}, torch.float32)
    row = micro.measure(identity, fake.call, Cost(bytes=10**6, flops=10**9, working_set_bytes=1000, peak="fp32"))
    calls = row["graph_calls"]
    assert calls == calls_per_graph(row["eager_p50_ms"]) and row["graph_replays"] == 4
    assert row["graph_p50_ms"] == pytest.approx(2.0 / calls) and row["graph_note"] is None
    assert row["timed_by"] == "graph" and row["fits_l2"] is True and row["l2_bytes"] == 1000
    assert row["gbps"] == pytest.approx(1e6 / (2e-3 / calls) / 1e9)
    assert row["tflops"] == pytest.approx(1e9 / (2e-3 / calls) / 1e12)
    assert row["frac_peak_bandwidth"] == pytest.approx(row["gbps"] / 1000)
    assert row["frac_peak_flops"] == pytest.approx(row["tflops"] / 10)
    over = micro.measure(identity, fake.call, Cost(bytes=None, flops=None, working_set_bytes=1001))
    assert over["fits_l2"] is False and over["gbps"] is None and over["frac_peak_flops"] is None


def test_guarded_turns_failures_into_error_and_oom_rows():
    micro = MicroRun.create("cpu")
    identity = ident("op", "prov", "c", {}, torch.float32)

    def boom(exc):
        raise exc
    err = micro.guarded(identity, lambda: boom(ValueError("bad shape (3, 4)\nsecond line")))
    oom = micro.guarded(identity, lambda: boom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 2 GiB")))
    assert [r["status"] for r in err + oom] == ["error", "oom"]
    assert err[0]["message"] == "ValueError: bad shape (3, 4)"
    assert all(r[f] is None for r in err + oom for f in TIMING_FIELDS)
    with pytest.raises(KeyboardInterrupt):
        micro.guarded(identity, lambda: boom(KeyboardInterrupt()))


# ---- the case registry ---------------------------------------------------------------------------------------

def test_the_bandwidth_bound_ops_have_cases_in_and_past_the_l2():
    from titok_bench.ops import maskgit_step, nearest_code

    l2 = 60 * 2**20
    for module in (nearest_code, maskgit_step):
        sets = [module.cost(shape, torch.float32).working_set_bytes
                for _, shape in case_registry.cases(module.OP, False)]
        assert any(s > 2 * l2 for s in sets) and any(s < l2 // 2 for s in sets), (module.OP, sets)
    assert set(kernel_bench.OPS) == set(case_registry.CASES) and set(case_registry.DEFAULT_OPS) <= set(kernel_bench.OPS)
    assert all(case_registry.cases(op, True) for op in case_registry.OPS)        # every op runs at quick size
    for op, name in case_registry.HEADLINE.items():                             # headlines exist at both sizes
        case = next(c for c in case_registry.CASES[op] if c.name == name)
        assert case.quick is not None and case_registry.headline(op, True) == case.at(True)
    with pytest.raises(ValueError, match="op must be one of"):
        case_registry.cases("nope", False)


# ---- rows of the real ops on CPU (quick shapes) ------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_rows():
    micro = MicroRun(MicroSettings(torch.device("cpu"), quick=True, warmup=0, iters=2), peaks=None, l2_bytes=None)
    return {op: kernel_bench.run_op(op, micro) for op in ("nearest_code", "maskgit_step", "concat_attention")}


def test_every_row_has_the_fields_and_cpu_rows_say_why_no_graph_time(cpu_rows):
    for op, rows in cpu_rows.items():
        names = [c.name for c in case_registry.CASES[op] if c.quick is not None]
        assert {r["case"] for r in rows} == set(names), op
        for r in rows:
            assert set(IDENT_FIELDS + TIMING_FIELDS) <= set(r), (op, set(IDENT_FIELDS + TIMING_FIELDS) - set(r))
            assert r["status"] in ("ok", "unsupported"), r
            if r["status"] != "ok":
                continue
            assert 0 < r["eager_p20_ms"] <= r["eager_p50_ms"] <= r["eager_p80_ms"] and r["eager_iters"] == 2
            assert r["graph_p50_ms"] is None and "no CUDA graphs" in r["graph_note"] and r["timed_by"] == "eager"
            assert r["fits_l2"] is None and r["l2_bytes"] is None and r["working_set_bytes"] > 0
            module = __import__(f"titok_bench.ops.{op}", fromlist=["cost"])
            expected = module.cost(r["shape"], torch.float32)
            assert (r["bytes"], r["flops"], r["working_set_bytes"]) == (expected.bytes, expected.flops,
                                                                         expected.working_set_bytes)
    nc = cpu_rows["nearest_code"][0]
    assert nc["bytes"] == 512 * 12 * 4 + 4096 * 12 * 4 + 512 * 8 and nc["flops"] == 2 * 512 * 4096 * 12
    assert nc["gbps"] == pytest.approx(nc["bytes"] / (nc["eager_p50_ms"] * 1e-3) / 1e9)


# ---- kernel_bench.py: an injected failure leaves the other ops' rows; results written as ops finish ----------

@pytest.fixture
def tiny_cases(monkeypatch):
    """One tiny case per op, so that the tool's runs take a second."""
    small = {"nearest_code": [("tiny", {"M": 8, "N": 16, "D": 4, "l2_normalize": False})],
             "maskgit_step": [("tiny", {"B": 1, "K": 4, "V": 16})]}
    from titok_bench.ops import maskgit_step, nearest_code

    for module in (nearest_code, maskgit_step):
        monkeypatch.setattr(module, "cases", lambda op, quick: small[op])


def _bench(tmp_path, *ops):
    out = tmp_path / "kernels.json"
    status = cli.run_tool(kernel_bench.main, ["--device", "cpu", "--ops", ",".join(ops), "--out", str(out)])
    return status, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.parametrize("exc,status", [(RuntimeError("injected failure\ndetail"), "error"),
                                        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried 1 GiB"), "oom")])
def test_a_failing_provider_gives_its_row_and_the_other_ops_keep_theirs(tmp_path, monkeypatch, tiny_cases, exc,
                                                                        status):
    import titok_kernels.reference as reference

    def failing(*args, **kwargs):
        raise exc
    monkeypatch.setattr(reference, "maskgit_step_torch", failing)
    rc, payload = _bench(tmp_path, "maskgit_step", "nearest_code")
    assert rc == 1 and payload["complete"] is True and payload["schema"] == "titok-kernels/kernels/v2"
    by_op = {op: [r for r in payload["rows"] if r["op"] == op] for op in ("maskgit_step", "nearest_code")}
    assert [(r["provider"], r["status"]) for r in by_op["maskgit_step"]] == [("torch_step", status)]
    assert by_op["maskgit_step"][0]["message"] == f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    assert [(r["provider"], r["status"]) for r in by_op["nearest_code"]] == [("official_torch", "ok")]
    assert by_op["nearest_code"][0]["eager_p50_ms"] > 0


def test_a_failing_op_gives_one_error_row_and_the_next_op_still_runs(tmp_path, monkeypatch, tiny_cases):
    from titok_bench.ops import maskgit_step

    monkeypatch.setattr(maskgit_step, "run", lambda *a, **k: 1 / 0)
    rc, payload = _bench(tmp_path, "maskgit_step", "nearest_code")
    assert rc == 1
    first, *rest = payload["rows"]
    assert (first["op"], first["provider"], first["status"]) == ("maskgit_step", "all", "error")
    assert first["message"] == "ZeroDivisionError: division by zero"
    assert [(r["op"], r["status"]) for r in rest] == [("nearest_code", "ok")]


def test_an_interrupted_run_keeps_the_finished_ops_rows(tmp_path, monkeypatch, tiny_cases):
    from titok_bench.ops import maskgit_step

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(maskgit_step, "run", interrupted)
    rc, payload = _bench(tmp_path, "nearest_code", "maskgit_step")
    assert rc == cli.EXIT_INTERRUPTED
    assert payload["complete"] is False and payload["finished_ops"] == ["nearest_code"]
    assert [(r["op"], r["status"]) for r in payload["rows"]] == [("nearest_code", "ok")]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # atomic: no temporary left


# ---- on a GPU: the real graph timer --------------------------------------------------------------------------

@pytest.mark.gpu
def test_graph_timing_on_cuda_measures_the_gpu_not_the_launches():
    """A tiny op (a few microseconds of GPU work) under a graph: a time exists, and it is below the eager
    per-call time, which pays the launch and dispatch; the L2 size is known; a real op's rows carry graph times."""
    from titok_bench.harness.micro import l2_cache_bytes
    from titok_bench.harness.timing import time_fn

    x = torch.randn(1024, device="cuda")
    eager = time_fn(lambda: x.add_(1.0).mul_(0.5), device="cuda", warmup=5, iters=50)
    graph = time_graph(lambda: x.add_(1.0).mul_(0.5), device="cuda", calls=50, replays=20)
    assert graph.reason is None and graph.timing is not None
    assert 0 < graph.timing.p50_ms < eager.p50_ms
    assert l2_cache_bytes("cuda") and l2_cache_bytes("cuda") > 2**20
    rows = kernel_bench.run_op("nearest_code", MicroRun.create("cuda"))
    triton_rows = [r for r in rows if r["provider"] == "triton"]
    assert triton_rows and all(r["status"] == "ok" and r["graph_p50_ms"] > 0 for r in triton_rows), rows
    assert {r["fits_l2"] for r in triton_rows} == {True, False}

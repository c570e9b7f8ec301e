"""bench/cpu_ops.py: the fast path's CPU choices timed beside the alternatives (tiny iteration count here)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from titok.runtimes import cpu_has_bf16_matmul
from titok_bench.cpu_ops import cases

ROOT = Path(__file__).resolve().parent.parent


def test_cases_are_titok_l32_shapes():
    from titok_bench.harness.cpu_op_cases import candidate_cases

    rows = cases(4)
    linears = [r for r in rows if r["kind"] != "attention"]
    assert {(r["where"], r["m"]) for r in linears} == {("generator", 264), ("vit_decoder", 1156)}
    assert {r["kind"] for r in linears} == {"linear", "linear+gelu", "linear+add", "qkv"}
    assert [(r["batch"], r["seq"], r["heads"]) for r in rows if r["kind"] == "attention"] == [(8, 33, 12)]
    assert [(r["where"], r["batch"], r["seq"], r["heads"]) for r in candidate_cases(4)] == [
        ("vit_decoder", 4, 289, 16), ("generator", 8, 33, 12)]


def test_every_case_computes_what_it_names():
    """plain and chosen (and today and candidate) of each case give the same values up to bf16 rounding: both
    within a few bf16 steps of the float64 reference at unit-scale outputs."""
    import torch

    from titok_bench.harness.cpu_op_cases import candidate_cases, case_fns, max_error

    with torch.no_grad():
        for case, candidate in [(c, False) for c in cases(1)] + [(c, True) for c in candidate_cases(1)]:
            _, first, second, reference = case_fns(case, candidate=candidate)
            expected = reference()
            scale = float(expected.abs().max())
            joined = [torch.cat(out, dim=-1) if isinstance(out, (list, tuple)) else out for out in (first(), second())]
            assert joined[0].shape == joined[1].shape == expected.shape, case
            for fn in (first, second):
                assert max_error(fn(), expected) <= 2 ** -5 * max(scale, 1.0), (case, candidate)


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16_matmul(), reason="no native bf16 matrix units: the tool refuses (tested below)")
def test_tool_writes_every_case(tmp_path):
    out = tmp_path / "ops.json"
    proc = subprocess.run([sys.executable, "bench/cpu_ops.py", "--batch-size", "1", "--iters", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["schema"] == "titok-kernels/cpu-ops/v1" and len(payload["rows"]) == len(cases(1))
    assert all(r["plain_ms"] > 0 and r["chosen_ms"] > 0 and r["speedup"] for r in payload["rows"])
    assert all(r["plain_max_err"] > 0 and r["chosen_max_err"] > 0 for r in payload["rows"])
    assert payload["gemm"]["gflops"] > 0 and "speed-up" in proc.stdout
    assert "candidates" not in payload


@pytest.mark.slow
@pytest.mark.skipif(not cpu_has_bf16_matmul(), reason="no native bf16 matrix units: the tool refuses (tested below)")
def test_candidates_are_timed_beside_what_runs_today(tmp_path):
    out = tmp_path / "ops.json"
    proc = subprocess.run([sys.executable, "bench/cpu_ops.py", "--batch-size", "1", "--iters", "1", "--candidates",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())["candidates"]
    assert [r["where"] for r in rows] == ["vit_decoder", "generator"]
    assert all(r["today_ms"] > 0 and r["candidate_ms"] > 0 and r["candidate_max_err"] > 0 for r in rows)
    assert "candidates, not taken" in proc.stdout


def test_usage_errors_are_one_line():
    proc = subprocess.run([sys.executable, "bench/cpu_ops.py", "--iters", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--iters" in proc.stderr


def test_speedup_is_plain_time_over_chosen_time(monkeypatch):
    """A chosen path twice as fast as the plain one reads as a 2x speed-up (not 0.5x)."""
    import time

    from titok_bench import cpu_ops

    monkeypatch.setattr(cpu_ops, "cases", lambda batch: [{"kind": "linear", "where": "x", "m": 1, "k": 1, "n": 1}])
    import torch

    def slept(seconds):
        return lambda: (time.sleep(seconds), torch.zeros(1))[1]

    monkeypatch.setattr(cpu_ops, "case_fns", lambda case: (1e6, slept(0.02), slept(0.01), lambda: torch.zeros(1)))
    row = cpu_ops.measure(1, 3, lambda text: None, gemm_n=8)["rows"][0]
    assert 1.5 < row["speedup"]["p50"] < 2.5 and row["plain_ms"] > row["chosen_ms"]
    assert torch.is_grad_enabled()  # measured under no_grad, the caller's grad mode left as it was


def test_a_cpu_without_bf16_units_is_refused_in_one_line():
    import os

    env = {**os.environ, "TITOK_CPU_BF16": "0"}
    proc = subprocess.run([sys.executable, "bench/cpu_ops.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "bf16" in proc.stderr

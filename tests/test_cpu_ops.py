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
    rows = cases(4)
    assert {(r["where"], r["m"]) for r in rows if r["kind"] == "linear"} == {("generator", 264), ("vit_decoder", 1156)}
    assert [(r["batch"], r["seq"], r["heads"]) for r in rows if r["kind"] == "attention"] == [(8, 33, 12)]


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
    assert payload["gemm"]["gflops"] > 0 and "speed-up" in proc.stdout


def test_usage_errors_are_one_line():
    proc = subprocess.run([sys.executable, "bench/cpu_ops.py", "--iters", "0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--iters" in proc.stderr


def test_speedup_is_plain_time_over_chosen_time(monkeypatch):
    """A chosen path twice as fast as the plain one reads as a 2x speed-up (not 0.5x)."""
    import time

    from titok_bench import cpu_ops

    monkeypatch.setattr(cpu_ops, "cases", lambda batch: [{"kind": "linear", "where": "x", "m": 1, "k": 1, "n": 1}])
    monkeypatch.setattr(cpu_ops, "case_fns", lambda case: (1e6, lambda: time.sleep(0.02), lambda: time.sleep(0.01)))
    import torch

    row = cpu_ops.measure(1, 3, lambda text: None, gemm_n=8)["rows"][0]
    assert 1.5 < row["speedup"]["p50"] < 2.5 and row["plain_ms"] > row["chosen_ms"]
    assert torch.is_grad_enabled()  # measured under no_grad, the caller's grad mode left as it was


def test_a_cpu_without_bf16_units_is_refused_in_one_line():
    import os

    env = {**os.environ, "TITOK_CPU_BF16": "0"}
    proc = subprocess.run([sys.executable, "bench/cpu_ops.py"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "bf16" in proc.stderr

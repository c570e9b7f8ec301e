"""bench/official_cpu.py's matrix-rate arithmetic: the GEMM timed in the round-robin and each row's fraction of it.

(The tool's end-to-end run needs a checkout of the official code, which the project does not ship; its output
rules are tested in tests/test_bench_outputs.py.)
"""
import pytest
import torch

from titok_bench.harness.ceilings import gemm_fns, gemm_rates
from titok_bench.official_cpu import add_rates, rate_lines


def test_gemm_fns_one_product_per_dtype_and_none_for_zero():
    assert gemm_fns(0, (torch.float32, torch.bfloat16)) == {}
    fns = gemm_fns(8, (torch.float32, torch.bfloat16, torch.float32))
    assert sorted(fns) == ["gemm_bfloat16", "gemm_float32"]
    out = fns["gemm_bfloat16"]()
    assert out.shape == (8, 8) and out.dtype == torch.bfloat16


def test_rates_and_fractions():
    times = {"fast": [9.0, 9.0, 9.0], "gemm_bfloat16": [0.4, 0.2, 0.3], "gemm_float32": [1.0, 1.0, 1.0]}
    gemm = gemm_rates(times, 100)
    assert gemm["bfloat16"] == {"gflops": pytest.approx(2e6 / 0.3 / 1e9), "n": 100, "calls": 3}
    assert gemm["float32"]["gflops"] == pytest.approx(2e6 / 1e9)
    rows = [{"pipeline": "fast", "dtype": "bfloat16", "samples_per_s": 2.0},
            {"pipeline": "official", "dtype": "float16", "samples_per_s": 1.0}]
    add_rates(rows, 3e6, gemm)
    assert rows[0]["gflops"] == pytest.approx(6e6 / 1e9)
    assert rows[0]["fraction_of_gemm"] == pytest.approx(6e6 / (2e6 / 0.3))
    assert rows[1]["fraction_of_gemm"] is None  # no GEMM of its dtype was timed: no fraction, not a guess
    text = "\n".join(rate_lines("generate", {"rows": rows, "gemm": gemm}))
    assert "matrix rate in this run (100^3 torch.mm, median of 3 interleaved calls)" in text
    assert "fast: 0 GFLOP/s on 0 GFLOP a sample = 90% of the bf16 rate" in text
    assert rate_lines("generate", {"rows": rows, "gemm": {}}) == []

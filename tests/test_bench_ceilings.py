"""titok_bench.harness.ceilings: the measured matmul / copy ceilings, their arithmetic, failures, cache, and the
rows' fraction of them; a `gpu` test checks the CUDA figures against the datasheet (skipped here)."""
import time

import pytest
import torch

from titok_bench.harness import ceilings as C
from titok_bench.harness.env import device_peaks
from titok_bench.harness.measure import Settings, finish, peak_key

SMALL = {"matmul_n": 128, "copy_bytes": 1 << 20, "reps": 3, "budget_s": 1.0}


def test_cpu_ceilings_are_measured_and_labelled():
    got = C.measure_ceilings("cpu", sizes=SMALL)
    assert got["device_type"] == "cpu" and got["threads"] == torch.get_num_threads()
    assert set(got["matmul"]) == {"fp32", "bf16"}
    for key, entry in got["matmul"].items():
        assert entry["n"] == 128 and 1 <= entry["reps"] <= 3 and 0 < entry["min_ms"] <= entry["p50_ms"]
        assert entry["tflops"] == pytest.approx(2 * 128 ** 3 / (entry["p50_ms"] / 1e3) / 1e12)
        assert C.measured_tflops(got, key) == entry["tflops"]
    assert got["matmul"]["fp32"]["dtype"] == "float32" and got["matmul"]["bf16"]["dtype"] == "bfloat16"
    copy = got["copy"]
    assert copy["bytes"] == 1 << 20 and copy["gbps"] == pytest.approx(2 * (1 << 20) / (copy["p50_ms"] / 1e3) / 1e9)
    assert "128^3 matmuls" in got["method"] and "1 MiB memory copy" in got["method"] and got["seconds"] > 0


def test_figures_come_from_the_median_call():
    calls = []

    def timer(fn, device, reps, budget_s):
        fn()                                   # the real call runs (shapes, out= buffers)
        calls.append((device.type, reps, budget_s))
        return [4.0, 1.0, 2.0]                 # median 2 ms, fastest 1 ms

    got = C.measure_ceilings("cpu", sizes={**SMALL, "reps": 7, "budget_s": 0.5}, timer=timer)
    n = SMALL["matmul_n"]
    assert got["matmul"]["fp32"]["tflops"] == pytest.approx(2 * n ** 3 / 2e-3 / 1e12)
    assert got["matmul"]["fp32"]["p50_ms"] == 2.0 and got["matmul"]["fp32"]["min_ms"] == 1.0
    assert got["copy"]["gbps"] == pytest.approx(2 * (1 << 20) / 2e-3 / 1e9)
    assert calls == [("cpu", 7, 0.5)] * 3       # fp32, bf16, copy


def test_a_failed_measurement_is_recorded_and_the_others_stand(monkeypatch):
    real = torch.matmul

    def matmul(a, b, out=None):
        if a.dtype == torch.bfloat16:
            raise RuntimeError("bf16 matmul not supported here\nsecond line")
        return real(a, b, out=out)

    monkeypatch.setattr(torch, "matmul", matmul)
    got = C.measure_ceilings("cpu", sizes=SMALL)
    assert got["matmul"]["bf16"]["error"] == "RuntimeError: bf16 matmul not supported here"
    assert "tflops" not in got["matmul"]["bf16"] and C.measured_tflops(got, "bf16") is None
    assert got["matmul"]["fp32"]["tflops"] > 0 and got["copy"]["gbps"] > 0
    assert C.measured_tflops(None, "fp32") is None and C.measured_tflops(got, "tf32") is None


def test_measured_once_per_process_and_device(monkeypatch):
    made = []
    monkeypatch.setattr(C, "_CACHE", {})
    monkeypatch.setattr(C, "measure_ceilings", lambda device: made.append(str(device)) or {"device": str(device)})
    assert C.ceilings("cpu") is C.ceilings(torch.device("cpu"))
    assert made == ["cpu"]


def test_time_calls_stops_at_its_budget():
    slept = []
    times = C.time_calls(lambda: slept.append(time.sleep(0.03)), torch.device("cpu"), reps=50, budget_s=0.05,
                         warmup=1)
    assert 1 <= len(times) <= 3 and len(slept) == len(times) + 1          # + the warm-up call
    assert all(t >= 25 for t in times)
    assert len(C.time_calls(lambda: None, torch.device("cpu"), reps=4, budget_s=10.0)) == 4


class _Runner:
    dtype, steps = torch.bfloat16, 4


def _finished_row(ceilings):
    row = {"gflop_per_image": 2.0, "tf32": False, "projected_from_steps": None, "peak_tflops": None,
           "fraction_of_peak": None, "measured_tflops": None, "fraction_of_measured": None}

    class Watch:
        @staticmethod
        def read(record):
            return [record]

    job = type("J", (), {"row": row, "runner": _Runner(), "batch": 4, "projected": False, "records": [10.0]})()
    settings = Settings(torch.device("cpu"), 1, 0, False, 1, 0, False, ceilings)
    finish(job, Watch(), settings)
    return row


def test_rows_carry_the_fraction_of_the_measured_rate_in_their_math_mode():
    ceilings = {"matmul": {"bf16": {"tflops": 4.0}, "fp32": {"tflops": 1.0}}}
    row = _finished_row(ceilings)
    assert peak_key(torch.bfloat16, False) == "bf16"
    assert row["achieved_tflops"] == pytest.approx(2e9 * 4 / 10e-3 / 1e12)          # 0.8 TFLOP/s
    assert row["measured_tflops"] == 4.0 and row["fraction_of_measured"] == pytest.approx(0.2)
    assert row["fraction_of_peak"] is None                                          # CPU: no datasheet
    assert _finished_row(None)["fraction_of_measured"] is None
    assert _finished_row({"matmul": {"bf16": {"error": "x"}}})["measured_tflops"] is None


@pytest.mark.gpu
def test_gpu_ceilings_are_plausible_against_the_datasheet():
    """On CUDA: every mode measured, in the order the hardware has them (tensor-core bf16/fp16 > TF32 > fp32
    CUDA cores), within the datasheet (a rate above it means the timing is wrong; 10% for boost clocks),
    and in a few seconds."""
    device = torch.device("cuda")
    got = C.measure_ceilings(device)
    rates = {k: C.measured_tflops(got, k) for k in ("bf16", "fp16", "tf32", "fp32")}
    assert all(r and r > 0 for r in rates.values()), got
    assert min(rates["bf16"], rates["fp16"]) > rates["tf32"] > rates["fp32"], rates
    assert got["copy"]["gbps"] > 100, got["copy"]
    assert got["seconds"] < 30, got["seconds"]
    assert torch.backends.cuda.matmul.allow_tf32 is False                          # restored after the TF32 run
    peaks = device_peaks(device)
    if peaks is not None:
        for key, rate in rates.items():
            assert rate <= 1.1 * peaks["tflops"][key], (key, rate, peaks)
        assert got["copy"]["gbps"] <= 1.1 * peaks["bandwidth_gbps"], (got["copy"], peaks)


def test_fitted_n_grows_from_the_probe_while_the_next_size_fits_the_budget():
    rate = lambda gflops: (lambda size: 2 * size ** 3 / (gflops * 1e9))   # noqa: E731 - seconds of one call
    assert C.fitted_n(2048, rate(100.0), 1.0) == 2048       # 2048^3 at 100 GFLOP/s: 0.17 s
    assert C.fitted_n(2048, rate(0.3), 1.0) == 512          # emulated bf16: 512^3 0.9 s, 1024^3 7 s
    assert C.fitted_n(2048, rate(0.01), 1.0) == 256         # never below the probe size
    probed = []
    C.fitted_n(2048, lambda size: probed.append(size) or 1e-6, 1.0)
    assert probed == [256, 512, 1024]                       # the asked size itself is not probed


def test_an_emulated_dtype_is_measured_at_a_smaller_size_and_says_so(monkeypatch):
    monkeypatch.setattr(C, "_probe_seconds", lambda device, dtype, n: (0.1 if dtype == torch.bfloat16 else 1e-4)
                        * (n / 256) ** 3)
    got = C.measure_ceilings("cpu", sizes={**SMALL, "matmul_n": 1024, "budget_s": 0.9})
    bf16, fp32 = got["matmul"]["bf16"], got["matmul"]["fp32"]
    assert bf16["n"] == 512 and bf16["n_asked"] == 1024 and "probe" in bf16["n_reason"] and bf16["tflops"] > 0
    assert fp32["n"] == 1024 and "n_asked" not in fp32

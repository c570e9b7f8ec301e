"""The other bench tools on CPU: bench/profiling.py produces every report section (tiny model), bench/kernel_bench.py
writes its JSON, bench/parity.py shows progress and refuses a bad model in one line; bench/gpu_check.sh dry-runs."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _tool(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_profile_report_has_every_section(tmp_path):
    proc = _tool("bench/profiling.py", "--model", "tiny", "--device", "cpu", "--iters", "1", "--out-dir",
                 str(tmp_path), "--trace", "--gemm-n", "256")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "tiny-fast-b1.json").read_text())
    assert report["schema"] == "titok-kernels/profile/v1" and report["config"]["task"] == "generate"
    # on a CPU: the N^3 matrix rate in the pipeline's dtype, and each counted stage's rate against it
    gemm = report["gemm"]
    assert gemm["n"] == 256 and gemm["gflops"] > 0 and gemm["dtype"] == report["config"]["dtype"]
    e2e = report["end_to_end"]
    assert e2e["of_gemm"] == pytest.approx(e2e["achieved_tflops"] * 1e3 / gemm["gflops"])
    by_stage = {s["stage"]: s for s in report["stages"]}
    assert by_stage["sampling_steps"]["gflop_per_image"] is None and by_stage["sampling_steps"]["of_gemm"] is None
    for name in ("generator_forwards", "vit_decoder", "pixel_decoder"):
        st = by_stage[name]
        assert st["gflop_per_image"] > 0
        assert st["gflops"] == pytest.approx(st["gflop_per_image"] / (st["p50_ms"] / 1e3))   # batch 1
        assert st["of_gemm"] == pytest.approx(st["gflops"] / gemm["gflops"])
    assert sum(s["gflop_per_image"] or 0 for s in report["stages"]) == pytest.approx(e2e["gflop_per_image"])
    for key in ("command", "torch", "triton", "device_name", "timestamp", "git_sha"):
        assert key in report["environment"]
    assert {s["stage"] for s in report["stages"]} == {"generator_forwards", "sampling_steps", "vit_decoder",
                                                        "pixel_decoder"}
    assert abs(sum(s["share"] for s in report["stages"]) - 1.0) < 1e-6
    assert report["top_kernels"] and all(k["calls"] >= 1 and k["total_ms"] >= 0 for k in report["top_kernels"])
    assert any(k["name"] == "titok::maskgit_step" and k["project_kernel"] for k in report["top_kernels"])
    gemms = [r for r in report["roofline"] if r["name"] in ("aten::addmm", "aten::mm", "aten::conv2d")]
    assert gemms and all(r["flops_per_call"] > 0 and r["tflops"] > 0 for r in gemms)
    # The roofline's FLOPs add up to no more than the generation's own (they were counted calls^2 times once).
    counted = sum(r["flops_per_call"] * r["calls"] for r in report["roofline"] if r["flops_per_call"])
    assert 0 < counted <= 1.05 * report["end_to_end"]["gflop_per_image"] * 1e9
    assert report["telemetry"] is None                                    # no NVML on CPU
    assert report["end_to_end"]["samples_per_s"] > 0
    # No CUDA graph on CPU: the timed pipeline is the profiled one, and the report says so.
    assert report["end_to_end"]["cuda_graph"] is False and report["end_to_end"]["eager"] is None
    assert report["profiled"] == {"cuda_graph": False, "eager_copy": False, "batch_size": 1,
                                  "why": "the pipeline replays no CUDA graph: profiled as timed"}
    md = (tmp_path / "tiny-fast-b1.md").read_text()
    assert "- profiled: one eager generation (no CUDA graph)" in md and "Eager (no CUDA graph): " in md
    for title in ("## End to end", "## Stages", "## Top kernels", "## Autotune choices", "## Roofline",
                  "## Telemetry"):
        assert title in md
    assert (tmp_path / "tiny-fast-b1.trace.json").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-fast-b1.{s}" for s in
                                                          ("json", "md", "roofline.png", "trace.json")]


def test_profile_of_an_encode(tmp_path):
    """--task encode: the encoder's stages (vit_encoder, quantize) with their FLOPs, one eager encode profiled
    (the nearest-code op among its operators), files named ...-encode-b<batch>; no GEMM rate with --gemm-n 0."""
    proc = _tool("bench/profiling.py", "--model", "tiny", "--device", "cpu", "--iters", "1", "--batch-size", "2",
                 "--task", "encode", "--gemm-n", "0", "--out-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-fast-encode-b2.{s}" for s in
                                                          ("json", "md", "roofline.png")]
    report = json.loads((tmp_path / "tiny-fast-encode-b2.json").read_text())
    assert report["config"]["task"] == "encode" and report["gemm"] is None
    assert [s["stage"] for s in report["stages"]] == ["vit_encoder", "quantize"]
    assert all(s["gflop_per_image"] > 0 and s["of_gemm"] is None for s in report["stages"])
    from titok.flops import encode_flops
    from titok_bench.harness.models import SPECS
    tok = SPECS["tiny-titok"].build(torch.device("cpu"))[0]
    e2e = report["end_to_end"]
    assert e2e["gflop_per_image"] * 1e9 == pytest.approx(encode_flops(tok.cfg))
    assert e2e["samples_per_s"] == pytest.approx(2 / (e2e["p50_ms"] / 1e3)) and e2e["of_gemm"] is None
    assert any(k["name"] == "titok::nearest_code" and k["project_kernel"] for k in report["top_kernels"])
    assert report["profiled"]["why"] == "the pipeline encodes eagerly: profiled as timed"
    md = (tmp_path / "tiny-fast-encode-b2.md").read_text()
    assert md.startswith("# Profile: tiny, fast pipeline, encode, batch 2") and " images/s " in md
    assert "one eager encode" in md and "| vit_encoder |" in md and "| quantize |" in md


def test_profile_encode_refuses_a_model_without_an_encoder(tmp_path):
    proc = _tool("bench/profiling.py", "--model", "maskgit-256", "--task", "encode", "--device", "cpu",
                 "--out-dir", str(tmp_path))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "has no encoder" in proc.stderr and list(tmp_path.iterdir()) == []


class _ReplayStandIn:
    """Stands in for titok.runtimes.CUDAGraphs on CPU: 'replays' run the runtime eagerly, and are counted."""

    def __init__(self, runtime):
        self.runtime, self.replays = runtime, 0

    def run(self, cls, seed, *, images):
        self.replays += 1
        ids = self.runtime.sample(cls, seed=self.runtime.start(seed, None))
        return self.runtime.decode(ids).float().clamp(0.0, 1.0) if images else ids

    def release(self):
        pass


def test_profile_of_a_graph_pipeline_profiles_an_eager_copy(monkeypatch):
    """A pipeline that replays a CUDA graph (stood in for on CPU) is timed as it is, timed again eagerly, and
    profiled eagerly: a replay dispatches no operator, so profiling it would leave the roofline empty."""
    from titok_bench import profiling

    built = {}

    def build_with_graph(*args, **kwargs):
        pipe, flops = build(*args, **kwargs)
        pipe.graphs = built["graphs"] = _ReplayStandIn(pipe.runtime)
        built["pipe"] = pipe
        return pipe, flops

    build = profiling.build_pipeline
    monkeypatch.setattr(profiling, "build_pipeline", build_with_graph)
    profiled = []
    real_profile = profiling.profile_generation
    monkeypatch.setattr(profiling, "profile_generation",
                        lambda pipe, batch, **kw: profiled.append(pipe) or real_profile(pipe, batch, **kw))
    report = profiling.make_report("tiny", "fast", 2, torch.device("cpu"), None, iters=1, say=lambda _: None)
    pipe, graphs = built["pipe"], built["graphs"]
    assert graphs.replays == 2                             # the graph-timed end to end: 1 warm-up + 1 iteration
    (eager,) = profiled
    assert eager is not pipe and eager.graphs is None
    assert eager.decoder is pipe.decoder and eager.generator is pipe.generator and eager.scheduler is pipe.scheduler
    assert eager.dtype == pipe.dtype and eager.mode == pipe.mode
    assert report["config"]["cuda_graph"] is True and report["end_to_end"]["cuda_graph"] is True
    assert report["end_to_end"]["eager"]["p50_ms"] > 0 and report["end_to_end"]["eager"]["samples_per_s"] > 0
    assert report["profiled"]["cuda_graph"] is False and report["profiled"]["eager_copy"] is True
    assert "dispatches no operators" in report["profiled"]["why"]
    # bf16 on a CPU runs its linear layers as mkldnn::_linear_pointwise (titok.cpu_linear), fp32 as addmm
    assert report["roofline"] and any(r["name"] in ("aten::addmm", "aten::mm", "mkldnn::_linear_pointwise")
                                      for r in report["roofline"])
    assert any(k["name"] == "titok::maskgit_step" for k in report["top_kernels"])
    md = profiling.to_markdown(report)
    assert "CUDA graph replay: " in md and "Eager, without the CUDA graph (the profiled mode): " in md


def test_profile_refuses_an_out_dir_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    proc = _tool("bench/profiling.py", "--model", "tiny", "--device", "cpu", "--out-dir", str(tmp_path / "f"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--out-dir" in proc.stderr


def test_kernel_bench_writes_its_json(tmp_path):
    """A tiny CPU run (one op, quick shapes) gets to the end and writes the result file."""
    out = tmp_path / "kernels.json"
    proc = _tool("bench/kernel_bench.py", "--device", "cpu", "--ops", "maskgit_step", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    assert payload["schema"] == "titok-kernels/kernels/v2" and payload["quick"] is True and payload["complete"]
    assert payload["rows"] and all(r["op"] == "maskgit_step" and r["status"] == "ok" and r["eager_p50_ms"] > 0
                                   for r in payload["rows"])


def test_kernel_bench_table_takes_shapes_as_dicts_or_strings():
    from titok_bench.kernel_bench import results_table, shape_text

    assert shape_text({"M": 4, "N": 8}) == "M=4 N=8"
    assert shape_text("B=2,H=16,Ls=257") == "B=2,H=16,Ls=257"         # concat_attention's rows carry a string
    row = {"op": "x", "provider": "torch", "case": "c", "shape": "B=2", "dtype": "float32", "status": "ok",
           "eager_p50_ms": 1.0, "graph_p50_ms": 0.5, "graph_p20_ms": 0.4, "graph_p80_ms": 0.6}
    failed = {"op": "x", "provider": "torch", "case": "c", "shape": {}, "dtype": None, "status": "error",
              "message": "RuntimeError: boom"}
    assert results_table([row, failed], "t").row_count == 2


def test_parity_shows_progress_and_writes_its_json(tmp_path):
    out = tmp_path / "parity.json"
    proc = _tool("bench/parity.py", "--model", "tiny", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    steps = [line for line in proc.stderr.splitlines() if line.startswith("parity [")]
    assert len(steps) == 6 and steps[-1].startswith("parity [6/6]")
    payload = json.loads(out.read_text())
    assert payload["finished"] is True and all(e["status"] == "ok" for e in payload["parts"].values())
    assert payload["parts"]["fp32_tokens"]["tokens_identical"] is True
    assert payload["parts"]["fp32_images"]["within_bound"] is True


def test_parity_unknown_model_is_one_line_exit_2():
    proc = _tool("bench/parity.py", "--model", "nope")
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "--model" in lines[0] and "'nope'" in lines[0] and "Traceback" not in proc.stderr


def test_gpu_check_dry_run_lists_every_step(tmp_path):
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for piece in ("pytest", "-m gpu", "bench/kernel_bench.py", "bench/sampling.py", "--compare paper",
                  "bench/profiling.py", "bench/parity.py"):
        assert piece in proc.stdout, piece
    assert not any(tmp_path.iterdir())  # a dry run writes nothing


@pytest.mark.parametrize("name, shapes, per_call, total_flops", [
    ("aten::mm", [[64, 32], [32, 16]], 2 * 64 * 32 * 16, 3 * 2 * 64 * 32 * 16),  # the profiler sums calls
    ("mkldnn::_linear_pointwise", [[4, 33, 768], [3072, 768], [3072]], 2 * 132 * 768 * 3072, 0),
])
def test_roofline_row_counts_flops_per_call(name, shapes, per_call, total_flops):
    from titok_bench.harness.roofline import roofline_row

    evt = types.SimpleNamespace(cpu_time_total=3000.0, count=3, flops=total_flops, input_shapes=shapes)
    row = roofline_row(evt, name, False, torch.bfloat16, None)
    assert row["flops_per_call"] == per_call
    assert row["tflops"] == pytest.approx(3 * per_call / 3e-3 / 1e12)


@pytest.mark.parametrize("tool", ["bench/parity.py", "bench/profiling.py"])
def test_batch_size_zero_is_refused_before_any_work(tool):
    """--batch-size 0 was taken as 'not given' (the default batch ran, minutes of work): now a usage error."""
    proc = _tool(tool, "--batch-size", "0", "--device", "cpu", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().count("\n") == 0 and "--batch-size" in proc.stderr

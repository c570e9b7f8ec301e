"""The other bench tools on CPU: bench/profiling.py produces every report section (tiny model), bench/kernel_bench.py
writes its JSON, bench/parity.py shows progress and refuses a bad model in one line; bench/gpu_check.sh dry-runs."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool(*args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_profile_report_has_every_section(tmp_path):
    proc = _tool("bench/profiling.py", "--model", "tiny", "--device", "cpu", "--iters", "1", "--out-dir",
                 str(tmp_path), "--trace")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "tiny-fast-b1.json").read_text())
    assert report["schema"] == "titok-kernels/profile/v1"
    for key in ("command", "torch", "triton", "device_name", "timestamp", "git_sha"):
        assert key in report["environment"]
    assert {s["stage"] for s in report["stages"]} == {"generator_forwards", "sampling_steps", "vit_decoder",
                                                        "pixel_decoder"}
    assert abs(sum(s["share"] for s in report["stages"]) - 1.0) < 1e-6
    assert report["top_kernels"] and all(k["calls"] >= 1 and k["total_ms"] >= 0 for k in report["top_kernels"])
    assert any(k["name"] == "titok::maskgit_step" and k["project_kernel"] for k in report["top_kernels"])
    gemms = [r for r in report["roofline"] if r["name"] in ("aten::addmm", "aten::mm", "aten::conv2d")]
    assert gemms and all(r["flops_per_call"] > 0 and r["tflops"] > 0 for r in gemms)
    assert report["telemetry"] is None                                    # no NVML on CPU
    assert report["end_to_end"]["samples_per_s"] > 0
    md = (tmp_path / "tiny-fast-b1.md").read_text()
    for title in ("## End to end", "## Stages", "## Top kernels", "## Autotune choices", "## Roofline",
                  "## Telemetry"):
        assert title in md
    assert (tmp_path / "tiny-fast-b1.trace.json").stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"tiny-fast-b1.{s}" for s in
                                                          ("json", "md", "roofline.png", "trace.json")]


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

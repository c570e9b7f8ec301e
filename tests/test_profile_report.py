"""bench/profile.py produces every report section on CPU (tiny model), and bench/gpu_check.sh dry-runs."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_profile_report_has_every_section(tmp_path):
    proc = subprocess.run([sys.executable, "bench/profile.py", "--model", "tiny", "--device", "cpu", "--iters", "1",
                           "--out-dir", str(tmp_path), "--trace"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
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


def test_gpu_check_dry_run_lists_every_step(tmp_path):
    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for piece in ("pytest", "-m gpu", "bench/kernels.py", "bench/sampling.py", "--compare paper",
                  "bench/profile.py"):
        assert piece in proc.stdout, piece
    assert not any(tmp_path.iterdir())  # a dry run writes nothing

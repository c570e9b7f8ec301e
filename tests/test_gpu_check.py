"""bench/gpu_check.sh without a GPU: the CPU rehearsal runs every stage's real commands at tiny sizes through the
same wheel install, per-step timeouts and packing; a step killed by its timeout leaves the earlier steps in the
archive; the stage budget; the dry run; the written time estimates."""
import csv
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = "bench/gpu_check.sh"
TOOLS = ("bench/sampling.py", "bench/parity.py", "bench/kernel_bench.py", "bench/profiling.py")

# What each stage's archive must hold after a rehearsal (the profile of --model tiny is named tiny-fast-b1.*).
EXPECTED = {
    1: {"stage1.summary.txt", "stage1.steps.tsv", "stage1.env.txt", "stage1.wheels.log", "gpu_tests.log",
        "gpu_tests.xml", "sampling_l32_bf16.json", "sampling_l32_bf16.log", "sampling_l32_fp32.json",
        "parity_l32.json", "kernels.json", "kernel_bench.log"},
    2: {"stage2.summary.txt", "stage2.steps.tsv", "stage2.env.txt", "compare_paper.json", "compare_paper.log",
        "tokens.json", "tokens.log"},
    3: {"stage3.summary.txt", "stage3.steps.tsv", "stage3.env.txt", "compare_best_256.json", "compare_best_256.log"},
    4: {"stage4.summary.txt", "stage4.steps.tsv", "stage4.env.txt", "compare_best_512.json", "compare_best_512.log"},
    5: {"stage5.summary.txt", "stage5.steps.tsv", "stage5.env.txt", "profile_l32.log", "tiny-fast-b1.md",
        "tiny-fast-b1.json", "sampling_l32_compile_bf16.json"},
    6: {"stage6.summary.txt", "stage6.steps.tsv", "stage6.env.txt", "sampling_l32_compile_fp32.json"},
}
PROBE = "gpucheck_probe-0.1-py3-none-any.whl"
BINARY = "gpucheck_binary-0.1-cp312-cp312-manylinux_2_17_x86_64.whl"


def _wheel(folder: Path, filename: str) -> None:
    """A minimal valid wheel holding one module, tagged as its file name says."""
    name, version, *tag = filename[:-4].split("-")
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 1\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {'-'.join(tag)}\n",
    }
    record = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / filename, "w") as z:
        for path, text in {**files, f"{info}/RECORD": record}.items():
            z.writestr(path, text)


def _run(tmp_path: Path, *args: str, env: dict | None = None, timeout: float = 600):
    out, tmp, wheels = tmp_path / "out", tmp_path / "tmp", tmp_path / "whl"
    for d in (tmp, wheels):
        d.mkdir(exist_ok=True)
    for w in (PROBE, BINARY):
        _wheel(wheels, w)
    full_env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "GPU_CHECK_WHEELS": str(wheels),
                "TMPDIR": str(tmp), **(env or {})}
    proc = subprocess.run(["bash", SCRIPT, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, out


def _members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def _steps(members: dict[str, bytes], stage: int) -> dict[str, dict]:
    rows = csv.DictReader(members[f"stage{stage}.steps.tsv"].decode().splitlines(), delimiter="\t")
    return {r["step"]: r for r in rows}


@pytest.mark.slow
def test_rehearsal_runs_every_stage_and_packs_it(tmp_path):
    proc, out = _run(tmp_path, "--rehearse")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == [f"gpu_check_stage{s}.{ext}" for s in range(1, 7) for ext in ("tgz", "txt")]   # 2 a stage
    for stage, expected in EXPECTED.items():
        members = _members(out / f"gpu_check_stage{stage}.tgz")
        assert expected <= set(members), expected - set(members)
        steps = _steps(members, stage)
        assert all(r["status"] == "ok" for r in steps.values()), steps
        for name, data in members.items():
            if name.endswith(".json"):
                json.loads(data)                             # every result file is whole
        assert members[f"stage{stage}.summary.txt"] == (out / f"gpu_check_stage{stage}.txt").read_bytes()
        wheels = members[f"stage{stage}.wheels.log"].decode()
        assert f"installed: {PROBE}" in wheels
        if sys.version_info[:2] != (3, 12):                  # binary cp312 wheels are skipped in a rehearsal
            assert "skipped in rehearsal" in wheels and BINARY in wheels
        env = members[f"stage{stage}.env.txt"].decode()
        assert "/imports/titok_bench" in env                 # the project comes from the symlink folder
    summary = (out / "gpu_check_stage1.txt").read_text()
    assert "rehearsal" in summary and "--device cpu" in summary and "--model tiny-titok" in summary
    assert "set-up before this stage" in summary                      # the clock starts at the top
    assert "set-up before this stage" not in (out / "gpu_check_stage2.txt").read_text()


@pytest.mark.slow
def test_step_killed_by_its_timeout_keeps_the_earlier_steps(tmp_path):
    proc, out = _run(tmp_path, "--rehearse", "--stage", "1", "--steps", "env,kernel_bench,parity",
                     env={"GPU_CHECK_TIMEOUT_kernel_bench": "1"})
    assert proc.returncode == 1, proc.stdout[-4000:]        # one failed step: the one killed
    members = _members(out / "gpu_check_stage1.tgz")
    steps = _steps(members, 1)
    assert steps["env"]["status"] == "ok" and "stage1.env.txt" in members
    assert steps["kernel_bench"]["status"] == "timeout" and steps["kernel_bench"]["rc"] == "124"
    assert "kernel_bench.log" in members
    assert steps["parity"]["status"] == "ok" and "parity_l32.json" in members  # and the check goes on
    assert "gpu_tests" not in steps and "sampling_l32_bf16" not in steps       # --steps selects


def test_spent_stage_budget_skips_the_remaining_steps_and_still_packs(tmp_path):
    proc, out = _run(tmp_path, "--rehearse", "--stage", "2", env={"GPU_CHECK_BUDGET": "20"})
    steps = _steps(_members(out / "gpu_check_stage2.tgz"), 2)
    assert [r["status"] for r in steps.values()] == ["ok", "skipped", "skipped", "skipped"]  # wheels, then steps
    assert proc.returncode == 3
    assert "SKIPPED" in (out / "gpu_check_stage2.txt").read_text()


def test_dry_run_lists_every_stage_and_writes_nothing(tmp_path):
    proc = subprocess.run(["bash", SCRIPT, "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"OUT": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    for piece in ("-m pytest -q -m gpu tests/", "--compare paper --protocol paper",
                  "--compare paper --protocol best --resolutions 256", "--compare paper --protocol best --resolutions 512",
                  "--compare tokens",
                  "--pipelines reference,fast --dtype bfloat16 --batch-sizes 1,32,256",
                  "--pipelines reference,fast --dtype float32 --batch-sizes 1,32,256",
                  "--pipelines compile", "--model titok-l-32 --batch-size 32", *TOOLS):
        assert piece in proc.stdout, piece
    for stage in range(1, 7):
        assert f"stage {stage} " in proc.stdout and f"gpu_check_stage{stage}.tgz" in proc.stdout
    assert not any(tmp_path.iterdir())
    for tool in TOOLS:                                         # the tools it calls exist
        assert (ROOT / tool).exists(), tool


def test_bad_arguments_exit_2():
    for args in (["--stage", "7"], ["--steps", "no_such_step"], ["--frobnicate"]):
        proc = subprocess.run(["bash", SCRIPT, "--dry-run", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 2 and proc.stderr.startswith("gpu_check:"), args


def test_written_estimate_of_each_stage_fits_450_s():
    header = (ROOT / SCRIPT).read_text().split("set -u", 1)[0]
    totals = {int(m[1]): float(m[2]) for m in re.finditer(r"^# Stage (\d) .*?~(\d+(?:\.\d+)?) min", header, re.M)}
    assert sorted(totals) == [1, 2, 3, 4, 5, 6]
    assert all(t * 60 <= 450 for t in totals.values()), totals
    # each stage's total is the sum of its steps' written estimates ("-> N s"), and each within its step's limit
    for stage, text in re.findall(r"^# Stage (\d) .*?\n((?:#  .*\n)+)", header, re.M):
        steps = [int(v) for v in re.findall(r"-> (\d+) s", text)]
        limits = [int(v) for v in re.findall(r"\(limit +(\d+) s\)", text)]
        assert len(steps) == len(limits) >= 2 and all(e <= t for e, t in zip(steps, limits)), (stage, steps, limits)
        assert abs(sum(steps) / 60 - totals[int(stage)]) <= 0.1, (stage, steps, totals[int(stage)])
    budget = int(re.search(r'BUDGET="\$\{GPU_CHECK_BUDGET:-(\d+)\}"', (ROOT / SCRIPT).read_text())[1])
    assert budget + 20 <= 600                                 # a stage ends inside the 10-minute command limit

"""The bench tools' output files follow the `titok` CLI's rules (bench/harness/cli.py `Outputs`): an existing file
is replaced only with --overwrite, a file the run reads never (with or without it), plot formats by extension,
default outputs in the git-ignored results/ folder, everything checked before any work (one line, exit 2)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from titok.errors import TiTokInputError

ROOT = Path(__file__).resolve().parent.parent


def _tool(*args, cwd=ROOT):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def _one_line_refusal(proc, *words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _existing(path: Path) -> tuple[bytes, int]:
    path.write_text('{"earlier": "results"}')
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path.read_bytes(), path.stat().st_mtime_ns


@pytest.mark.parametrize("tool,extra", [
    ("bench/sampling.py", ["--device", "cpu"]),  # titok-l-32: refused before its minutes of work
    ("bench/kernel_bench.py", ["--device", "cpu", "--ops", "maskgit_step"]),
    ("bench/parity.py", ["--model", "tiny", "--device", "cpu"]),
    ("bench/official_cpu.py", ["--official", "."]),
    ("bench/cpu_ops.py", []),
])
def test_an_existing_result_file_is_refused_and_unchanged(tool, extra, tmp_path):
    out = tmp_path / "r.json"
    before = _existing(out)
    proc = _tool(tool, *extra, "--out", str(out))
    _one_line_refusal(proc, "exists", "--overwrite")
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before


def test_profiling_refuses_existing_report_files(tmp_path):
    before = _existing(tmp_path / "tiny-fast-b1.md")
    proc = _tool("bench/profiling.py", "--model", "tiny", "--device", "cpu", "--out-dir", str(tmp_path))
    _one_line_refusal(proc, "tiny-fast-b1.md", "--overwrite")
    assert ((tmp_path / "tiny-fast-b1.md").read_bytes(), (tmp_path / "tiny-fast-b1.md").stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-fast-b1.md"]


def test_overwrite_replaces_a_result_file(tmp_path):
    out = tmp_path / "kernels.json"
    _existing(out)
    proc = _tool("bench/kernel_bench.py", "--device", "cpu", "--ops", "maskgit_step", "--out", str(out), "--overwrite")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"rows"' in out.read_text() and "earlier" not in out.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_plot_format_by_extension_refused_before_any_work(tmp_path):
    for name in ("x.txt", "x.json", "x"):
        proc = _tool("bench/sampling.py", "--plot", str(tmp_path / name))  # titok-l-32 would take minutes
        _one_line_refusal(proc, "--plot", ".png or .svg or .pdf")
        assert "titok-l-32:" not in proc.stdout  # no table: refused before any model was built
    assert list(tmp_path.iterdir()) == []
    proc = _tool("bench/sampling.py", "--out", str(tmp_path / "r.txt"))
    _one_line_refusal(proc, "--out", ".json")


def test_a_file_the_run_reads_is_never_replaced(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    before = _existing(ckpt / "config.json")
    proc = _tool("bench/sampling.py", "--device", "cpu", "--checkpoint-dir", str(ckpt),
                 "--out", str(ckpt / "config.json"), "--overwrite")
    _one_line_refusal(proc, "reads", "never replaces an input")
    assert ((ckpt / "config.json").read_bytes(), (ckpt / "config.json").stat().st_mtime_ns) == before
    schema = ROOT / "bench" / "schema_sampling.json"
    text = schema.read_bytes()
    proc = _tool("bench/sampling.py", "--out", str(schema), "--overwrite")  # the project's own files are inputs
    _one_line_refusal(proc, "reads")
    assert schema.read_bytes() == text
    readme = ROOT / "README.md"
    text = readme.read_bytes()
    _one_line_refusal(_tool("bench/sampling.py", "--out", str(readme), "--overwrite"), ".json")
    assert readme.read_bytes() == text


def test_two_outputs_of_one_run_never_share_a_path(tmp_path):
    from titok_bench.harness.cli import Outputs

    outputs = Outputs()
    outputs.file(str(tmp_path / "a.json"), "--out")
    with pytest.raises(TiTokInputError, match="also the output of --out"):
        outputs.file(str(tmp_path / "a.json"), "--summary")
    outputs.plot(str(tmp_path / "a.svg"))


def test_default_outputs_are_ignored_by_git():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to check the ignore rules with")
    for path in ("results/cpu/kernels.json", "results/cpu/tiny-fast-b1.md"):
        proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert proc.returncode == 0, f"{path} would be tracked"
    from titok_bench.harness.cli import RESULTS_DIR

    assert RESULTS_DIR == "results"

"""bench/render_results.py: Markdown tables from the committed CPU profiles carry their files' figures and provenance;
the marked block of a Markdown file is replaced atomically and idempotently (refused without its markers); missing,
broken or unknown files are one line, exit 2; --out follows the tools' output rules. The committed block of
profiles/cpu-2core-epyc-avx512bf16/README.md is the rendering of its JSON files."""
import json
import os
from pathlib import Path

import pytest
import torch

from titok_bench import render_results as rr
from titok_bench.harness import cli

ROOT = Path(__file__).resolve().parents[1]
CPU = "profiles/cpu-2core-epyc-avx512bf16"
FILES = sorted(f"{CPU}/{p.name}" for p in (ROOT / CPU).glob("*.json"))


@pytest.fixture
def at_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def _run(argv, capsys):
    status = cli.run_tool(rr.main, argv, prog="render_results.py")
    out, err = capsys.readouterr()
    return status, out, err


def _refused(argv, capsys, *words):
    status, out, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and "Traceback" not in err, (status, err)
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def _row(md: str, *cells) -> str:
    """The one table line that holds these cells in this order."""
    hits = [line for line in md.splitlines() if line.startswith("| ") and all(f"| {c} |" in line for c in cells)]
    assert len(hits) == 1, (cells, hits)
    return hits[0]


def test_tables_carry_the_committed_figures_and_provenance(at_root, capsys):
    assert len(FILES) == 5
    status, md, _ = _run(FILES, capsys)
    assert status == 0
    for path in FILES:
        env = json.loads(Path(path).read_text())["environment"]
        assert f"**`{path}`**" in md
        assert f"commit: {env['git_sha'][:12]}" in md and f"date: {env['timestamp']}" in md
        assert f"command: `{env['command']}`" in md
    # the figures the README quotes, now read from the files
    assert "3.42x" in _row(md, "TiTok-L-32", "fast", "bfloat16", "1", "1.12")        # sampling_l32.json
    assert "1.29x" in _row(md, "TiTok-L-32", "fast", "float32", "1", "0.340")        # sampling_l32_nobf16.json
    assert "3.02x" in _row(md, "generate", "fast", "bfloat16", "3.72", "1.08")      # official_cpu_b4.json
    assert "2.41x" in _row(md, "encode", "fast", "bfloat16", "1.52", "2.63")
    low = _row(md, "fast_default_dtype_temperature0", "ok")                          # parity_l32_b8.json (v1)
    assert "token_agreement 99.6%" in low and "rows_identical 87.5%" in low
    assert "psnr_db_same_tokens_median 36.3 dB" in low
    tokens = json.loads(Path(f"{CPU}/tokens.json").read_text())                       # tokens.json: the ratios
    for t in tokens["token_ratios"]:
        assert rr.num(t["samples_per_s_small"]) in md and rr.num(t["samples_per_s_large"]) in md
    sampling = json.loads(Path(f"{CPU}/sampling_l32.json").read_text())
    ref = next(r for r in sampling["results"] if r["pipeline"] == "reference")
    assert f"| {rr.num(ref['latency_ms']['p50_ms'])} |" in _row(md, "TiTok-L-32", "reference", "float32", "1",
                                                               rr.num(ref["samples_per_s"]))


def test_number_formatting():
    assert [rr.num(x) for x in (3040.1253, 0.32893, 1.0760, 36.298, 1.99e-05, 0.0, 2, None, True)] == \
        ["3040", "0.329", "1.08", "36.3", "1.99e-05", "0", "2", "-", "true"]


def test_the_committed_block_is_up_to_date(at_root, capsys):
    doc = Path(CPU) / "README.md"
    before = doc.read_bytes()
    status, out, _ = _run([*FILES, "--update", str(doc), "--block", "cpu-2core"], capsys)
    assert status == 0 and "unchanged" in out, "re-render the block: see the README's command"
    assert doc.read_bytes() == before


def test_update_replaces_only_the_block_and_is_idempotent(at_root, tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nprose before\n<!-- results:x -->\nold typed figure 9.99x\n<!-- /results:x -->\nafter\n")
    status, out, _ = _run([FILES[0], "--update", str(doc), "--block", "x"], capsys)
    assert status == 0 and "updated" in out
    text = doc.read_text()
    assert "9.99x" not in text and text.startswith("# Title\n\nprose before\n<!-- results:x -->\n")
    assert text.endswith("<!-- /results:x -->\nafter\n") and "3.02x" in text
    os.utime(doc, (1_000_000_000, 1_000_000_000))
    status, out, _ = _run([FILES[0], "--update", str(doc), "--block", "x"], capsys)
    assert status == 0 and "unchanged" in out
    assert doc.read_text() == text and doc.stat().st_mtime == 1_000_000_000       # not even rewritten
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.md"]               # no temporary left


@pytest.mark.parametrize("text,words", [
    ("no markers here\n", ["found 0 and 0"]),
    ("<!-- results:x -->\n<!-- results:x -->\n<!-- /results:x -->\n", ["found 2 and 1"]),
    ("<!-- /results:x -->\n<!-- results:x -->\n", ["wrong order"]),
    ("<!-- results:y -->\n<!-- /results:y -->\n", ["<!-- results:x -->", "found 0 and 0"]),
])
def test_update_without_its_markers_is_refused_and_unchanged(at_root, tmp_path, capsys, text, words):
    doc = tmp_path / "doc.md"
    doc.write_text(text)
    _refused([FILES[0], "--update", str(doc), "--block", "x"], capsys, "--update", *words)
    assert doc.read_text() == text


def test_bad_inputs_are_one_line_exit_2(at_root, tmp_path, capsys):
    _refused([str(tmp_path / "missing.json")], capsys, "missing.json", "no such file")
    (tmp_path / "broken.json").write_text('{"schema": "titok-kernels/kernels/v1", ')
    _refused([str(tmp_path / "broken.json")], capsys, "broken.json", "not JSON")
    (tmp_path / "other.json").write_text('{"schema": "someone/else/v9", "environment": {}}')
    _refused([str(tmp_path / "other.json")], capsys, "other.json", "known kind", "someone/else/v9")
    (tmp_path / "bare.json").write_text('{"schema": "titok-kernels/kernels/v1"}')
    _refused([str(tmp_path / "bare.json")], capsys, "bare.json", "environment")
    (tmp_path / "norows.json").write_text('{"schema": "titok-kernels/kernels/v1", "environment": {}}')
    _refused([str(tmp_path / "norows.json")], capsys, "norows.json", "lacks or mistypes", "rows")
    _refused([FILES[0], "--update", str(tmp_path / "nodoc.md"), "--block", "x"], capsys, "nodoc.md", "no such file")
    _refused([FILES[0], "--update", str(tmp_path / "nodoc.md")], capsys, "--block")
    _refused([FILES[0], "--out", str(tmp_path / "t.txt")], capsys, "--out", ".md")


def test_out_follows_the_output_rules(at_root, tmp_path, capsys):
    out = tmp_path / "tables.md"
    status, _, _ = _run([*FILES, "--out", str(out)], capsys)
    assert status == 0 and "3.42x" in out.read_text()
    before = out.read_bytes()
    _refused([FILES[0], "--out", str(out)], capsys, "exists", "--overwrite")
    assert out.read_bytes() == before
    status, _, _ = _run([FILES[0], "--out", str(out), "--overwrite"], capsys)
    assert status == 0 and "3.42x" not in out.read_text() and "3.02x" in out.read_text()


def test_kernel_bench_and_parity_v2_files_render(tmp_path, capsys, monkeypatch):
    from titok_bench import kernel_bench, parity

    kernels = tmp_path / "kernels.json"
    assert kernel_bench.main(["--device", "cpu", "--ops", "maskgit_step", "--out", str(kernels)]) == 0

    def boom(inputs):
        raise RuntimeError("injected\nmore")

    monkeypatch.setattr(parity, "PARTS", [(n, boom if n == "default_dtype_images" else f, t)
                                          for n, f, t in parity.PARTS])
    par = tmp_path / "parity.json"
    assert parity.main(["--model", "tiny", "--device", "cpu", "--out", str(par)]) == 1
    capsys.readouterr()
    status, md, _ = _run([str(kernels), str(par)], capsys)
    assert status == 0
    for r in json.loads(kernels.read_text())["rows"]:     # kernels/v2: eager ms, and no graph time on a CPU
        assert r["status"] == "ok" and r["graph_p50_ms"] is None
        assert f"| {rr.num(r['eager_p50_ms'])} | - |" in _row(md, r["op"], r["provider"], r["case"])
    parts = json.loads(par.read_text())["parts"]
    assert "error: RuntimeError: injected" in _row(md, "default_dtype_images")
    img = _row(md, "fp32_images", "ok")
    assert f"bound {rr.num(parts['fp32_images']['bound'])}" in img and "within_bound true" in img
    assert torch.backends.cudnn.allow_tf32 is True  # parity restored cuDNN's default


ZEN4 = "profiles/cpu-2core-epyc-zen4"
ZEN4_FILES = sorted(f"{ZEN4}/{p.relative_to(ROOT / ZEN4)}" for p in (ROOT / ZEN4).rglob("*.json"))


def test_zen4_block_is_up_to_date_and_carries_the_matrix_rates(at_root, capsys):
    """official-cpu files with the GEMM rate (and one without encode), cpu-ops files: rendered, and the committed
    block of that folder's README is their rendering."""
    status, md, _ = _run(ZEN4_FILES, capsys)
    assert status == 0
    b4 = json.loads(Path(f"{ZEN4}/official_cpu_b4.json").read_text())
    fast = next(r for r in b4["generate"]["rows"] if r["pipeline"] == "fast")
    row = _row(md, "generate", "fast", "bfloat16", rr.num(fast["s_per_batch"]), rr.num(fast["samples_per_s"]))
    assert f"| {rr.num(fast['gflops'])} | {rr.pct(fast['fraction_of_gemm'])} |" in row
    assert f"bfloat16 {rr.num(b4['generate']['gemm']['bfloat16']['gflops'])}" in md
    ops = json.loads(Path(f"{ZEN4}/cpu_ops_b4.json").read_text())
    assert f"on {rr.num(ops['end_to_end']['packed_gflops'])} GFLOP/s" in md
    qkv = next(r for r in ops["rows"] if r["kind"] == "qkv")            # the errors beside the speeds
    assert f"| {rr.num(qkv['plain_max_err'])} | {rr.num(qkv['chosen_max_err'])} |" in md
    assert "Candidates, not taken" in md
    enc = json.loads(Path(f"{ZEN4}/profile/titok-l-32-fast-encode-b4.json").read_text())   # profiling.py --task encode
    e2e = enc["end_to_end"]
    assert (f"titok-l-32, encode, batch 4: {rr.num(e2e['samples_per_s'])} images/s end to end (p50 "
            f"{rr.num(e2e['p50_ms'])} ms per batch; {rr.num(e2e['achieved_tflops'] * 1e3)} GFLOP/s, "
            f"{rr.pct(e2e['of_gemm'])} of the bfloat16 4096^3 torch.mm's {rr.num(enc['gemm']['gflops'])})") in md
    doc = Path(ZEN4) / "README.md"
    before = doc.read_bytes()
    status, out, _ = _run([*ZEN4_FILES, "--update", str(doc), "--block", "zen4"], capsys)
    assert status == 0 and "unchanged" in out, "re-render the block: see the README's command"
    assert doc.read_bytes() == before

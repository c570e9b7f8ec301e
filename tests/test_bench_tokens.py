"""`bench/sampling.py --compare tokens` (the paper's Fig. 4d): rows per K, task and pipeline, the K=32 / K=256
ratios beside the paper's, the schema, the plot, and the command line's errors.

The sweep runs its test-size models here (`--compare tiny-tokens`: the tiny TiTok and generator of tests/data
with K latent tokens; the same code as TiTok-B / MaskGIT-ViT at K): a check that it runs and reports, not a
measurement.
"""
import json
import os
import subprocess
import sys

import pytest

from titok_bench import sampling
from titok_bench.harness import token_sweep

jsonschema = pytest.importorskip("jsonschema")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(sampling.SCHEMA_PATH) as _f:
    SCHEMA = json.load(_f)


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokens")
    out, plot = folder / "tokens.json", folder / "tokens.png"
    code = sampling.main(["--compare", "tiny-tokens", "--token-counts", "32,256", "--device", "cpu", "--iters", "2",
                          "--warmup", "0", "--train-batch-size", "3", "--out", str(out), "--plot", str(plot)])
    return code, json.loads(out.read_text()), plot


def test_rows_per_k_task_and_pipeline(sweep_run):
    code, payload, _ = sweep_run
    assert code == 0
    jsonschema.Draft202012Validator(SCHEMA).validate(payload)
    rows = payload["results"]
    keys = [(r["num_tokens"], r["task"], r["pipeline"]) for r in rows]
    assert keys == [(k, t, p) for k in (32, 256) for t in ("sampling", "training") for p in ("reference", "fast")]
    for r in rows:
        assert r["status"] == "ok", r["message"]
        assert r["samples_per_s"] > 0 and len(r["iteration_ms"]) == 2
        assert isinstance(r["peak_mem_bytes"], int) and r["peak_mem_bytes"] > 0
        assert r["batch_size"] == (3 if r["task"] == "training" else 1)
        assert r["speedup"]["pairs"] == 2
    training = [r for r in rows if r["task"] == "training"]
    assert all(r["warmup"] == 1 for r in training)          # the optimizer state is allocated outside the timing
    assert {r["dtype"] for r in training if r["pipeline"] == "fast"} == {"bfloat16"}
    # more tokens cost more memory in one training step (the logits alone grow 8x from K=32 to K=256)
    mem = {(r["num_tokens"], r["pipeline"]): r["peak_mem_bytes"] for r in training}
    assert mem[(256, "reference")] > mem[(32, "reference")]
    sweep = payload["config"]["sweep"]
    assert sweep["token_counts"] == [32, 256] and sweep["scale"] == "tiny" and sweep["training_batch_size"] == 3
    assert sweep["models"]["sampler"]["num_steps"] == 8


def test_ratios_are_k32_over_k256_beside_the_papers(sweep_run):
    _, payload, _ = sweep_run
    rate = {(r["num_tokens"], r["task"], r["pipeline"]): r["samples_per_s"] for r in payload["results"]}
    ratios = {(r["task"], r["pipeline"]): r for r in payload["token_ratios"]}
    assert set(ratios) == {(t, p) for t in ("sampling", "training") for p in ("reference", "fast")}
    for (task, pipeline), r in ratios.items():
        assert r["pairs"] == 2 and r["ratio_p20"] <= r["ratio"] <= r["ratio_p80"]
        assert r["samples_per_s_small"] > 0 and r["samples_per_s_large"] > 0
        assert r["sweep_ratio"] == pytest.approx(rate[(32, task, pipeline)] / rate[(256, task, pipeline)])
    assert ratios[("sampling", "fast")]["paper_ratio"] == pytest.approx(123.1 / 27.5)      # 4.5x
    assert ratios[("training", "fast")]["paper_ratio"] == pytest.approx(2815.2 / 219.7)    # 12.8x
    assert round(ratios[("sampling", "fast")]["paper_ratio"], 1) == 4.5
    assert round(ratios[("training", "fast")]["paper_ratio"], 1) == 12.8


def test_plot_is_written(sweep_run):
    _, _, plot = sweep_run
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_shows_the_ratio_table(tmp_path, capsys):
    code = sampling.main(["--compare", "tiny-tokens", "--token-counts", "32,256", "--tasks", "training",
                          "--pipelines", "reference", "--device", "cpu", "--iters", "1", "--train-batch-size", "2"])
    text = capsys.readouterr().out
    assert code == 0
    assert "K=32 over K=256" in text and "12.8x" in text and "training 2815.2 / 219.7" in text
    assert "pair K=32/K=256: K=256 training reference" in text


def test_the_paper_scale_models_are_titok_b_and_maskgit_vit():
    tok, gen = token_sweep.configs(128)
    assert (tok.enc_size, tok.dec_size, tok.num_latent_tokens, tok.codebook_size, tok.two_stage) == \
        ("base", "base", 128, 4096, True)
    assert (gen.model_type, gen.num_layers, gen.hidden_size, gen.image_seq_len, gen.codebook_size) == \
        ("ViT", 24, 768, 128, 4096)
    assert gen.sampler.num_steps == 8
    with pytest.raises(ValueError):
        token_sweep.configs(0)


def _tool(*args):
    return subprocess.run([sys.executable, "bench/sampling.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize("args, piece", [
    (["--compare", "tokens", "--token-counts", "0"], "--token-counts"),
    (["--compare", "tokens", "--tasks", "sampling,inference"], "--tasks"),
    (["--compare", "tokens", "--pipelines", "compile"], "--pipelines"),
    (["--compare", "tokens", "--batch-sizes", "1,2"], "one sampling batch size"),
    (["--compare", "tokens", "--train-batch-size", "0"], "--train-batch-size"),
    (["--compare", "tokens", "--dtype", "float32"], "--dtype"),
    (["--model", "titok-l-32", "--train-batch-size", "4"], "only with --compare tokens"),
    (["--compare", "token"], "'paper' or 'tokens'"),
    (["--compare", "paper", "--resolutions", "300"], "--resolutions: 300"),
    (["--model", "titok-l-32", "--resolutions", "256"], "only with --compare paper"),
])
def test_usage_errors_are_one_line_exit_2(args, piece):
    proc = _tool(*args, "--device", "cpu")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert piece in lines[0]


def test_tables_fit_80_columns_with_whole_values(sweep_run):
    import io

    from rich.console import Console

    from titok_bench.harness import report

    _, payload, _ = sweep_run
    console = Console(width=80, record=True, file=io.StringIO())
    report.print_tokens_report(console, payload, notes=[])
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80 and not any("\u2026" in line for line in lines), lines
    assert any(" 256 " in line and "training" in line for line in lines)

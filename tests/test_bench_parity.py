"""bench/parity.py: every part runs with TF32 off (flags restored and recorded), the fp32 image bound is measured
in the run (2 x plain torch's error against a float64 decode), and the parts are independent: a failing part
leaves the others, the file is rewritten after every part (an interruption keeps the finished ones), and the exit
status says a part failed. CPU runs use the tiny model; the `gpu` test repeats the bound and the flags on CUDA."""
import json

import pytest
import torch

from titok_bench import parity

PART_NAMES = [name for name, *_ in parity.PARTS]


@pytest.fixture
def tf32_on():
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _tiny(device="cpu"):
    from titok_bench.harness.models import PIPELINE_MODELS, SPECS

    decoder, generator, *_ = SPECS[PIPELINE_MODELS["tiny"]].build(torch.device(device), None)
    return decoder, generator


def _replace_part(monkeypatch, name, fn):
    parts = [(n, fn if n == name else f, text) for n, f, text in parity.PARTS]
    monkeypatch.setattr(parity, "PARTS", parts)


def test_tf32_off_inside_restored_after_and_recorded(tf32_on):
    record = {}
    with pytest.raises(RuntimeError, match="inside"):
        with parity.tf32_off(record):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            raise RuntimeError("inside")
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32   # restored on an exception
    on, off = dict.fromkeys(parity.TF32_FLAGS, True), dict.fromkeys(parity.TF32_FLAGS, False)
    assert record == {"before": on, "during": off, "after": on}


def test_every_part_runs_with_tf32_off_and_the_fp32_bound_is_measured(tf32_on):
    decoder, generator = _tiny()
    with torch.no_grad():
        parts = parity.compare(decoder, generator, batch=2)
    assert list(parts) == PART_NAMES and all(e["status"] == "ok" for e in parts.values()), parts
    on, off = dict.fromkeys(parity.TF32_FLAGS, True), dict.fromkeys(parity.TF32_FLAGS, False)
    assert all(e["tf32"] == {"before": on, "during": off, "after": on} for e in parts.values())
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    img = parts["fp32_images"]
    assert img["fp64_images"] == 2
    assert img["reference_fp32_max_abs_err_vs_fp64"] > 0          # fp32 really is compared with float64
    assert img["bound"] == 2 * img["reference_fp32_max_abs_err_vs_fp64"] + parity.BOUND_EPS
    assert img["within_bound"] is (img["fast_fp32_max_abs_err_vs_fp64"] <= img["bound"]) is True
    assert parts["fp32_tokens"]["tokens_identical"] is True
    assert parity.failures(parts) == []


def test_a_fast_error_above_the_bound_is_a_failure():
    parts = {"fp32_images": {"status": "ok", "within_bound": False}}
    assert parity.failures(parts) == ["fp32_images: the fast fp32 error is above the bound"]


def test_a_failing_part_leaves_the_others_and_exit_status_1(tmp_path, monkeypatch, capsys):
    def boom(inputs):
        raise RuntimeError("injected failure\nsecond line")

    def oom(inputs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    _replace_part(monkeypatch, "default_dtype_tokens", boom)
    _replace_part(monkeypatch, "fp32_tokens", oom)
    out = tmp_path / "parity.json"
    status = parity.main(["--model", "tiny", "--device", "cpu", "--out", str(out)])
    assert status == 1
    payload = json.loads(out.read_text())
    assert payload["schema"] == "titok-kernels/parity/v2" and payload["finished"] is True
    parts = payload["parts"]
    assert list(parts) == PART_NAMES
    assert parts["default_dtype_tokens"]["status"] == "error"
    assert parts["default_dtype_tokens"]["message"] == "RuntimeError: injected failure"
    assert parts["fp32_tokens"]["status"] == "oom" and "out of memory" in parts["fp32_tokens"]["message"]
    for name in ("fp32_images", "default_dtype_images", "default_dtype_encode"):
        assert parts[name]["status"] == "ok", parts[name]
    assert parts["fp32_images"]["within_bound"] is True
    text = capsys.readouterr().out
    assert "default_dtype_tokens: ERROR - RuntimeError: injected failure" in text
    assert "FAILED: fp32_tokens: oom; default_dtype_tokens: error" in text


def test_a_shared_input_that_fails_fails_each_part_that_needs_it_once(monkeypatch):
    calls = []

    def broken(self):
        calls.append(1)
        raise ValueError("no tokens today")

    monkeypatch.setattr(parity.Inputs, "_make_ids_ref", broken)
    decoder, generator = _tiny()
    with torch.no_grad():
        parts = parity.compare(decoder, generator, batch=2)
    assert [parts[n]["status"] for n in PART_NAMES] == ["error", "error", "ok", "ok", "ok"]
    assert parts["fp32_tokens"]["message"] == parts["fp32_images"]["message"] == "ValueError: no tokens today"
    assert len(calls) == 1


def test_an_interruption_keeps_the_finished_parts(tmp_path, monkeypatch, capsys):
    written = []
    real_write = parity.write_json

    def write(path, payload):
        written.append(list(payload["parts"]))
        real_write(path, payload)

    def interrupt(inputs):
        raise KeyboardInterrupt

    monkeypatch.setattr(parity, "write_json", write)
    _replace_part(monkeypatch, "default_dtype_tokens", interrupt)
    out = tmp_path / "parity.json"
    status = parity.cli.run_tool(parity.main, ["--model", "tiny", "--device", "cpu", "--out", str(out)])
    assert status == parity.cli.EXIT_INTERRUPTED
    payload = json.loads(out.read_text())
    assert payload["interrupted"] is True and payload["finished"] is False
    assert list(payload["parts"]) == ["fp32_tokens", "fp32_images"]
    assert all(e["status"] == "ok" for e in payload["parts"].values())
    assert written[:2] == [["fp32_tokens"], ["fp32_tokens", "fp32_images"]]   # rewritten after each part
    assert "2 finished part(s)" in capsys.readouterr().err


def test_a_decoder_without_an_encoder_skips_the_encode_part():
    class NoEncoder:
        decoder = object()

    entry = parity.run_part(parity.default_dtype_encode, NoEncoder())
    assert entry["status"] == "skipped" and entry["message"] == "the decoder has no encoder"
    assert parity.failures({"default_dtype_encode": entry}) == []


@pytest.mark.gpu
def test_gpu_fp32_images_within_the_measured_bound_with_tf32_off(tf32_on):
    """On CUDA cuDNN allows TF32 by default: with it on here, every part must still run with it off, and the fast
    fp32 decoder (channels_last, padding folded into the convolution) stay within twice plain torch's own error
    against float64."""
    decoder, generator = _tiny("cuda")
    with torch.no_grad():
        parts = parity.compare(decoder, generator, batch=4)
    assert all(e["status"] == "ok" for e in parts.values()), parts
    off = dict.fromkeys(parity.TF32_FLAGS, False)
    assert all(e["tf32"]["during"] == off for e in parts.values())
    assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    img = parts["fp32_images"]
    assert img["reference_fp32_max_abs_err_vs_fp64"] > 0 and img["within_bound"] is True, img

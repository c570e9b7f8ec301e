"""How close the fast pipeline stays to the reference: token agreement and image error, part by part.

    python bench/parity.py --model titok-l-32 --batch-size 32 --out parity.json

Five parts, same class ids, each its own entry in `parts` (status ok / error / oom / skipped, the
first line of the error, seconds); a part that fails leaves the others, and with --out the file is
rewritten (atomically) after every part, so an interruption keeps the finished parts:
- fp32_tokens: `fast` fp32 vs `reference` fp32 with the same given sampling noise: tokens should be
  identical (the fp32 contract);
- fp32_images: both decode the reference's tokens, and so does the reference in float64; the check
  is `max|fast - ref64| <= 2 * max|reference fp32 - ref64| + 1e-6` on the unclamped pixels, the
  bound measured in the same run on the same device (docs/benchmarks.md, "Parity");
- default_dtype_tokens: `fast` in its default dtype (bf16 on CUDA and on CPUs with native bf16
  matrix units, else fp32; `fast_dtype_reason` says why) vs `reference` fp32, sampling at
  temperature 0 (no Gumbel noise: greedy decoding) with the same given noise: identical tokens;
- default_dtype_images: PSNR of the decoded images (the same tokens decoded by both, and each
  pipeline's own images);
- default_dtype_encode: both encode the reference's images: identical token ids (skipped for a
  decoder without an encoder).
Every part runs with TF32 off (torch.backends.cuda.matmul.allow_tf32 and
torch.backends.cudnn.allow_tf32 False; cuDNN allows TF32 by default, which would put fp32 at ~1e-3
on a GPU), restored afterwards; `tf32` records the flags before, during and after.
Random weights unless --checkpoint-dir holds the checkpoints (random weights make near-ties in
the logits more frequent, so agreement is a lower bound). Progress goes to stderr, one line per
step; the result is printed as JSON, then a summary. Exit status: 0 every part ran and the fp32
image check holds, 1 a part failed (error/oom) or the check does not hold, 2 usage error (one
line), 130 interrupted (the parts finished before it are in --out).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
import traceback
import warnings

import torch

from titok_bench.harness import cli
from titok_bench.harness.env import environment, free_device_memory, is_out_of_memory, parse_device
from titok_bench.harness.models import PIPELINE_MODELS, SPECS
from titok_bench.harness.results import write_json

SCHEMA = "titok-kernels/parity/v2"
FP64_IMAGES = 4   # images decoded in float64 for the fp32 bound: a float64 decoder copy and its activations
#                   at 256 px cost 2x fp32's memory, and CPUs run float64 at a fraction of fp32's speed
BOUND_EPS = 1e-6  # ~8 fp32 ulps at 1.0: absorbs the rounding to fp32 when plain torch's error is ~0
TF32_FLAGS = ("cuda_matmul_allow_tf32", "cudnn_allow_tf32")


def tf32_flags() -> dict:
    return {"cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


@contextlib.contextmanager
def tf32_off(record: dict):
    """TF32 off for cuBLAS and cuDNN inside; the previous flags restored afterwards (also on an exception).
    `record` gets the flags `before`, `during` and `after` (what the caller had, and has again)."""
    before = tf32_flags()
    record["before"] = before
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    record["during"] = tf32_flags()
    try:
        yield record
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before["cuda_matmul_allow_tf32"]
        torch.backends.cudnn.allow_tf32 = before["cudnn_allow_tf32"]
        record["after"] = tf32_flags()


def _progress(total: int):
    """say(text): '[i/total] text' on stderr, with the seconds since the previous step."""
    state = {"i": 0, "t": time.perf_counter()}

    def say(text: str) -> None:
        state["i"] += 1
        now = time.perf_counter()
        print(f"parity [{state['i']}/{total}] {text} (+{now - state['t']:.1f} s)", file=sys.stderr, flush=True)
        state["t"] = now
    return say


class Inputs:
    """What the parts share (pipelines, noise, tokens, images), each made once on first use. A failure is
    kept too: every part that needs it fails with the same error, without running it again."""

    def __init__(self, decoder, generator, batch: int, seed: int = 0):
        self.decoder, self.generator, self.batch, self.seed = decoder, generator, batch, seed
        self.device = next(decoder.parameters()).device
        self._made: dict = {}

    def __getattr__(self, name):
        if name.startswith("_") or not hasattr(type(self), f"_make_{name}"):
            raise AttributeError(name)
        if name not in self._made:
            try:
                self._made[name] = (True, getattr(self, f"_make_{name}")())
            except Exception as exc:  # noqa: BLE001 - kept, and raised in every part that needs it
                self._made[name] = (False, exc)
        ok, value = self._made[name]
        if not ok:
            raise value
        return value

    def _noise(self, pipe, seed):
        from titok.pipeline import draw_noise

        cfg = self.generator.cfg
        return draw_noise(self.batch, cfg.image_seq_len, cfg.codebook_size, len(pipe.scheduler), seed=seed,
                          device=self.device)

    def _make_cls(self):
        return torch.arange(self.batch, device=self.device) * 37 % self.generator.cfg.num_classes

    def _make_ref(self):
        from titok.pipeline import Pipeline
        return Pipeline(self.decoder, self.generator, mode="reference")

    def _make_fast32(self):
        from titok.pipeline import Pipeline
        return Pipeline(self.decoder, self.generator, mode="fast", dtype=torch.float32, cuda_graph=False)

    def _make_noise_given(self):
        return self._noise(self.ref, self.seed)

    def _make_ids_ref(self):
        return self.ref.generate_tokens(self.cls, noise=self.noise_given)

    def _make_ref0(self):
        from titok.pipeline import Pipeline
        greedy = dataclasses.replace(self.ref.sampler, randomize_temperature=0.0)
        return Pipeline(self.decoder, self.generator, mode="reference", sampler=greedy)

    def _make_fast(self):
        from titok.pipeline import Pipeline
        return Pipeline(self.decoder, self.generator, mode="fast", sampler=self.ref0.sampler, cuda_graph=False)

    def _make_noise0(self):
        return self._noise(self.ref0, self.seed + 1)

    def _make_ids0_ref(self):
        return self.ref0.generate_tokens(self.cls, noise=self.noise0)

    def _make_ids0_fast(self):
        return self.fast.generate_tokens(self.cls, noise=self.noise0)

    def _make_own_img_ref(self):
        return self.ref0.decode_tokens(self.ids0_ref)


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def fp32_tokens(inputs: Inputs) -> dict:
    ids_ref, ids_f32 = inputs.ids_ref, inputs.fast32.generate_tokens(inputs.cls, noise=inputs.noise_given)
    return {"tokens_identical": bool(torch.equal(ids_ref, ids_f32)),
            "token_agreement": float((ids_ref == ids_f32).float().mean())}


def _pixels(pipe, ids) -> torch.Tensor:
    """Unclamped pixels in float64 (the bound is about the computation, not about the clamp to [0, 1])."""
    return pipe.runtime.decode(pipe.decoder.check_tokens(ids)).double()


def fp32_images(inputs: Inputs) -> dict:
    from titok.pipeline import Pipeline

    ids = inputs.ids_ref
    img_ref, img_f32 = inputs.ref.decode_tokens(ids), inputs.fast32.decode_tokens(ids)
    n = min(len(ids), FP64_IMAGES)
    ref64 = Pipeline(inputs.decoder, None, mode="reference", dtype=torch.float64)
    pixels64 = _pixels(ref64, ids[:n])
    del ref64
    torch_err = float((_pixels(inputs.ref, ids[:n]) - pixels64).abs().max())
    fast_err = float((_pixels(inputs.fast32, ids[:n]) - pixels64).abs().max())
    # The fp32 contract on any device: the fast decoder (on CUDA a channels_last copy with the padding
    # folded into the convolution, its own kernels) stays within twice plain torch's own fp32 error
    # against a float64 decode of the same tokens, both measured here with TF32 off. No GPU has run it
    # yet: the bound is the measurement of the run itself, never a typed constant.
    bound = 2.0 * torch_err + BOUND_EPS
    return {"image_max_abs_diff_same_tokens": float((img_ref - img_f32).abs().max()),
            "fp64_images": n,
            "reference_fp32_max_abs_err_vs_fp64": torch_err,
            "fast_fp32_max_abs_err_vs_fp64": fast_err,
            "bound": bound,
            "bound_rule": "2 * reference_fp32_max_abs_err_vs_fp64 + 1e-6 (unclamped pixels)",
            "within_bound": fast_err <= bound}


def default_dtype_tokens(inputs: Inputs) -> dict:
    fast = inputs.fast
    ids0_ref, ids0_fast = inputs.ids0_ref, inputs.ids0_fast
    return {"fast_dtype": _dtype_name(fast.dtype), "fast_dtype_reason": fast.dtype_reason, "same_noise": True,
            "token_agreement": float((ids0_ref == ids0_fast).float().mean()),
            "rows_identical": float((ids0_ref == ids0_fast).all(dim=1).float().mean())}


def default_dtype_images(inputs: Inputs) -> dict:
    from titok.images import json_number, psnr

    fast, own_img_ref = inputs.fast, inputs.own_img_ref
    same_tokens_img = fast.decode_tokens(inputs.ids0_ref)
    psnr_same = psnr(same_tokens_img, own_img_ref)
    return {"fast_dtype": _dtype_name(fast.dtype),
            # None: identical images (infinite PSNR, which JSON cannot hold)
            "psnr_db_same_tokens_median": json_number(float(psnr_same.median())),
            "psnr_db_same_tokens_min": json_number(float(psnr_same.min())),
            "image_max_abs_diff_same_tokens": float((same_tokens_img - own_img_ref).abs().max()),
            "psnr_db_own_tokens_median": json_number(float(psnr(fast.decode_tokens(inputs.ids0_fast),
                                                                own_img_ref).median()))}


class Skipped(Exception):
    """A part that does not apply to this model: status "skipped", the message says why."""


def default_dtype_encode(inputs: Inputs) -> dict:
    if not hasattr(inputs.decoder, "encoder_out"):
        raise Skipped("the decoder has no encoder")
    own_img_ref = inputs.own_img_ref
    enc_ref, enc_fast = inputs.ref0.encode(own_img_ref), inputs.fast.encode(own_img_ref)
    return {"fast_dtype": _dtype_name(inputs.fast.dtype), "images": "the reference's decoded images",
            "token_agreement": float((enc_ref == enc_fast).float().mean())}


# (name, function, progress text); bench/parity.py's tests replace entries to inject failures
PARTS = [
    ("fp32_tokens", fp32_tokens, "fp32 tokens: reference vs fast, given noise"),
    ("fp32_images", fp32_images, "fp32 images: reference vs fast vs float64 reference, same tokens"),
    ("default_dtype_tokens", default_dtype_tokens, "default-dtype tokens vs reference fp32, temperature 0"),
    ("default_dtype_images", default_dtype_images, "default-dtype images vs reference fp32"),
    ("default_dtype_encode", default_dtype_encode, "default-dtype encode vs reference fp32"),
]


def run_part(fn, inputs: Inputs) -> dict:
    """One part's entry: its figures with status "ok", or status "error"/"oom"/"skipped" and the message."""
    start = time.perf_counter()
    entry = {"status": "ok", "message": None}
    tf32: dict = {}
    try:
        with tf32_off(tf32):
            entry.update(fn(inputs))
    except Skipped as exc:
        entry.update(status="skipped", message=str(exc))
    except Exception as exc:  # noqa: BLE001 - one failing part leaves the others
        text = str(exc).strip()
        entry.update(status="oom" if is_out_of_memory(exc) else "error",
                     message=f"{type(exc).__name__}: {text.splitlines()[0][:300] if text else ''}")
        if entry["status"] == "error":
            entry["traceback"] = traceback.format_exc(limit=8)
        else:
            free_device_memory(inputs.device)
    entry["tf32"] = tf32
    entry["seconds"] = time.perf_counter() - start
    return entry


def compare(decoder, generator, batch: int, seed: int = 0, say=lambda text: None, on_part=lambda parts: None,
            parts=None) -> dict:
    """Run the parts in order: {name: entry}; `on_part(parts so far)` after each (the file is rewritten there)."""
    inputs, done = Inputs(decoder, generator, batch, seed), {}
    for name, fn, text in (PARTS if parts is None else parts):
        say(text)
        done[name] = run_part(fn, inputs)
        on_part(dict(done))
    return done


def failures(parts: dict) -> list[str]:
    """What makes the exit status 1: parts that failed, and an fp32 image check that does not hold."""
    bad = [f"{name}: {e['status']}" for name, e in parts.items() if e["status"] in ("error", "oom")]
    if parts.get("fp32_images", {}).get("within_bound") is False:
        bad.append("fp32_images: the fast fp32 error is above the bound")
    return bad


def summary(parts: dict, config: dict) -> str:
    """A few lines for people: what ran, in which dtype and why, the figures, the parts that failed."""
    db = lambda v: "identical" if v is None else f"{v:.1f} dB"  # noqa: E731
    lines = [f"{config['model']}, batch {config['batch_size']}, "
             f"{'random weights' if config['random_weights'] else 'checkpoints'}, on {config['device']}, TF32 off"]
    for name, e in parts.items():
        if e["status"] != "ok":
            lines.append(f"{name}: {e['status'].upper()} - {e['message']}")
        elif name == "fp32_tokens":
            lines.append(f"fast fp32 vs reference fp32, same noise: tokens identical {e['tokens_identical']} "
                         f"({100 * e['token_agreement']:.1f}%)")
        elif name == "fp32_images":
            lines.append(f"fp32 images, same tokens: max |fast - reference| {e['image_max_abs_diff_same_tokens']:.2e}; "
                         f"vs float64 ({e['fp64_images']} images): fast {e['fast_fp32_max_abs_err_vs_fp64']:.2e}, "
                         f"reference {e['reference_fp32_max_abs_err_vs_fp64']:.2e}, bound {e['bound']:.2e}: "
                         f"{'holds' if e['within_bound'] else 'FAILS'}")
        elif name == "default_dtype_tokens":
            lines.append(f"fast {e['fast_dtype']} ({e['fast_dtype_reason']}) vs reference fp32, temperature 0, "
                         f"same noise: tokens {100 * e['token_agreement']:.1f}% identical "
                         f"({100 * e['rows_identical']:.0f}% of rows)")
        elif name == "default_dtype_images":
            lines.append(f"  decode of the same tokens: PSNR median {db(e['psnr_db_same_tokens_median'])}, min "
                         f"{db(e['psnr_db_same_tokens_min'])}; own tokens' images: median "
                         f"{db(e['psnr_db_own_tokens_median'])}")
        elif name == "default_dtype_encode":
            lines.append(f"  encode ({e['images']}): {100 * e['token_agreement']:.1f}% identical token ids")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="bench/parity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="titok-l-32", help=f"one of {', '.join(PIPELINE_MODELS)}")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on GPU, 2 on CPU")
    cli.add_device_flag(parser)
    parser.add_argument("--checkpoint-dir", help="folder with the released checkpoints (official Hugging Face "
                        "folders, or tokenizer/ and generator/); default: random weights")
    parser.add_argument("--out", default=None, help="JSON result file (.json), rewritten after every part")
    cli.add_overwrite_flag(parser)
    args = parser.parse_args(argv)
    cli.check_choice(args.model, PIPELINE_MODELS, "--model")
    device = parse_device(args.device)
    batch = args.batch_size if args.batch_size is not None else (32 if device.type == "cuda" else 2)
    if batch < 1:
        raise cli.UsageError("--batch-size must be >= 1")
    out = cli.Outputs(args.overwrite, inputs=[args.checkpoint_dir]).file(args.out, "--out")
    spec = SPECS[PIPELINE_MODELS[args.model]]
    say = _progress(1 + len(PARTS))
    say(f"building {spec.key} ({'checkpoints' if args.checkpoint_dir else 'random weights'}) on {device}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RandomWeightsWarning: the result says "random_weights" itself
        decoder, generator, *_ = spec.build(device, args.checkpoint_dir)
    env = environment(device)
    if device.type == "cpu":
        from titok_bench.official_cpu import cpu_facts

        env["cpu"] = cpu_facts()
    config = {"model": args.model, "batch_size": batch, "random_weights": not args.checkpoint_dir,
              "device": env["cpu"]["model_name"] if "cpu" in env else env.get("device_name") or str(device),
              "fp64_images": min(batch, FP64_IMAGES), "parts": [name for name, *_ in PARTS]}
    payload = {"schema": SCHEMA, "environment": env, "config": config, "finished": False, "interrupted": False,
               "parts": {}}

    def keep(parts: dict) -> None:
        payload["parts"] = parts
        if out:
            write_json(out, payload)

    try:
        with torch.no_grad():
            keep(compare(decoder, generator, batch, say=say, on_part=keep))
    except KeyboardInterrupt:
        payload["interrupted"] = True
        kept = f"{len(payload['parts'])} finished part(s) in {out}" if out else "nothing written (no --out)"
        keep(payload["parts"])
        raise cli.Interrupted(kept) from None
    payload["finished"] = True
    keep(payload["parts"])
    print(json.dumps(payload["parts"], indent=2))
    print(summary(payload["parts"], config))
    bad = failures(payload["parts"])
    if bad:
        print("FAILED: " + "; ".join(bad))
    if out:
        print(f"results -> {out}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="parity.py"))

"""How close the fast pipeline stays to the reference: token agreement and image PSNR.

    python bench/parity.py --model titok-l-32 --batch-size 32 --out parity.json

Two comparisons, same class ids:
- `fast` fp32 vs `reference` fp32 with the same given sampling noise: tokens should be
  identical (the fp32 contract) and images within 1e-4;
- `fast` in its default dtype (bf16 on CUDA and on CPUs with native bf16 matrix units, else
  fp32; `dtype_reason` says why) vs `reference` fp32, sampling at temperature 0 (no Gumbel
  noise: greedy decoding) with the same given noise: the fraction of identical tokens, and the
  PSNR of the decoded images (the same tokens decoded by both, and each pipeline's own images);
  then the encoder: both encode the reference's images, and the fraction of identical token ids.
Random weights unless --checkpoint-dir holds the checkpoints (random weights make near-ties in
the logits more frequent, so agreement is a lower bound). Progress goes to stderr, one line per
step; the result is printed as JSON, then a summary. Exit status: 0 done, 2 usage error (one
line), 130 interrupted (nothing written).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import warnings

import torch

from titok_bench.harness import cli
from titok_bench.harness.env import environment, parse_device
from titok_bench.harness.models import PIPELINE_MODELS, SPECS
from titok_bench.harness.results import write_json

SCHEMA = "titok-kernels/parity/v1"


def _progress(total: int):
    """say(text): '[i/total] text' on stderr, with the seconds since the previous step."""
    state = {"i": 0, "t": time.perf_counter()}

    def say(text: str) -> None:
        state["i"] += 1
        now = time.perf_counter()
        print(f"parity [{state['i']}/{total}] {text} (+{now - state['t']:.1f} s)", file=sys.stderr, flush=True)
        state["t"] = now
    return say


def compare(decoder, generator, batch: int, seed: int = 0, say=lambda text: None) -> dict:
    from titok.images import json_number, psnr
    from titok.pipeline import Pipeline, draw_noise

    device = next(decoder.parameters()).device
    cls = torch.arange(batch, device=device) * 37 % generator.cfg.num_classes
    ref = Pipeline(decoder, generator, mode="reference")
    fast32 = Pipeline(decoder, generator, mode="fast", dtype=torch.float32, cuda_graph=False)
    noise = draw_noise(batch, generator.cfg.image_seq_len, generator.cfg.codebook_size, len(ref.scheduler),
                       seed=seed, device=device)
    say("reference fp32, given noise")
    ids_ref = ref.generate_tokens(cls, noise=noise)
    say("fast fp32, given noise")
    ids_f32 = fast32.generate_tokens(cls, noise=noise)
    img_ref, img_f32 = ref.decode_tokens(ids_ref), fast32.decode_tokens(ids_ref)

    greedy = dataclasses.replace(ref.sampler, randomize_temperature=0.0)
    ref0 = Pipeline(decoder, generator, mode="reference", sampler=greedy)
    fast = Pipeline(decoder, generator, mode="fast", sampler=greedy, cuda_graph=False)
    noise0 = draw_noise(batch, generator.cfg.image_seq_len, generator.cfg.codebook_size, len(ref0.scheduler),
                        seed=seed + 1, device=device)
    say("reference fp32, temperature 0")
    ids0_ref = ref0.generate_tokens(cls, noise=noise0)
    fast_dtype = str(fast.dtype).replace("torch.", "")
    say(f"fast {fast_dtype} ({fast.dtype_reason}), temperature 0")
    ids0_fast = fast.generate_tokens(cls, noise=noise0)
    say("decoding and encoding")
    same_tokens_img = fast.decode_tokens(ids0_ref)
    own_img_ref, own_img_fast = ref0.decode_tokens(ids0_ref), fast.decode_tokens(ids0_fast)
    psnr_same = psnr(same_tokens_img, own_img_ref)
    encode = None
    if hasattr(decoder, "encoder_out"):
        enc_ref, enc_fast = ref0.encode(own_img_ref), fast.encode(own_img_ref)
        encode = {"images": "the reference's decoded images",
                  "token_agreement": float((enc_ref == enc_fast).float().mean())}
    return {
        "fp32_given_noise": {"tokens_identical": bool(torch.equal(ids_ref, ids_f32)),
                             "token_agreement": float((ids_ref == ids_f32).float().mean()),
                             "image_max_abs_diff_same_tokens": float((img_ref - img_f32).abs().max())},
        "fast_default_dtype_vs_reference_fp32_temperature0": {
            "fast_dtype": fast_dtype,
            "fast_dtype_reason": fast.dtype_reason,
            "same_noise": True,
            "token_agreement": float((ids0_ref == ids0_fast).float().mean()),
            "rows_identical": float((ids0_ref == ids0_fast).all(dim=1).float().mean()),
            # None: identical images (infinite PSNR, which JSON cannot hold)
            "psnr_db_same_tokens_median": json_number(float(psnr_same.median())),
            "psnr_db_same_tokens_min": json_number(float(psnr_same.min())),
            "image_max_abs_diff_same_tokens": float((same_tokens_img - own_img_ref).abs().max()),
            "psnr_db_own_tokens_median": json_number(float(psnr(own_img_fast, own_img_ref).median())),
            "encode": encode,
        },
    }


def summary(result: dict, config: dict) -> str:
    """A few lines for people: what ran, in which dtype and why, the figures."""
    f32, low = result["fp32_given_noise"], result["fast_default_dtype_vs_reference_fp32_temperature0"]
    db = lambda v: "identical" if v is None else f"{v:.1f} dB"  # noqa: E731
    lines = [f"{config['model']}, batch {config['batch_size']}, "
             f"{'random weights' if config['random_weights'] else 'checkpoints'}, on {config['device']}",
             f"fast fp32 vs reference fp32, same noise: tokens identical {f32['tokens_identical']}, "
             f"images max |diff| {f32['image_max_abs_diff_same_tokens']:.2e}",
             f"fast {low['fast_dtype']} ({low['fast_dtype_reason']}) vs reference fp32, temperature 0, same noise:",
             f"  tokens {100 * low['token_agreement']:.1f}% identical ({100 * low['rows_identical']:.0f}% of rows); "
             f"decode of the same tokens: PSNR median {db(low['psnr_db_same_tokens_median'])}, min "
             f"{db(low['psnr_db_same_tokens_min'])}; own tokens' images: median {db(low['psnr_db_own_tokens_median'])}"]
    if low["encode"]:
        lines.append(f"  encode ({low['encode']['images']}): {100 * low['encode']['token_agreement']:.1f}% identical "
                     "token ids")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="bench/parity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="titok-l-32", help=f"one of {', '.join(PIPELINE_MODELS)}")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on GPU, 2 on CPU")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--checkpoint-dir", help="folder with the released checkpoints (official Hugging Face "
                        "folders, or tokenizer/ and generator/); default: random weights")
    parser.add_argument("--out", default=None, help="JSON result file (.json)")
    cli.add_overwrite_flag(parser)
    args = parser.parse_args(argv)
    cli.check_choice(args.model, PIPELINE_MODELS, "--model")
    device = parse_device(args.device)
    batch = args.batch_size or (32 if device.type == "cuda" else 2)
    if batch < 1:
        raise cli.UsageError("--batch-size must be >= 1")
    cli.Outputs(args.overwrite, inputs=[args.checkpoint_dir]).file(args.out, "--out")
    spec = SPECS[PIPELINE_MODELS[args.model]]
    say = _progress(6)
    say(f"building {spec.key} ({'checkpoints' if args.checkpoint_dir else 'random weights'}) on {device}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RandomWeightsWarning: the result says "random_weights" itself
        decoder, generator, *_ = spec.build(device, args.checkpoint_dir)
    with torch.no_grad():
        result = compare(decoder, generator, batch, say=say)
    env = environment(device)
    if device.type == "cpu":
        from titok_bench.official_cpu import cpu_facts

        env["cpu"] = cpu_facts()
    config = {"model": args.model, "batch_size": batch, "random_weights": not args.checkpoint_dir,
              "device": env["cpu"]["model_name"] if "cpu" in env else env.get("device_name") or str(device)}
    payload = {"schema": SCHEMA, "environment": env, "config": config, **result}
    print(json.dumps(result, indent=2))
    print(summary(result, config))
    if args.out:
        write_json(args.out, payload)
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="parity.py"))

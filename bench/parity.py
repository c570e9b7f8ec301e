"""How close the fast pipeline stays to the reference: token agreement and image PSNR.

    python bench/parity.py --model titok-l-32 --batch-size 32 --out parity.json

Two comparisons, same class ids:
- `fast` fp32 vs `reference` fp32 with the same given sampling noise: tokens should be
  identical (the fp32 contract) and images within 1e-4;
- `fast` in its default dtype (bf16 on CUDA) vs `reference` fp32 at temperature 0 (no
  Gumbel noise: greedy decoding), the fraction of identical tokens, and the PSNR of
  the decoded images (the same tokens decoded by both, and each pipeline's own images).
Random weights unless --checkpoint-dir holds the checkpoints (random weights make near-ties in
the logits more frequent, so agreement is a lower bound). Progress goes to stderr, one line per
step. Exit status: 0 done, 2 usage error (one line), 130 interrupted (nothing written).
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
    say("reference fp32, temperature 0")
    ids0_ref = ref0.generate_tokens(cls, seed=seed)
    say(f"fast {str(fast.dtype).replace('torch.', '')}, temperature 0")
    ids0_fast = fast.generate_tokens(cls, seed=seed)
    say("decoding")
    same_tokens_img = fast.decode_tokens(ids0_ref)
    own_img_ref, own_img_fast = ref0.decode_tokens(ids0_ref), fast.decode_tokens(ids0_fast)
    return {
        "fp32_given_noise": {"tokens_identical": bool(torch.equal(ids_ref, ids_f32)),
                             "token_agreement": float((ids_ref == ids_f32).float().mean()),
                             "image_max_abs_diff_same_tokens": float((img_ref - img_f32).abs().max())},
        "fast_default_dtype_vs_reference_fp32_temperature0": {
            "fast_dtype": str(fast.dtype).replace("torch.", ""),
            "token_agreement": float((ids0_ref == ids0_fast).float().mean()),
            "rows_identical": float((ids0_ref == ids0_fast).all(dim=1).float().mean()),
            # None: identical images (infinite PSNR, which JSON cannot hold)
            "psnr_db_same_tokens_median": json_number(float(psnr(same_tokens_img, own_img_ref).median())),
            "psnr_db_own_tokens_median": json_number(float(psnr(own_img_fast, own_img_ref).median())),
        },
    }


def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="bench/parity.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="titok-l-32", help=f"one of {', '.join(PIPELINE_MODELS)}")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on GPU, 2 on CPU")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--checkpoint-dir", help="folder with the released checkpoints (official Hugging Face "
                        "folders, or tokenizer/ and generator/); default: random weights")
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)
    cli.check_choice(args.model, PIPELINE_MODELS, "--model")
    device = parse_device(args.device)
    batch = args.batch_size or (32 if device.type == "cuda" else 2)
    if batch < 1:
        raise cli.UsageError("--batch-size must be >= 1")
    cli.check_output_path(args.out, "--out")
    spec = SPECS[PIPELINE_MODELS[args.model]]
    say = _progress(6)
    say(f"building {spec.key} ({'checkpoints' if args.checkpoint_dir else 'random weights'}) on {device}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # RandomWeightsWarning: the result says "random_weights" itself
        decoder, generator, *_ = spec.build(device, args.checkpoint_dir)
    with torch.no_grad():
        result = compare(decoder, generator, batch, say=say)
    payload = {"schema": SCHEMA, "environment": environment(device),
               "config": {"model": args.model, "batch_size": batch, "random_weights": not args.checkpoint_dir},
               **result}
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, payload)
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_tool(main, prog="parity.py"))

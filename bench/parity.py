"""How close the fast pipeline stays to the reference: token agreement and image PSNR.

    python bench/parity.py --model titok-l-32 --batch-size 32 --out parity.json

Two comparisons, same class ids:
- `fast` fp32 vs `reference` fp32 with the same given sampling noise: tokens should be
  identical (the fp32 contract) and images within 1e-4;
- `fast` in its default dtype (bf16 on CUDA) vs `reference` fp32 at temperature 0 (no
  Gumbel noise: greedy decoding), the fraction of identical tokens, and the PSNR of
  the decoded images (the same tokens decoded by both, and each pipeline's own images).
Random weights unless --checkpoint-dir holds tokenizer/ and generator/ (random weights
make near-ties in the logits more frequent, so agreement is a lower bound).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings

if __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from titok_bench.common import environment, write_json  # noqa: E402

SCHEMA = "titok-kernels/parity/v1"


def compare(tok, gen, batch: int, seed: int = 0) -> dict:
    from titok.images import psnr
    from titok.pipeline import Pipeline, draw_noise

    device = tok.latent_tokens.device
    cls = torch.arange(batch, device=device) * 37 % gen.cfg.num_classes
    ref = Pipeline(tok, gen, mode="reference")
    fast32 = Pipeline(tok, gen, mode="fast", dtype=torch.float32, cuda_graph=False)
    noise = draw_noise(batch, gen.cfg.image_seq_len, gen.cfg.codebook_size, ref.sampler.num_steps, seed=seed,
                       device=device)
    ids_ref, ids_f32 = ref.generate_tokens(cls, noise=noise), fast32.generate_tokens(cls, noise=noise)
    img_ref, img_f32 = ref.decode_tokens(ids_ref), fast32.decode_tokens(ids_ref)

    greedy = dataclasses.replace(ref.sampler, randomize_temperature=0.0)
    ref0 = Pipeline(tok, gen, mode="reference", sampler=greedy)
    fast = Pipeline(tok, gen, mode="fast", sampler=greedy, cuda_graph=False)
    ids0_ref, ids0_fast = ref0.generate_tokens(cls, seed=seed), fast.generate_tokens(cls, seed=seed)
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
            "psnr_db_same_tokens_median": float(psnr(same_tokens_img, own_img_ref).median()),
            "psnr_db_own_tokens_median": float(psnr(own_img_fast, own_img_ref).median()),
        },
    }


def main(argv=None) -> int:
    from titok.loading import load_generator, load_tokenizer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="titok-l-32")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 32 on GPU, 2 on CPU")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--checkpoint-dir")
    parser.add_argument("--out", default=None, help="JSON result file")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    batch = args.batch_size or (32 if device.type == "cuda" else 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.checkpoint_dir:
            tok = load_tokenizer(os.path.join(args.checkpoint_dir, "tokenizer"), args.model, device=device)
            gen = load_generator(os.path.join(args.checkpoint_dir, "generator"), args.model, device=device)
        else:
            tok = load_tokenizer(None, args.model, random_weights=True, device=device)
            gen = load_generator(None, args.model, random_weights=True, device=device)
    with torch.no_grad():
        result = compare(tok, gen, batch)
    payload = {"schema": SCHEMA, "environment": environment(device),
               "config": {"model": args.model, "batch_size": batch, "random_weights": not args.checkpoint_dir},
               **result}
    import json
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, payload)
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

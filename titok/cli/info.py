"""`titok info`: the variants, their parameters, tokens, FLOPs per image and released weights."""
from __future__ import annotations

import sys

from titok.cli import options


def cmd_info(args) -> int:
    """The variants' table (at most 80 columns, whole names), then where each one's released weights are. On a
    terminal rich renders it; piped or redirected it is plain text (no box drawing, no colour)."""
    import io

    from rich.console import Console
    from rich.table import Table

    from titok.configs import VARIANTS, get_variant
    from titok.flops import encode_flops, generation_flops
    from titok.loading import build_generator_model, build_tokenizer

    names = [args.model] if args.model else list(VARIANTS)
    table = Table(title="TiTok variants (FLOPs per image: 2 per multiply-add, matmuls/convs/attention)",
                  box=None, pad_edge=False, collapse_padding=True)
    for col in ("model", "res", "tokens", "codebook", "tokenizer\nparams", "generator", "steps", "encode\nGFLOP",
                "generate\nGFLOP"):
        table.add_column(col, justify="left" if col in ("model", "generator") else "right", no_wrap=True)
    weights = []
    for name in names:
        v = get_variant(name)
        tok_params = sum(p.numel() for p in build_tokenizer(v.tokenizer, "meta").parameters())
        gen_text, steps, gen_flops = "-", "-", "-"
        if v.generator is not None:
            gen_params = sum(p.numel() for p in build_generator_model(v.generator, "meta").parameters())
            gen_text = f"{v.generator.model_type} {gen_params / 1e6:.0f}M"
            steps = str(v.sampler.num_steps)
            gen_flops = f"{generation_flops(v.tokenizer, v.generator, v.sampler)['total'] / 1e9:.1f}"
        codebook = str(v.tokenizer.codebook_size) if v.tokenizer.quantize_mode == "vq" else \
            f"VAE {v.tokenizer.token_size}ch"
        table.add_row(name, str(v.tokenizer.image_size), str(v.tokenizer.num_latent_tokens), codebook,
                      f"{tok_params / 1e6:.0f}M", gen_text, steps, f"{encode_flops(v.tokenizer) / 1e9:.1f}",
                      gen_flops)
        repos = [r for r in (v.tokenizer_repo, v.generator_repo) if r]
        weights.append((name, repos or ["architecture only (no released weights)"]))
    width = max(len(n) for n, _ in weights)
    lines = ["", "Weights (Hugging Face repo ids; `hf download REPO` puts one in the local cache):"]
    for name, repos in weights:
        lines += [f"  {name if i == 0 else '':<{width}}  {r}" for i, r in enumerate(repos)]
    if sys.stdout.isatty():
        console = options.console()
        console.print(table)
        console.print("\n".join(lines), markup=False, highlight=False)
    else:
        buffer = io.StringIO()
        Console(file=buffer, width=80, color_system=None, highlight=False).print(table)
        print("\n".join(line.rstrip() for line in buffer.getvalue().splitlines() + lines))
    return 0


def add_parser(sub, models: list) -> None:
    p = sub.add_parser("info", help="list variants: parameters, tokens, FLOPs per image",
                       description="List the model variants with parameter counts, tokens and FLOPs per image.")
    p.add_argument("--model", choices=models, metavar="MODEL", help="show one variant only")
    p.set_defaults(func=cmd_info)

"""The `titok` command: reconstruct, tokenize, generate, info.

Errors in what the user gave (a missing file, a bad class id, a checkpoint of
another model, ...) are printed as one line on stderr with exit status 2, never
as a traceback. Outputs are written under a temporary name, then renamed, so a
failed run leaves no half-written file.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from titok.errors import RandomWeightsWarning, TiTokInputError

EPILOG_IMAGES = ("Images are resized so that their shorter side equals the model's resolution (bicubic, "
                 "antialiased), then centre-cropped to a square.")


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a log file): do not squeeze tables into 80 columns.
    return Console(stderr=stderr, highlight=False, width=None if stream.isatty() else 200)


def _progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=_console(stderr=True), transient=False)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TiTokInputError("--device cuda was asked for, but no CUDA GPU is available")
    return dev


def _load_tokenizer(args):
    from titok.loading import load_tokenizer

    src = getattr(args, "checkpoint", None) or getattr(args, "tokenizer", None)
    if src is None and not args.random_weights:
        raise TiTokInputError("give a tokenizer checkpoint (--checkpoint/--tokenizer), or --random-weights "
                              "to run with random weights (meaningless outputs)")
    return load_tokenizer(src, args.model, random_weights=args.random_weights and src is None,
                          device=_device(args.device))


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def cmd_reconstruct(args) -> None:
    import torch

    from titok.images import list_images, load_image, psnr, save_json, save_png, to_uint8

    tok = _load_tokenizer(args)
    paths = list_images(args.images)
    out = Path(args.out)
    rows = []
    with _progress() as progress, torch.no_grad():
        task = progress.add_task("reconstructing", total=len(paths))
        for batch in _batches(paths, args.batch_size):
            images = torch.stack([load_image(p, tok.cfg.image_size) for p in batch]).to(_device(args.device))
            tokens = tok.encode_tokens(images)
            recon = tok.decode_tokens(tokens).clamp(0.0, 1.0)
            values = psnr(recon, images).tolist()
            for p, t, r, v in zip(batch, tokens, to_uint8(recon), values):
                save_png(out / f"{p.stem}.png", r)
                token_list = t.tolist() if tok.cfg.quantize_mode == "vq" else t.flatten().tolist()
                save_json(out / f"{p.stem}.tokens.json", {"image": str(p), "model": args.model or args.checkpoint,
                                                         "tokens": token_list, "psnr_db": v})
                rows.append((str(p), v))
            progress.advance(task, len(batch))
    from rich.table import Table

    table = Table(title=f"{args.model or args.checkpoint}: reconstruction PSNR (written to {out})")
    table.add_column("image")
    table.add_column("PSNR (dB)", justify="right")
    for name, v in rows:
        table.add_row(name, f"{v:.2f}")
    _console().print(table)


def cmd_tokenize(args) -> None:
    import numpy as np
    import torch

    from titok.images import list_images, load_image, save_json, save_npy

    tok = _load_tokenizer(args)
    paths = list_images(args.images)
    chunks = []
    with _progress() as progress, torch.no_grad():
        task = progress.add_task("tokenizing", total=len(paths))
        for batch in _batches(paths, args.batch_size):
            images = torch.stack([load_image(p, tok.cfg.image_size) for p in batch]).to(_device(args.device))
            chunks.append(tok.encode_tokens(images).cpu().numpy())
            progress.advance(task, len(batch))
    tokens = np.concatenate(chunks)
    out = Path(args.out)
    save_npy(out, tokens)
    save_json(out.with_suffix(".files.json"), {"model": args.model or args.checkpoint, "files": [str(p) for p in paths]})
    _console().print(f"{len(paths)} images -> {out} {tokens.shape} {tokens.dtype} (file order in "
                     f"{out.with_suffix('.files.json')})")


def cmd_generate(args) -> None:
    import dataclasses

    import torch

    from titok.images import image_grid, save_png, to_uint8
    from titok.loading import check_compatible, load_generator
    from titok.sampler import check_class_ids, generate

    device = _device(args.device)
    tok = _load_tokenizer(args)
    if args.generator is None and not args.random_weights:
        raise TiTokInputError("give a generator checkpoint (--generator), or --random-weights")
    gen = load_generator(args.generator, args.model, random_weights=args.random_weights and args.generator is None,
                         device=device)
    check_compatible(tok, gen)
    overrides = {k: v for k, v in (("guidance_scale", args.guidance_scale), ("randomize_temperature",
                 args.temperature), ("num_steps", args.steps)) if v is not None}
    sampler = dataclasses.replace(gen.sampler, **overrides)
    classes = torch.tensor(args.classes, dtype=torch.long)
    check_class_ids(classes, gen.cfg.num_classes)
    torch.manual_seed(args.seed)
    images = []
    with _progress() as progress, torch.no_grad():
        task = progress.add_task("generating", total=len(args.classes))
        for batch in _batches(list(range(len(args.classes))), args.batch_size):
            ids = generate(gen, classes[batch].to(device), sampler)
            images.append(tok.decode_tokens(ids).clamp(0.0, 1.0))
            progress.advance(task, len(batch))
    grid = image_grid(to_uint8(torch.cat(images)), args.columns)
    save_png(args.out, grid)
    _console().print(f"{len(args.classes)} images (classes {args.classes}, seed {args.seed}, "
                     f"{sampler.num_steps} steps, guidance {sampler.guidance_scale} {sampler.guidance_decay}, "
                     f"temperature {sampler.randomize_temperature}) -> {args.out}")


def cmd_info(args) -> None:
    from rich.table import Table

    from titok.configs import VARIANTS, get_variant
    from titok.flops import encode_flops, generation_flops
    from titok.loading import build_generator_model, build_tokenizer

    names = [args.model] if args.model else list(VARIANTS)
    table = Table(title="TiTok variants (FLOPs per image: 2 per multiply-add, matmuls/convs/attention)")
    for col in ("model", "res", "tokens", "codebook", "tokenizer params", "generator", "steps",
                "encode GFLOP", "generate GFLOP", "weights"):
        table.add_column(col, justify="left" if col in ("model", "generator", "weights") else "right")
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
                      gen_flops, "architecture only" if v.architecture_only else (v.tokenizer_repo or "-"))
    _console().print(table)


def build_parser() -> argparse.ArgumentParser:
    from titok.configs import VARIANTS

    parser = argparse.ArgumentParser(
        prog="titok", description="TiTok: 1D image tokenization (32 tokens per image) and MaskGIT generation.",
        epilog="Run `titok COMMAND --help` for each command's options.")
    sub = parser.add_subparsers(dest="command", required=True)
    models = list(VARIANTS)

    def common(p, checkpoint_flag=True):
        p.add_argument("--model", choices=models, metavar="MODEL",
                       help=f"variant name: {', '.join(models)}. Needed with --random-weights or a bare weights "
                            "file that matches no released variant; a folder's config.json names its own model")
        if checkpoint_flag:
            p.add_argument("--checkpoint", metavar="SRC",
                           help="tokenizer weights: an official HF folder (config.json + model.safetensors), a "
                                ".safetensors/.bin file, or a HF repo id in the local cache")
        p.add_argument("--random-weights", action="store_true",
                       help="build the model with random weights (for speed tests; outputs are meaningless)")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
        p.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")

    p = sub.add_parser("reconstruct", help="encode images to tokens and decode them back",
                       description="Encode each image to tokens and decode it back. Writes DIR/<name>.png and "
                                   "DIR/<name>.tokens.json, and prints the PSNR of each reconstruction.",
                       epilog=EPILOG_IMAGES)
    p.add_argument("images", nargs="+", metavar="IMG", help="image files or folders of images")
    common(p)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("tokenize", help="encode images to a .npy array of tokens",
                       description="Encode images (batched) to an (N, K) int64 array saved as .npy, with the "
                                   "file order in <out>.files.json.", epilog=EPILOG_IMAGES)
    p.add_argument("images", nargs="+", metavar="IMG_OR_DIR", help="image files or folders of images")
    common(p)
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output array")
    p.set_defaults(func=cmd_tokenize)

    p = sub.add_parser("generate", help="generate class-conditional images with the MaskGIT generator",
                       description="Sample tokens for each ImageNet class id with the reference MaskGIT sampler "
                                   "(the official algorithm and random-number order), decode them, and write one "
                                   "grid PNG.")
    common(p, checkpoint_flag=False)
    p.add_argument("--tokenizer", metavar="SRC", help="tokenizer weights (folder, file or cached repo id)")
    p.add_argument("--generator", metavar="SRC", help="generator weights (folder, file or cached repo id)")
    p.add_argument("--classes", type=int, nargs="+", required=True, metavar="ID", help="ImageNet class ids 0..999")
    p.add_argument("--seed", type=int, default=0, help="torch.manual_seed before sampling (default: 0)")
    p.add_argument("--guidance-scale", type=float, help="override the variant's guidance scale")
    p.add_argument("--temperature", type=float, help="override the randomize (Gumbel) temperature")
    p.add_argument("--steps", type=int, help="override the number of sampling steps")
    p.add_argument("--columns", type=int, help="grid columns (default: up to 8)")
    p.add_argument("--out", required=True, metavar="FILE.png", help="output grid image")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("info", help="list variants: parameters, tokens, FLOPs per image",
                       description="List the model variants with parameter counts, tokens and FLOPs per image.")
    p.add_argument("--model", choices=models, metavar="MODEL", help="show one variant only")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be >= 1")
    def show(message, category, *rest, **kw):
        if issubclass(category, RandomWeightsWarning):
            _console(stderr=True).print(f"[bold yellow]warning:[/] {message}")
        else:
            default_show(message, category, *rest, **kw)

    default_show = warnings.showwarning
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", RandomWeightsWarning)
            warnings.showwarning = show
            args.func(args)
    except TiTokInputError as exc:
        print(f"titok: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("titok: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`titok reconstruct` and `titok tokenize`: images in, reconstructions / token arrays out."""
from __future__ import annotations

import sys
from pathlib import Path

from titok.cli import options
from titok.errors import TiTokInputError


def _inputs(args):
    from titok.images import collect_images

    return collect_images(args.images, recursive=args.recursive, list_file=args.list)


def _check_inputs(items, progress) -> None:
    """Decode every input once before the model runs: a bad file stops the run before any work."""
    from titok.images import read_image

    bad = []
    task = progress.add_task("checking images", total=len(items))
    for x in items:
        try:
            read_image(x.path)
        except TiTokInputError as exc:
            bad.append(str(exc))
        progress.advance(task)
    if bad:
        raise TiTokInputError(f"{len(bad)} of {len(items)} images cannot be read (first: {bad[0]}); fix or remove "
                              "them, or pass --skip-errors to skip them")


def _load_batch(batch, size: int, skip: bool, skipped: list):
    """(inputs read, their tensors) of a batch; unreadable ones go to `skipped` when `skip`."""
    from titok.images import load_image

    kept, tensors = [], []
    for entry in batch:
        try:
            tensors.append(load_image(entry[0].path, size))
            kept.append(entry)
        except TiTokInputError as exc:
            if not skip:
                raise
            skipped.append((entry[0], str(exc)))
    return kept, tensors


def _report_skipped(skipped, total: int, where: str = "") -> int:
    if not skipped:
        return 0
    console = options.console()
    console.print(f"skipped {len(skipped)} of {total} images:")
    for x, reason in skipped:
        console.print(f"  {x.path}: {reason}", markup=False)
    print(f"titok: warning: {len(skipped)} of {total} images were skipped (listed above{where})", file=sys.stderr)
    return options.EXIT_SKIPPED


def _start_image_run(args, items, progress, device, what: str):
    """(tokenizer, pipeline, progress task) of an image command, every input checked first (unless skipping)."""
    if not args.skip_errors:
        _check_inputs(items, progress)
    tok = options.load_tokenizer(args, device)
    return tok, options.pipeline(args, tok), progress.add_task(what, total=len(items))


def cmd_reconstruct(args) -> int:
    import torch

    from titok.images import OutputFiles, json_number, output_names, psnr, to_uint8

    device = options.device(args.device)
    items = _inputs(args)
    names = output_names(items)
    outputs = OutputFiles(overwrite=args.overwrite, inputs=[x.path for x in items])
    out = outputs.check_folder(args.out)
    plan = [(x, out / f"{n}.png", out / f"{n}.tokens.json") for x, n in zip(items, names)]
    for _, png, js in plan:
        outputs.check_file(png, flag="output")
        outputs.check_file(js, flag="output")
    rows, skipped = [], []
    with outputs, options.progress() as progress, torch.no_grad():
        tok, pipe, task = _start_image_run(args, items, progress, device, "reconstructing")
        for batch in options.batches(plan, args.batch_size):
            kept, tensors = _load_batch(batch, tok.image_size, args.skip_errors, skipped)
            if kept:
                images = torch.stack(tensors).to(device)
                tokens = pipe.encode(images)
                recon = pipe.decode_tokens(tokens)
                options.check_finite(tokens, "tokens", args)
                options.check_finite(recon, "pixels", args)
                values = psnr(recon, images).tolist()
                for (x, png, js), t, r, v in zip(kept, tokens, to_uint8(recon), values):
                    outputs.stage_png(png, r)
                    token_list = t.tolist() if tok.cfg.quantize_mode == "vq" else t.flatten().tolist()
                    outputs.stage_json(js, {"image": str(x.path), "model": args.model or args.checkpoint,
                                            "tokens": token_list, "psnr_db": json_number(v)})
                    rows.append((str(x.path), f"{v:.2f}"))
            progress.advance(task, len(batch))
        if not rows:
            raise TiTokInputError(f"none of the {len(items)} images could be read (first: {skipped[0][1]})")
        outputs.commit()
    from rich.table import Table

    table = Table(title=f"{args.model or args.checkpoint}: reconstruction PSNR (written to {out})")
    table.add_column("image")
    table.add_column("PSNR (dB)", justify="right")
    for name, v in rows:
        table.add_row(name, v)
    for x, _ in skipped:
        table.add_row(str(x.path), "skipped")
    options.console().print(table)
    return _report_skipped(skipped, len(items))


def cmd_tokenize(args) -> int:
    import numpy as np
    import torch

    from titok.images import OutputFiles

    device = options.device(args.device)
    items = _inputs(args)
    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        raise TiTokInputError(f"--out {out}: tokenize writes a NumPy .npy file; give a name ending in .npy")
    files_json = out.with_suffix(".files.json")
    outputs = OutputFiles(overwrite=args.overwrite, inputs=[x.path for x in items])
    outputs.check_file(out)
    outputs.check_file(files_json, flag="output")
    chunks, done, skipped = [], [], []
    with outputs, options.progress() as progress, torch.no_grad():
        tok, pipe, task = _start_image_run(args, items, progress, device, "tokenizing")
        for batch in options.batches([(x,) for x in items], args.batch_size):
            kept, tensors = _load_batch(batch, tok.image_size, args.skip_errors, skipped)
            if kept:
                tokens = pipe.encode(torch.stack(tensors).to(device))
                options.check_finite(tokens, "tokens", args)
                chunks.append((tokens.float() if tokens.dtype.is_floating_point else tokens).cpu().numpy())
                done += [x for (x,) in kept]
            progress.advance(task, len(batch))
        if not done:
            raise TiTokInputError(f"none of the {len(items)} images could be read (first: {skipped[0][1]})")
        tokens = np.concatenate(chunks)
        listing = {"model": args.model or args.checkpoint, "files": [str(x.path) for x in done]}
        if args.skip_errors:
            listing["skipped"] = [{"file": str(x.path), "error": reason} for x, reason in skipped]
        outputs.stage_npy(out, tokens)
        outputs.stage_json(files_json, listing)
        outputs.commit()
    options.console().print(f"{len(done)} images -> {out} {tokens.shape} {tokens.dtype} (file order in {files_json})",
                     markup=False)
    return _report_skipped(skipped, len(items), f" and in {files_json}")


def _add_input_options(p) -> None:
    """Where the images come from: files, folders (recursive), lists; what to do with unreadable ones."""
    p.add_argument("images", nargs="*", metavar="IMG_OR_DIR", help="image files or folders of images")
    p.add_argument("--list", metavar="FILE",
                   help="also read image paths from FILE, one a line (relative to the current folder; blank "
                        "lines and lines starting with # skipped; - reads standard input)")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="read folders with their subfolders (e.g. ImageNet's one folder per class)")
    p.add_argument("--skip-errors", action="store_true",
                   help="skip images that cannot be read, list them, and exit with status 3; without it a "
                        "bad image stops the run before the model runs")


def add_parser(sub, models: list) -> None:
    """`reconstruct` and `tokenize`."""
    p = sub.add_parser("reconstruct", help="encode images to tokens and decode them back",
                       description="Encode each image to tokens and decode it back. Writes DIR/<name>.png and "
                                   "DIR/<name>.tokens.json (\"psnr_db\" is null when the reconstruction is "
                                   "identical), and prints the PSNR of each reconstruction. <name> is the file "
                                   "name without its extension (with it, as in x.bmp.png, where two inputs "
                                   "share a name), under its subfolder for files found with --recursive.",
                       epilog=f"{options.EPILOG_IMAGES} {options.EPILOG_OUTPUTS} {options.EXIT_STATUSES_SKIPPING}")
    _add_input_options(p)
    options.add_common_options(p, models)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("tokenize", help="encode images to a .npy array of tokens",
                       description="Encode images (batched) to tokens saved as one .npy array: (N, K) int64 token "
                                   "ids, or (N, C, 1, K) float32 mean tokens for the continuous-token (VAE) "
                                   "models, with the file order (and any skipped files) in NAME.files.json beside "
                                   "NAME.npy (--out tokens.npy: tokens.files.json).",
                       epilog=f"{options.EPILOG_IMAGES} {options.EPILOG_OUTPUTS} {options.EXIT_STATUSES_SKIPPING}")
    _add_input_options(p)
    options.add_common_options(p, models)
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output array")
    p.set_defaults(func=cmd_tokenize)

"""The `titok` command: reconstruct, tokenize, generate, info.

Every command runs through `titok.pipeline.Pipeline` (`--mode reference|compile|fast`,
`--dtype`); the defaults (reference, float32) give the official computation.

Exit status: 0 done; 2 an error in what was given (a missing or unreadable file, a bad
option value, a checkpoint of another model, an output that would replace a file, ...):
one line on stderr, nothing written; 3 done, but some inputs were skipped (`--skip-errors`;
they are listed); 130 interrupted (nothing written); 1 an unexpected failure (a bug: one
line on stderr; TITOK_TRACEBACK=1 shows the traceback).

Outputs (see `titok.images.OutputFiles`): every output location is checked before any work
starts; an output never replaces an input, two inputs never share an output, an existing
file is replaced only with `--overwrite`; all outputs are written under temporary names and
renamed when the whole run has succeeded, with the permissions the umask gives a new file.

Importing this module imports neither torch nor Triton: `titok --help` stays fast; the
commands import what they need.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from titok.errors import RandomWeightsWarning, TiTokInputError
from titok.noise import MAX_STEPS  # the noise counter's step field: the one --steps limit

MODES = ("reference", "compile", "fast")      # titok.pipeline.MODES (importing it would import torch)
DTYPES = ("float32", "bfloat16", "float16")
EXIT_ERROR, EXIT_SKIPPED, EXIT_BUG, EXIT_INTERRUPTED = 2, 3, 1, 130

EPILOG_IMAGES = ("Images: the first frame, turned upright by its EXIF orientation, converted to 8-bit RGB by its "
                 "real range (16-bit scaled; float images in [0, 1] or [0, 255]; other ranges refused; alpha "
                 "dropped), resized so that the shorter side equals the model's resolution (bicubic, "
                 "antialiased), then centre-cropped to a square. Folders: the image files in them (sorted, hidden "
                 "files skipped); with --recursive, in their subfolders too. Without --skip-errors every image is "
                 "decoded once before the model runs, so that a bad file stops the run before any work.")
EPILOG_OUTPUTS = ("Outputs: checked before any work; never written over an input; an existing file is replaced "
                  "only with --overwrite; written when the whole run succeeded (nothing on failure).")
EXIT_STATUSES = "Exit status: 0 done, 2 error (one line on stderr), 130 interrupted."
EXIT_STATUSES_SKIPPING = ("Exit status: 0 done, 2 error (one line on stderr), 3 done with skipped inputs "
                          "(--skip-errors), 130 interrupted.")


class _UsageError(Exception):
    """A command line argparse refuses (printed as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not argparse's usage block
        raise _UsageError(f"{self.prog}: error: {message} (see `{self.prog} --help`)")


# ---- option values -----------------------------------------------------------------------------------

def _int_in(lo: int, hi: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            shown = text.strip() if len(text.strip()) <= 40 else text.strip()[:40] + "..."
            bounds = f"is outside {lo}..{hi}" if hi is not None else f"is not >= {lo}"
            raise argparse.ArgumentTypeError(f"{shown} {bounds}")
        return value
    parse.__name__ = "integer"
    return parse


def _finite_float(lo: float = 0.0):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number") from None
        if not math.isfinite(value) or value < lo:
            raise argparse.ArgumentTypeError(f"{text[:40]} is not a finite number >= {lo:g}")
        return value
    parse.__name__ = "number"
    return parse


# ---- shared pieces -------------------------------------------------------------------------------------

def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a log file): do not squeeze tables into 80 columns.
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 200)


PROGRESS_INTERVAL_S = 10.0   # a plain progress line this often when stderr is not a terminal


def _progress():
    """Progress on stderr: bars with the time left on a terminal; otherwise (a log, a pipe) `LineProgress`."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = _console(stderr=True)
    if not console.is_terminal:
        return LineProgress(sys.stderr)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False)


class LineProgress:
    """The progress of a run whose stderr is not a terminal: one plain line every `interval` seconds while it
    runs (`titok: generating 8/64 (12%), 30 s elapsed`: the latest task), from a timer thread, so that a long
    batch or a model load does not leave a log silent; a run shorter than `interval` prints nothing. The
    `add_task` / `advance` subset of `rich.progress.Progress`, as a context manager."""

    def __init__(self, stream, interval: float = PROGRESS_INTERVAL_S):
        self.stream, self.interval = stream, interval
        self.tasks: list[list] = []      # [description, completed, total]
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._tick, name="titok-progress", daemon=True)
        self._t0 = 0.0

    def __enter__(self):
        self._t0 = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def add_task(self, description: str, total: int) -> int:
        with self._lock:
            self.tasks.append([description, 0, total])
            return len(self.tasks) - 1

    def advance(self, task: int, advance: int = 1) -> None:
        with self._lock:
            self.tasks[task][1] += advance

    def line(self) -> str:
        elapsed = f"{time.monotonic() - self._t0:.0f} s elapsed"
        with self._lock:
            if not self.tasks:
                return f"titok: starting, {elapsed}"
            what, done, total = self.tasks[-1]
        return f"titok: {what} {done}/{total} ({100 * done // max(total, 1)}%), {elapsed}"

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            print(self.line(), file=self.stream, flush=True)


def _device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise TiTokInputError(f"--device {name[:40]!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise TiTokInputError(f"--device {name[:40]!r}: only cpu, cuda, cuda:N and auto are supported")
    if not torch.cuda.is_available():
        raise TiTokInputError(f"--device {name} was asked for, but no CUDA GPU is available")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise TiTokInputError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return dev


def _load_tokenizer(args, device):
    from titok.loading import load_tokenizer

    src = getattr(args, "checkpoint", None) or getattr(args, "tokenizer", None)
    if src is None and not args.random_weights:
        raise TiTokInputError("give a tokenizer checkpoint (--checkpoint/--tokenizer), or --random-weights "
                              f"to run with random weights (meaningless outputs){_released(args, 'tokenizer')}")
    return load_tokenizer(src, args.model, random_weights=args.random_weights and src is None, device=device)


def _released(args, part: str) -> str:
    """'; <variant>'s released <part>: <repo> (<how to download it>)' when --model names a variant with one."""
    from titok.configs import VARIANTS
    from titok.loading import download_hint

    variant = VARIANTS.get(getattr(args, "model", None) or "")
    repo = getattr(variant, f"{part}_repo", None)
    return f"; {variant.name}'s released {part} is {repo}: {download_hint(repo)}" if repo else ""


def _pipeline(args, tokenizer, generator=None, sampler=None):
    import torch

    from titok.pipeline import Pipeline

    dtype = getattr(torch, args.dtype) if args.dtype else None
    return Pipeline(tokenizer, generator, mode=args.mode, sampler=sampler, dtype=dtype)


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


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


def _check_finite(values, what: str, args) -> None:
    import torch

    if values.dtype.is_floating_point and not bool(torch.isfinite(values).all()):
        hint = f" in {args.dtype}: try --dtype float32" if args.dtype and args.dtype != "float32" else ""
        raise TiTokInputError(f"the model produced NaN or infinite {what}{hint}")


def _report_skipped(skipped, total: int, where: str = "") -> int:
    if not skipped:
        return 0
    console = _console()
    console.print(f"skipped {len(skipped)} of {total} images:")
    for x, reason in skipped:
        console.print(f"  {x.path}: {reason}", markup=False)
    print(f"titok: warning: {len(skipped)} of {total} images were skipped (listed above{where})", file=sys.stderr)
    return EXIT_SKIPPED


# ---- commands --------------------------------------------------------------------------------------------

def _start_image_run(args, items, progress, device, what: str):
    """(tokenizer, pipeline, progress task) of an image command, every input checked first (unless skipping)."""
    if not args.skip_errors:
        _check_inputs(items, progress)
    tok = _load_tokenizer(args, device)
    return tok, _pipeline(args, tok), progress.add_task(what, total=len(items))


def cmd_reconstruct(args) -> int:
    import torch

    from titok.images import OutputFiles, json_number, output_names, psnr, to_uint8

    device = _device(args.device)
    items = _inputs(args)
    names = output_names(items)
    outputs = OutputFiles(overwrite=args.overwrite, inputs=[x.path for x in items])
    out = outputs.check_folder(args.out)
    plan = [(x, out / f"{n}.png", out / f"{n}.tokens.json") for x, n in zip(items, names)]
    for _, png, js in plan:
        outputs.check_file(png, flag="output")
        outputs.check_file(js, flag="output")
    rows, skipped = [], []
    with outputs, _progress() as progress, torch.no_grad():
        tok, pipe, task = _start_image_run(args, items, progress, device, "reconstructing")
        for batch in _batches(plan, args.batch_size):
            kept, tensors = _load_batch(batch, tok.image_size, args.skip_errors, skipped)
            if kept:
                images = torch.stack(tensors).to(device)
                tokens = pipe.encode(images)
                recon = pipe.decode_tokens(tokens)
                _check_finite(tokens, "tokens", args)
                _check_finite(recon, "pixels", args)
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
    _console().print(table)
    return _report_skipped(skipped, len(items))


def cmd_tokenize(args) -> int:
    import numpy as np
    import torch

    from titok.images import OutputFiles

    device = _device(args.device)
    items = _inputs(args)
    out = Path(args.out)
    if out.suffix.lower() != ".npy":
        raise TiTokInputError(f"--out {out}: tokenize writes a NumPy .npy file; give a name ending in .npy")
    files_json = out.with_suffix(".files.json")
    outputs = OutputFiles(overwrite=args.overwrite, inputs=[x.path for x in items])
    outputs.check_file(out)
    outputs.check_file(files_json, flag="output")
    chunks, done, skipped = [], [], []
    with outputs, _progress() as progress, torch.no_grad():
        tok, pipe, task = _start_image_run(args, items, progress, device, "tokenizing")
        for batch in _batches([(x,) for x in items], args.batch_size):
            kept, tensors = _load_batch(batch, tok.image_size, args.skip_errors, skipped)
            if kept:
                tokens = pipe.encode(torch.stack(tensors).to(device))
                _check_finite(tokens, "tokens", args)
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
    _console().print(f"{len(done)} images -> {out} {tokens.shape} {tokens.dtype} (file order in {files_json})",
                     markup=False)
    return _report_skipped(skipped, len(items), f" and in {files_json}")


def _load_generation(args, device):
    """(tokenizer, generator, pipeline) of a generating command, with its sampler overrides applied."""
    import dataclasses

    from titok.loading import load_generator

    if args.generator is None and not args.random_weights:
        raise TiTokInputError(f"give a generator checkpoint (--generator), or --random-weights"
                              f"{_released(args, 'generator')}")
    tok = _load_tokenizer(args, device)
    gen = load_generator(args.generator, args.model, random_weights=args.random_weights and args.generator is None,
                         device=device)
    overrides = {k: v for k, v in (("guidance_scale", args.guidance_scale), ("randomize_temperature",
                 args.temperature), ("num_steps", args.steps)) if v is not None}
    return tok, gen, _pipeline(args, tok, gen, dataclasses.replace(gen.cfg.sampler, **overrides))


def cmd_generate(args) -> int:
    import numpy as np
    import torch

    from titok.images import MAX_IMAGE_PIXELS, OutputFiles, grid_layout, image_format, place_in_grid, to_uint8
    from titok.sampler import check_class_ids

    device = _device(args.device)
    outputs = OutputFiles(overwrite=args.overwrite)
    out = outputs.check_file(args.out)
    fmt, _, max_side = image_format(out)
    tok, gen, pipe = _load_generation(args, device)
    sampler = pipe.sampler
    classes = torch.tensor(args.classes, dtype=torch.long)
    check_class_ids(classes, gen.cfg.num_classes)
    n, size = len(args.classes), tok.image_size
    rows, cols = grid_layout(n, args.columns)
    height, width = rows * size, cols * size
    if height * width > MAX_IMAGE_PIXELS:
        raise TiTokInputError(f"a grid of {n} images of {size}x{size} would be {width}x{height} pixels, more than "
                              f"image readers open ({MAX_IMAGE_PIXELS:,}); generate at most "
                              f"{MAX_IMAGE_PIXELS // (size * size)} images per run")
    if max(height, width) > max_side:
        raise TiTokInputError(f"a {width}x{height} grid is larger than {fmt} allows ({max_side} pixels a side); "
                              "use .png, or change --columns")
    grid = np.zeros((height, width, 3), dtype=np.uint8)
    torch.manual_seed(args.seed)  # then every batch draws on, as the official sampler in one process
    with outputs, _progress() as progress, torch.no_grad():
        task = progress.add_task("generating", total=n)
        for batch in _batches(list(range(n)), args.batch_size):
            images = pipe.generate(classes[batch])
            _check_finite(images, "pixels", args)
            for i, image in zip(batch, to_uint8(images)):
                place_in_grid(grid, i, image, cols)
            progress.advance(task, len(batch))
        outputs.stage_image(out, grid)
        outputs.commit()
    _console().print(f"{n} images (classes {args.classes}, seed {args.seed}, "
                     f"{sampler.num_steps} steps, guidance {sampler.guidance_scale} {sampler.guidance_decay}, "
                     f"temperature {sampler.randomize_temperature}) -> {args.out}", markup=False)
    return 0


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
        console = _console()
        console.print(table)
        console.print("\n".join(lines), markup=False, highlight=False)
    else:
        buffer = io.StringIO()
        Console(file=buffer, width=80, color_system=None, highlight=False).print(table)
        print("\n".join(line.rstrip() for line in buffer.getvalue().splitlines() + lines))
    return 0


# ---- the parser ------------------------------------------------------------------------------------------

def _add_common_options(p, models: list, checkpoint_flag: bool = True) -> None:
    """Options every model command takes: model source, device, runtime, precision, batch, overwrite."""
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
    p.add_argument("--mode", choices=MODES, default="reference",
                   help="runtime: reference (the official computation, eager; default), compile "
                        "(torch.compile of it) or fast (fused kernels, batched guidance, CUDA graphs)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="model precision (default: bfloat16 for --mode fast on CUDA, float32 otherwise; the "
                        "quantizer and the sampling math stay float32)")
    p.add_argument("--batch-size", type=_int_in(1), default=8, metavar="N",
                   help="images per forward pass: bounds the memory a run needs (default: 8)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist (never an input file)")


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


def _add_image_commands(sub, models: list) -> None:
    """`reconstruct` and `tokenize`."""
    p = sub.add_parser("reconstruct", help="encode images to tokens and decode them back",
                       description="Encode each image to tokens and decode it back. Writes DIR/<name>.png and "
                                   "DIR/<name>.tokens.json (\"psnr_db\" is null when the reconstruction is "
                                   "identical), and prints the PSNR of each reconstruction. <name> is the file "
                                   "name without its extension (with it, as in x.bmp.png, where two inputs "
                                   "share a name), under its subfolder for files found with --recursive.",
                       epilog=f"{EPILOG_IMAGES} {EPILOG_OUTPUTS} {EXIT_STATUSES_SKIPPING}")
    _add_input_options(p)
    _add_common_options(p, models)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("tokenize", help="encode images to a .npy array of tokens",
                       description="Encode images (batched) to tokens saved as one .npy array: (N, K) int64 token "
                                   "ids, or (N, C, 1, K) float32 mean tokens for the continuous-token (VAE) "
                                   "models, with the file order (and any skipped files) in NAME.files.json beside "
                                   "NAME.npy (--out tokens.npy: tokens.files.json).",
                       epilog=f"{EPILOG_IMAGES} {EPILOG_OUTPUTS} {EXIT_STATUSES_SKIPPING}")
    _add_input_options(p)
    _add_common_options(p, models)
    p.add_argument("--out", required=True, metavar="FILE.npy", help="output array")
    p.set_defaults(func=cmd_tokenize)


def add_sampler_overrides(p) -> None:
    """--guidance-scale, --temperature, --steps (of `generate` and `sample`): what `_load_generation` changes in
    the generator's sampler. --steps goes up to MAX_STEPS, the step values `titok.noise`'s counter has."""
    p.add_argument("--guidance-scale", type=_finite_float(), metavar="X", help="override the guidance scale (>= 0)")
    p.add_argument("--temperature", type=_finite_float(), metavar="X",
                   help="override the randomize (Gumbel) temperature (>= 0)")
    p.add_argument("--steps", type=_int_in(1, MAX_STEPS), metavar="N",
                   help=f"override the number of sampling steps (1..{MAX_STEPS})")


def _add_generate_command(sub, models: list) -> None:
    """`generate`: one grid of class-conditional samples."""
    p = sub.add_parser("generate", help="generate class-conditional images with the MaskGIT generator",
                       description="Sample tokens for each ImageNet class id with the MaskGIT sampler (with "
                                   "--mode reference: the official algorithm and random-number order), decode "
                                   "them, and write one grid image.", epilog=f"{EPILOG_OUTPUTS} {EXIT_STATUSES}")
    _add_common_options(p, models, checkpoint_flag=False)
    p.add_argument("--tokenizer", metavar="SRC", help="tokenizer weights (folder, file or cached repo id)")
    p.add_argument("--generator", metavar="SRC", help="generator weights (folder, file or cached repo id)")
    p.add_argument("--classes", type=_int_in(0, 2**63 - 1), nargs="+", required=True, metavar="ID",
                   help="ImageNet class ids 0..999")
    p.add_argument("--seed", type=_int_in(0, 2**64 - 1), default=0,
                   help="torch.manual_seed before sampling, 0..2^64-1 (default: 0); batches draw on from it. "
                        "The fast mode is reproducible too, but draws differently")
    add_sampler_overrides(p)
    p.add_argument("--columns", type=_int_in(1), metavar="N",
                   help="grid columns (default: up to 8; never more than the number of images)")
    p.add_argument("--out", required=True, metavar="FILE.png",
                   help="output grid image; its extension names the format: .png, .jpg/.jpeg (quality 95), "
                        ".webp (lossless), .bmp, .tif/.tiff")
    p.set_defaults(func=cmd_generate)


def build_parser() -> argparse.ArgumentParser:
    from titok import __version__
    from titok.configs import VARIANTS

    parser = _Parser(
        prog="titok", description="TiTok: 1D image tokenization (32 tokens per image) and MaskGIT generation.",
        epilog="Run `titok COMMAND --help` for each command's options.")
    parser.add_argument("--version", action="version", version=f"titok {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    models = list(VARIANTS)

    _add_image_commands(sub, models)
    _add_generate_command(sub, models)

    from titok.evalset import add_decode_parser, add_sample_parser  # `sample`, `decode`: titok/evalset.py
    add_sample_parser(sub, models)
    add_decode_parser(sub, models)

    p = sub.add_parser("info", help="list variants: parameters, tokens, FLOPs per image",
                       description="List the model variants with parameter counts, tokens and FLOPs per image.")
    p.add_argument("--model", choices=models, metavar="MODEL", help="show one variant only")
    p.set_defaults(func=cmd_info)
    return parser


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, MemoryError) or any(c.__name__ == "OutOfMemoryError" for c in type(exc).__mro__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_ERROR
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else 0

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
            return args.func(args) or 0
    except TiTokInputError as exc:
        print(f"titok: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("titok: interrupted (nothing written)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if os.environ.get("TITOK_TRACEBACK"):
            raise
        if _is_out_of_memory(exc):
            print(f"titok: error: out of memory (batch size {getattr(args, 'batch_size', '?')}); lower "
                  "--batch-size (nothing written)", file=sys.stderr)
            return EXIT_ERROR
        print(f"titok: error: unexpected {type(exc).__name__}: {_one_line(exc)} (nothing written; this is a bug: "
              "run with TITOK_TRACEBACK=1 to see where)", file=sys.stderr)
        return EXIT_BUG


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 1000 else text[:1000] + "..."


if __name__ == "__main__":
    sys.exit(main())

"""The command line's shared layer: option parsing, the shared flags, devices, model loading, console and progress.

One declaration of each flag the commands share (`add_common_options`, `add_set_model_options`,
`add_sampler_overrides`), one device parser (`device`), one out-of-memory rule (`is_out_of_memory`), one
error-to-exit layer for the `titok` command and the bench tools alike (`run_command`: `UsageError` and
`Interrupted` raised anywhere, `Parser` for argparse, `one_line` for messages), the console and the progress
display (bars on a terminal, a plain line every `PROGRESS_INTERVAL_S` seconds otherwise). The exit statuses
are `EXIT_*`. Importing this module imports neither torch nor Triton.
"""
from __future__ import annotations

import argparse
import math
import sys
import threading
import time

from titok.configs import MODES  # the one declaration of the modes (titok.configs imports no torch)
from titok.errors import TiTokInputError
from titok.noise import MAX_STEPS  # the noise counter's step field: the one --steps limit

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


class UsageError(Exception):
    """A command line (or a value in it) the user got wrong: `run_command` prints `<prog>: error: <message>` as
    one line on stderr, exit status 2. `prog`: the command that refused it, when that is not the one
    `run_command` runs (an argparse subcommand: `titok encode`); None: `run_command`'s."""

    def __init__(self, message: str, prog: str | None = None):
        super().__init__(message)
        self.prog = prog


class Interrupted(Exception):
    """Ctrl-C, after the command kept (or wrote) its partial results: `run_command` prints
    `<prog>: interrupted: <message>` (the message says what was kept), exit status 130."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are `UsageError`s: one line, not argparse's usage block. With `see_help` (the
    `titok` command) the line is this parser's own (`titok encode: error: <message> (see `titok encode
    --help`)`); without it (the bench tools) the message alone, named by `run_command`'s prog."""

    see_help = True

    def error(self, message):
        if not self.see_help:
            raise UsageError(message)
        raise UsageError(f"{message} (see `{self.prog} --help`)", prog=self.prog)


def int_in(lo: int, hi: int | None = None):
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


def finite_float(lo: float = 0.0):
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


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (a pipe, a log file): do not squeeze tables into 80 columns.
    return Console(file=stream, highlight=False, width=None if stream.isatty() else 200)


PROGRESS_INTERVAL_S = 10.0   # a plain progress line this often when stderr is not a terminal


def progress():
    """Progress on stderr: bars with the time left on a terminal; otherwise (a log, a pipe) `LineProgress`."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    err = console(stderr=True)
    if not err.is_terminal:
        return LineProgress(sys.stderr)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False)


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


def device(name: str):
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


def load_tokenizer(args, device):
    """The tokenizer of --checkpoint / --tokenizer (or random weights with --random-weights) on `device`."""
    from titok.loading import load_tokenizer as load

    src = getattr(args, "checkpoint", None) or getattr(args, "tokenizer", None)
    if src is None and not args.random_weights:
        raise TiTokInputError("give a tokenizer checkpoint (--checkpoint/--tokenizer), or --random-weights "
                              f"to run with random weights (meaningless outputs){released_hint(args, 'tokenizer')}")
    return load(src, args.model, random_weights=args.random_weights and src is None, device=device)


def released_hint(args, part: str) -> str:
    """'; <variant>'s released <part>: <repo> (<how to download it>)' when --model names a variant with one."""
    from titok.configs import VARIANTS
    from titok.loading import download_hint

    variant = VARIANTS.get(getattr(args, "model", None) or "")
    repo = getattr(variant, f"{part}_repo", None)
    return f"; {variant.name}'s released {part} is {repo}: {download_hint(repo)}" if repo else ""


def pipeline(args, tokenizer, generator=None, sampler=None):
    import torch

    from titok.pipeline import Pipeline

    dtype = getattr(torch, args.dtype) if args.dtype else None
    return Pipeline(tokenizer, generator, mode=args.mode, sampler=sampler, dtype=dtype)


def batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def check_finite(values, what: str, args) -> None:
    import torch

    if values.dtype.is_floating_point and not bool(torch.isfinite(values).all()):
        hint = f" in {args.dtype}: try --dtype float32" if args.dtype and args.dtype != "float32" else ""
        raise TiTokInputError(f"the model produced NaN or infinite {what}{hint}")


def load_generation(args, device):
    """(tokenizer, generator, pipeline) of a generating command, with its sampler overrides applied."""
    import dataclasses

    from titok.loading import load_generator

    if args.generator is None and not args.random_weights:
        raise TiTokInputError(f"give a generator checkpoint (--generator), or --random-weights"
                              f"{released_hint(args, 'generator')}")
    tok = load_tokenizer(args, device)
    gen = load_generator(args.generator, args.model, random_weights=args.random_weights and args.generator is None,
                         device=device)
    overrides = {k: v for k, v in (("guidance_scale", args.guidance_scale), ("randomize_temperature",
                 args.temperature), ("num_steps", args.steps)) if v is not None}
    return tok, gen, pipeline(args, tok, gen, dataclasses.replace(gen.cfg.sampler, **overrides))


def add_sampler_overrides(p) -> None:
    """--guidance-scale, --temperature, --steps (of `generate` and `sample`): what `load_generation` changes in
    the generator's sampler. --steps goes up to MAX_STEPS, the step values `titok.noise`'s counter has."""
    p.add_argument("--guidance-scale", type=finite_float(), metavar="X", help="override the guidance scale (>= 0)")
    p.add_argument("--temperature", type=finite_float(), metavar="X",
                   help="override the randomize (Gumbel) temperature (>= 0)")
    p.add_argument("--steps", type=int_in(1, MAX_STEPS), metavar="N",
                   help=f"override the number of sampling steps (1..{MAX_STEPS})")


DEVICE_HELP = "auto (CUDA if present; the default), cpu, cuda or cuda:N"


def add_device_option(p, extra: str = "") -> None:
    """`--device` (parsed by `device`), the one declaration the titok command and the bench tools share."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP + extra)


def add_common_options(p, models: list, checkpoint_flag: bool = True) -> None:
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
    add_device_option(p)
    p.add_argument("--mode", choices=MODES, default="reference",
                   help="runtime: reference (the official computation, eager; default), compile "
                        "(torch.compile of it) or fast (fused kernels, batched guidance, CUDA graphs)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="model precision (default: bfloat16 for --mode fast on CUDA, float32 otherwise; the "
                        "quantizer and the sampling math stay float32)")
    p.add_argument("--batch-size", type=int_in(1), default=8, metavar="N",
                   help="images per forward pass: bounds the memory a run needs (default: 8)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace output files that exist (never an input file)")


def is_out_of_memory(exc: BaseException) -> bool:
    """The project's one out-of-memory rule (`titok.errors.is_out_of_memory`)."""
    from titok.errors import is_out_of_memory as rule

    return rule(exc)


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 1000 else text[:1000] + "..."


def run_command(main, argv=None, prog: str | None = None, *, flatten: bool = True, bugs: bool = True,
                batch_size=lambda: "?") -> int:
    """Run a command's `main(argv) -> status` (None: 0) and map what it raises to one line on stderr and an exit
    status; the one error-to-exit layer of the `titok` command (`titok.cli.dispatch`) and the bench tools
    (`titok_bench.harness.cli.run_tool`). `prog` names the command in each line (default: the script's name).

    - `UsageError`, `TiTokInputError`: `<prog>: error: <message>`, EXIT_ERROR (2). A UsageError's text stands as
      raised (its own `prog` first, when it has one); `flatten`: an input error's text through `one_line`.
    - `Interrupted`: `<prog>: interrupted: <what was kept>`; KeyboardInterrupt: `<prog>: interrupted (nothing
      written)`; both EXIT_INTERRUPTED (130).
    - Anything else, with `bugs` (the `titok` command): out of memory is `<prog>: error: out of memory (batch
      size <batch_size()>); lower --batch-size (nothing written)`, EXIT_ERROR; any other exception one line
      that names its type and says it is a bug, EXIT_BUG (1); TITOK_TRACEBACK=1 re-raises it instead. Without
      `bugs` (the bench tools) it propagates: Python's traceback, exit status 1.
    SystemExit (argparse's --help and --version) passes through."""
    import os

    prog = prog or os.path.basename(sys.argv[0])

    def fail(text: str, status: int) -> int:
        print(text, file=sys.stderr)
        return status

    try:
        return main(argv) or 0
    except UsageError as exc:
        return fail(f"{exc.prog or prog}: error: {exc}", EXIT_ERROR)
    except TiTokInputError as exc:
        return fail(f"{prog}: error: {one_line(exc) if flatten else exc}", EXIT_ERROR)
    except Interrupted as exc:
        return fail(f"{prog}: interrupted: {exc}", EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        return fail(f"{prog}: interrupted (nothing written)", EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, never a traceback
        if not bugs or os.environ.get("TITOK_TRACEBACK"):
            raise
        if is_out_of_memory(exc):
            return fail(f"{prog}: error: out of memory (batch size {batch_size()}); lower --batch-size (nothing "
                        "written)", EXIT_ERROR)
        return fail(f"{prog}: error: unexpected {type(exc).__name__}: {one_line(exc)} (nothing written; this is a "
                    "bug: run with TITOK_TRACEBACK=1 to see where)", EXIT_BUG)


def add_set_model_options(p, models: list[str], tokenizer_flag: str) -> None:
    """The model flags of `sample` and `decode` (their default mode is fast: a set is made for speed)."""
    p.add_argument("--model", choices=models, metavar="MODEL",
                   help=f"variant name: {', '.join(models)}. Needed with --random-weights or a bare weights file "
                        "that matches no released variant; a folder's config.json names its own model")
    if tokenizer_flag == "checkpoint":
        p.add_argument("--checkpoint", "--tokenizer", dest="checkpoint", metavar="SRC",
                       help="tokenizer weights: an official HF folder (config.json + model.safetensors), a "
                            ".safetensors/.bin file, or a HF repo id in the local cache")
    else:
        p.add_argument("--tokenizer", metavar="SRC", help="tokenizer weights (folder, file or cached repo id)")
        p.add_argument("--generator", metavar="SRC", help="generator weights (folder, file or cached repo id)")
    p.add_argument("--random-weights", action="store_true",
                   help="build the models with random weights (for speed tests; outputs are meaningless)")
    add_device_option(p, "; under torchrun each process takes cuda:LOCAL_RANK")
    p.add_argument("--mode", choices=MODES, default="fast",
                   help="runtime (default: fast): reference (the official computation, eager), compile "
                        "(torch.compile of it) or fast (fused kernels, batched guidance, prefix precompute)")
    p.add_argument("--dtype", choices=DTYPES,
                   help="model precision (default: the pipeline's: bfloat16 for fast on CUDA and on CPUs with "
                        "bf16 matrix units, float32 otherwise; the quantizer and the sampling math stay float32). "
                        "The paper's protocol is float32")

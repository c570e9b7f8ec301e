"""Sampling at scale: class-conditional evaluation sets (50,000 ImageNet samples for FID) for `titok sample`.

`titok sample` generates `len(classes) x num_per_class` samples into a folder, in shards that are
written atomically, resumable after any crash, spread over any number of processes and machines
launched by `torchrun`, and assembles at the end the `.npz` the ADM/guided-diffusion evaluation suite
reads (`arr_0`: uint8 N x H x W x 3, plus `labels`). The logic lives here; `titok/cli/sample.py`
declares the command, `titok/cli/decode.py` is `titok decode`.

Output folder (OUT):

    manifest.json       the settings of the run (model identity, sampler, classes, N, seed, mode, dtype,
                        device type, noise scheme, shard and decode sizes); a restart must match it
    samples/            one PNG per sample, named by index and class: 000123_c0123.png (--no-png: none)
    shards/             shard_00012.npz: images, labels, tokens of samples [12*S, 13*S) (the resume state;
                        removed once samples.npz is written unless --keep-shards)
    samples.npz         arr_0 uint8 (N, H, W, 3), labels int64 (N,): the evaluation suite's sample batch
    tokens.npy          (N, K) int64 token ids (`titok decode OUT/tokens.npy` turns them back into images)
    summary.json        samples, wall time, samples/s (aggregate and per device), settings, one entry per run

Sample i has class `classes[i % len(classes)]` (the official script's order: every prefix of the set
is class-balanced). Shard j holds samples [j*S, (j+1)*S) (S = --shard-size); pending shards are dealt
to the ranks round-robin; batches start at the shard's start, so a sample is computed in the same
batch shape and position whatever the number of processes and however often the run was resumed.

Randomness: sample i's uniforms depend on (seed, i) only (the counter-based scheme of `titok.noise`, passed to
`Pipeline.generate_tokens(noise=...)`), never on the batch, the rank or the run. Decoding runs in
chunks of exactly --decode-batch-size rows (the last one padded): the CPU's convolution algorithm
choice depends on the batch size (measured: up to 15/255 in bf16), a fixed chunk removes that. On a
CPU every generation batch and decode chunk runs with ONE intra-op thread, several at once
(`titok.cpu_threads.ItemRunner`): kernels that round by thread count (oneDNN on Intel/AMX) cannot
make the set depend on the thread count. docs/sampling-at-scale.md has the guarantees.

Noise: the counter-based stream of `titok.noise` (`SampleNoise`), scheme `titok.noise.NOISE_SCHEME`.

Test hook: TITOK_SAMPLE_TEST_EXIT="RANK:N" makes that rank exit (status 3, as a crash) right after
writing its N-th shard.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from titok.errors import TiTokInputError
from titok.noise import MAX_ELEMENTS, MAX_INDEX, MAX_STEPS, NOISE_SCHEME, SampleNoise

FORMAT = "titok-sample/2"   # 2: CPU work items run with one intra-op thread (titok.cpu_threads)
DEFAULT_DECODE_BATCH = 16     # >= 16 rows: PyTorch's CPU 1x1 convolutions take the same (oneDNN) path on 1 thread
DEFAULT_SHARD = 250
TEST_EXIT_ENV = "TITOK_SAMPLE_TEST_EXIT"


# ---- the plan: which sample has which class, which shard holds it -------------------------------------

def parse_classes(items: list[str], num_classes: int) -> list[int]:
    """`all`, ids and ranges (`0-99`), separated by spaces or commas -> class ids (in the order given)."""
    out: list[int] = []
    for item in items:
        for part in str(item).split(","):
            part = part.strip()
            if not part:
                continue
            if part.lower() == "all":
                out.extend(range(num_classes))
                continue
            lo, sep, hi = part.partition("-")
            try:
                a, b = (int(lo), int(hi)) if sep else (int(part), int(part))
            except ValueError:
                raise TiTokInputError(f"--classes {part[:40]!r}: give all, class ids (7) or ranges (0-99)") from None
            if a > b:
                raise TiTokInputError(f"--classes {part}: empty range")
            if a < 0 or b >= num_classes:
                raise TiTokInputError(f"--classes {part}: class id {a if a < 0 else b} is outside "
                                      f"0..{num_classes - 1}")
            out.extend(range(a, b + 1))
    if not out:
        raise TiTokInputError("--classes: no class given")
    return out


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """N = len(classes) x num_per_class samples; sample i has class classes[i % len(classes)]; shard j
    holds samples [j * shard_size, (j + 1) * shard_size)."""

    classes: tuple[int, ...]
    num_per_class: int
    shard_size: int

    @property
    def num_samples(self) -> int:
        return len(self.classes) * self.num_per_class

    @property
    def num_shards(self) -> int:
        return -(-self.num_samples // self.shard_size)

    def shard_range(self, j: int) -> tuple[int, int]:
        return j * self.shard_size, min((j + 1) * self.shard_size, self.num_samples)

    def labels(self, start: int = 0, stop: int | None = None):
        import numpy as np

        stop = self.num_samples if stop is None else stop
        return np.asarray(self.classes, dtype=np.int64)[np.arange(start, stop) % len(self.classes)]


class Layout:
    """The file names in the output folder."""

    def __init__(self, out: Path, plan: EvalPlan, num_classes: int):
        self.out, self.plan = Path(out), plan
        self.manifest, self.npz = self.out / "manifest.json", self.out / "samples.npz"
        self.tokens, self.summary = self.out / "tokens.npy", self.out / "summary.json"
        self.samples, self.shards = self.out / "samples", self.out / "shards"
        self._iw = max(6, len(str(max(plan.num_samples - 1, 0))))
        self._cw = max(4, len(str(num_classes - 1)))
        self._sw = max(5, len(str(max(plan.num_shards - 1, 0))))

    def png(self, index: int, label: int) -> Path:
        return self.samples / f"{index:0{self._iw}d}_c{label:0{self._cw}d}.png"

    def shard(self, j: int) -> Path:
        return self.shards / f"shard_{j:0{self._sw}d}.npz"

    def done_shards(self) -> set[int]:
        return {j for j in range(self.plan.num_shards) if self.shard(j).is_file()}


# ---- processes -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False
    store: object = None
    key: str = ""

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (a no-op in one process)."""
        if self.world_size == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def add_done(self, n: int) -> int | None:
        """Add n to the job's count of samples made in this run; the count (None without a store)."""
        if self.store is None:
            return None
        try:
            return int(self.store.add(self.key, int(n)))
        except Exception:  # noqa: BLE001 - progress is best effort; the shard files are the truth
            self.store = None
            return None

    def close(self) -> None:
        if self.initialized:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.initialized = False


def init_distributed(device_arg: str) -> tuple[DistContext, object]:
    """(context, device). Under torchrun (WORLD_SIZE > 1 in the environment) each process joins the job:
    NCCL for CUDA tensors and gloo for CPU ones (only small control messages cross processes: the
    images go through the shared output folder); each process takes cuda:LOCAL_RANK."""
    import torch

    from titok.cli import options

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext(), options.device(device_arg)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device_arg in ("auto", "cuda") and torch.cuda.is_available():
        if local >= torch.cuda.device_count():
            raise TiTokInputError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} CUDA "
                                  "GPU(s): start at most that many processes per node (--nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device_arg.startswith("cuda:"):
        raise TiTokInputError(f"--device {device_arg}: under torchrun each process takes cuda:LOCAL_RANK; "
                              "give --device cuda or auto")
    else:
        device = options.device(device_arg)
    import datetime

    import torch.distributed as dist

    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    ctx = DistContext(rank=rank, world_size=world, local_rank=local, initialized=True)
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        ctx.store = _get_default_store()
        ctx.key = f"titok_sample/{os.environ.get('TORCHELASTIC_RUN_ID', '')}/" \
                  f"{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/done"
    except Exception:  # noqa: BLE001 - no store: rank 0 counts shard files instead
        ctx.store = None
    return ctx, device


# ---- settings, manifest ----------------------------------------------------------------------------------

def weights_digest(*modules) -> str:
    """sha256 over the modules' state dicts (names, dtypes, shapes, bytes): the identity of the weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_differences(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<unset>") != b.get(k, "<unset>"):
            show = [json.dumps(x.get(k, "<unset>"))[:60] for x in (a, b)]
            diffs.append(f"{k} {show[0]} there, {show[1]} now")
    return diffs


def pixel_dependencies(device_type: str) -> dict:
    """What, besides the settings, the samples' bits depend on (recorded in manifest.json, not compared)."""
    import platform

    import torch

    if device_type == "cpu":
        from titok.cpu_info import cpu_label
        from titok.cpu_threads import THREADS_PER_ITEM

        return {"intra_op_threads_per_item": THREADS_PER_ITEM, "cpu": cpu_label(), "machine": platform.machine(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                "not": "the thread count, the number of processes, the batch size, resumes"}
    return {"device": device_type, "torch": torch.__version__, "batch_size": "yes: the GPU's kernels are chosen by "
            "shape (keep --batch-size to reproduce a set)", "not": "the number of processes, resumes"}


def prepare_output(layout: Layout, settings: dict, sources: dict | None = None) -> tuple[str, str]:
    """Rank 0, before any work: ("new" | "resume" | "complete" | "error", message). A new folder gets
    manifest.json: `settings` (compared on every restart: the model by its configs and weights digest)
    and `sources` (where the weights came from; recorded, not compared)."""
    from titok.images import save_json

    out = layout.out
    settings = json.loads(json.dumps(settings))  # as it reads back from the file (tuples become lists)
    if out.exists() and not out.is_dir():
        return "error", f"--out {out} is a file; give a folder (it is created if missing)"
    if layout.manifest.is_file():
        old, error = read_manifest(layout.manifest, out)
        if old is None:
            return "error", error
        diffs = settings_differences(old["settings"], settings)
        if diffs:
            return "error", _other_settings(out, diffs)
        here = json.loads(json.dumps(pixel_dependencies(settings.get("device_type", "cpu"))))
        if old.get("pixels_depend_on") != here and not layout.npz.is_file():
            print(f"titok sample: note: {out} was started with {json.dumps(old.get('pixels_depend_on'))[:200]}; "
                  f"here: {json.dumps(here)[:200]}: the shards made here may differ in the last bits of their "
                  "pixels from a run made there", file=sys.stderr)
        return ("complete" if layout.npz.is_file() else "resume"), ""
    if layout.npz.exists() or layout.shards.exists():
        return "error", f"{out} holds samples.npz or shards/ but no manifest.json: not a titok sample folder; " \
                        "give another --out"
    try:
        import torch

        save_json(layout.manifest, {"format": FORMAT, "settings": settings, "sources": sources or {},
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "environment": {"torch": torch.__version__, "python": sys.version.split()[0]},
                                    "pixels_depend_on": pixel_dependencies(settings.get("device_type", "cpu"))})
    except OSError as exc:
        return "error", f"--out {out}: cannot write there ({exc.strerror or type(exc).__name__})"
    return "new", ""


def read_manifest(manifest: Path, out: Path) -> tuple[dict | None, str]:
    """(manifest, "") of a folder that has one, or (None, why it cannot be resumed: unreadable, another format)."""
    try:
        old = json.loads(manifest.read_text())
        old["settings"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{manifest} is unreadable ({type(exc).__name__}); use another --out"
    if old.get("format") != FORMAT:
        return None, (f"{out} was made by another version of titok sample (format {old.get('format')!r}, "
                      f"this one writes {FORMAT!r}: on a CPU its pixels depended on the thread count); "
                      "give another --out")
    return old, ""


def _other_settings(out: Path, diffs: list[str]) -> str:
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return (f"{out} holds a run with other settings: {'; '.join(diffs[:3])}{more}. Run the same command to resume "
            "it, or give another --out")


def _remove_stale_temporaries(layout: Layout) -> None:
    """Temporary files a killed run left: `.NAME.XXXXXXXX.tmp` (titok.images' temporary names) in shards/ and
    samples/, and in OUT for the names this command writes there."""
    import re

    pattern = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.tmp$")
    ours = {p.name for p in (layout.manifest, layout.npz, layout.tokens, layout.summary)}
    for folder in (layout.out, layout.shards, layout.samples):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = pattern.match(p.name)
            if m and (folder != layout.out or m.group(1) in ours) and p.is_file():
                try:
                    p.unlink()
                except OSError:
                    pass


# ---- generation ---------------------------------------------------------------------------------------------

def decode_fixed(pipe, tokens, rows: int, check=None, runner=None):
    """Token ids (n, K) -> uint8 images (n, H, W, 3), decoded in chunks of exactly `rows` (the last one padded
    with copies of its last row), so that an image never depends on how many were decoded together. With a
    `titok.cpu_threads.ItemRunner` (entered), the chunks run on it: one intra-op thread each on a CPU."""
    import numpy as np
    import torch

    from titok.images import to_uint8

    def decode(c):
        chunk = tokens[c:c + rows]
        n = chunk.shape[0]
        if n < rows:
            chunk = torch.cat([chunk, chunk[-1:].expand(rows - n, *chunk.shape[1:])])
        images = pipe.decode_tokens(chunk)[:n]
        if check is not None:
            check(images)
        return to_uint8(images)

    starts = range(0, tokens.shape[0], rows)
    out = list(runner.map(decode, starts)) if runner is not None else [decode(c) for c in starts]
    return np.concatenate(out)


def generate_shard(pipe, plan: EvalPlan, seed: int, j: int, *, batch_size: int, decode_batch: int,
                   on_done=None, write_png=None, check=None, workers: int | None = None):
    """Shard j's (images uint8 (n, H, W, 3), labels (n,), tokens (n, K)). Tokens are generated in batches of
    `batch_size` from the shard's start; images are decoded in chunks of exactly `decode_batch` rows from the
    shard's start (the shard's last chunk padded). On a CPU every batch and every chunk runs with ONE intra-op
    thread, `workers` of them at once (default: the caller's thread count; `titok.cpu_threads`), so that the
    result does not depend on the thread count. `write_png(index, label, image)` is called per sample and
    `on_done(n)` after each decoded chunk, in order."""
    import numpy as np
    import torch

    from titok.cpu_threads import ItemRunner

    start, stop = plan.shard_range(j)
    n = stop - start
    labels = plan.labels(start, stop)
    cfg = pipe.generator.cfg

    def tokens_of(b):
        e = min(b + batch_size, n)
        idx = torch.arange(start + b, start + e, device=pipe.device)
        cls = torch.as_tensor(labels[b:e], device=pipe.device)
        return pipe.generate_tokens(cls, noise=SampleNoise(seed, idx, len(pipe.scheduler), cfg.image_seq_len,
                                                           cfg.codebook_size))

    def images_of(c):
        return decode_fixed(pipe, tokens[c:c + decode_batch], decode_batch, check)

    with ItemRunner(pipe.device, workers) as runner:
        tokens = torch.cat(list(runner.map(tokens_of, range(0, n, batch_size))))
        images = None
        for c, pix in zip(range(0, n, decode_batch), runner.map(images_of, range(0, n, decode_batch))):
            if images is None:
                images = np.empty((n, *pix.shape[1:]), dtype=np.uint8)
            images[c:c + len(pix)] = pix
            if write_png is not None:
                for r in range(len(pix)):
                    write_png(start + c + r, int(labels[c + r]), pix[r])
            if on_done is not None:
                on_done(len(pix))
    return images, labels, tokens.cpu().numpy()


def _save_shard(path: Path, images, labels, tokens, start: int) -> None:
    import numpy as np

    from titok.images import _atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, tokens=tokens, start=np.int64(start))
    _atomic_write(path, write)


# ---- the final archive ------------------------------------------------------------------------------------

def write_npz_streaming(path: Path, arrays: list[tuple[str, object, tuple, object]]) -> None:
    """Write an uncompressed .npz whose arrays come in pieces: [(name, dtype, shape, iterable of C-ordered
    pieces)], without holding any array whole. Entries carry a fixed timestamp, so the same arrays give
    the same bytes. np.load and the evaluation suite's streaming reader read it as any np.savez file."""
    import zipfile

    import numpy as np

    from titok.images import _atomic_write

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, dtype, shape, pieces in arrays:
                dtype = np.dtype(dtype)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                expected = int(np.prod(shape)) * dtype.itemsize
                written = 0
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array_header_1_0(
                        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                            "shape": tuple(int(s) for s in shape)})
                    for piece in pieces:
                        piece = np.ascontiguousarray(piece, dtype=dtype)
                        f.write(piece.data)
                        written += piece.nbytes
                if written != expected:
                    raise RuntimeError(f"{name}: wrote {written} bytes, expected {expected}")
    _atomic_write(Path(path), write)


def assemble(layout: Layout, *, image_shape: tuple, seq_len: int, write_png=None) -> dict:
    """Rank 0, once every shard exists: samples.npz (streamed shard by shard) and tokens.npy; PNGs missing
    from samples/ are written from the shards (`write_png`). Returns what was written."""
    import numpy as np

    from titok.images import save_npy

    plan = layout.plan
    n = plan.num_samples
    labels = plan.labels()
    tokens = np.empty((n, seq_len), dtype=np.int64)

    def pieces():
        for j in range(plan.num_shards):
            start, stop = plan.shard_range(j)
            try:
                with np.load(layout.shard(j)) as z:
                    images, lab, tok = z["images"], z["labels"], z["tokens"]
            except (OSError, ValueError, KeyError) as exc:
                raise TiTokInputError(f"{layout.shard(j)} is unreadable ({type(exc).__name__}); delete it and run "
                                      "the same command again to remake it") from None
            if images.shape != (stop - start, *image_shape) or not np.array_equal(lab, labels[start:stop]):
                raise TiTokInputError(f"{layout.shard(j)} does not hold samples {start}..{stop - 1} of this run; "
                                      "delete it and run the same command again to remake it")
            tokens[start:stop] = tok
            if write_png is not None:
                for r in range(stop - start):
                    if not layout.png(start + r, int(lab[r])).is_file():
                        write_png(start + r, int(lab[r]), images[r])
            yield images

    write_npz_streaming(layout.npz, [("arr_0", np.uint8, (n, *image_shape), pieces()),
                                     ("labels", np.int64, (n,), [labels])])
    save_npy(layout.tokens, tokens)
    return {"npz": str(layout.npz), "tokens": str(layout.tokens)}


def read_npz_header(path: Path, name: str = "arr_0") -> tuple[tuple, object]:
    """(shape, dtype) of one array of an .npz, read from its header only (as the evaluation suite does)."""
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path) as zf, zf.open(f"{name}.npy") as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
    return shape, dtype


# ---- progress ----------------------------------------------------------------------------------------------

class Reporter:
    """Rank 0's progress: a bar with the job's aggregate samples/s and ETA on a terminal, a line every 30 s
    otherwise; other ranks say nothing."""

    def __init__(self, ctx: DistContext, total: int, done_before: int, console):
        self.ctx, self.total, self.before = ctx, total, done_before
        self.own = 0                 # samples this process made
        self.job = 0                 # samples the job made in this run (the store's count, or shard files)
        self.t0 = time.perf_counter()
        self.progress = self.task = None
        self.last_line = self.t0
        self.finished = False
        self.console = console
        if ctx.rank == 0 and console is not None and console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                                     TextColumn("ETA {task.fields[eta]}"), console=console, transient=False)
            self.task = self.progress.add_task("sampling", total=total, completed=done_before, rate="", eta="-")
            self.progress.start()

    def rate(self) -> float:
        dt = time.perf_counter() - self.t0
        return self.job / dt if dt > 0 else 0.0

    def advance(self, n: int) -> None:
        self.own += n
        count = self.ctx.add_done(n)
        self.refresh(count if count is not None else None)

    def refresh(self, job_count: int | None = None, shard_count: int | None = None) -> None:
        if self.ctx.rank != 0:
            return
        if job_count is not None:
            self.job = max(self.job, job_count)
        elif shard_count is not None:
            self.job = max(self.job, shard_count, self.own)
        else:
            self.job = max(self.job, self.own)
        done, rate = self.before + self.job, self.rate()
        eta = _duration((self.total - done) / rate) if rate > 0 else "-"
        if self.progress is not None:
            self.progress.update(self.task, completed=done, rate=f"{rate:.3g} samples/s", eta=eta)
        elif time.perf_counter() - self.last_line >= 30 or (done >= self.total and not self.finished):
            self.last_line = time.perf_counter()
            self.finished = done >= self.total
            print(f"titok sample: {done}/{self.total} samples ({100 * done / max(self.total, 1):.0f}%), "
                  f"{rate:.3g} samples/s, ETA {eta}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _test_exit_after() -> tuple[int, int] | None:
    value = os.environ.get(TEST_EXIT_ENV, "")
    if not value:
        return None
    rank, _, count = value.partition(":")
    return int(rank), int(count or 1)


# ---- `titok sample` -------------------------------------------------------------------------------------------

def run_sample(args) -> int:
    """The `titok sample` command (see the module docstring)."""
    import signal

    ctx = None
    previous = None
    try:
        if _is_main_thread():
            def on_term(signum, frame):  # torchrun stops the other ranks with SIGTERM: clean up, then exit
                raise SystemExit(128 + signum)
            previous = signal.signal(signal.SIGTERM, on_term)
        ctx, device = init_distributed(args.device)
        return _sample(args, ctx, device)
    except TiTokInputError:
        if ctx is not None and ctx.rank != 0:
            raise SystemExit(2)  # rank 0 says it; the others exit quietly
        raise
    except KeyboardInterrupt:
        if ctx is not None and ctx.rank != 0:
            raise SystemExit(130)
        print("titok: interrupted; the finished shards are kept: run the same command to resume", file=sys.stderr)
        return 130
    finally:
        if ctx is not None:
            ctx.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _sample(args, ctx: DistContext, device) -> int:
    """One rank's part of `titok sample`: agree on the work left, make my shards, rank 0 assembles."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from titok.images import save_png

    t_start = time.perf_counter()
    if ctx.rank != 0:
        warnings.simplefilter("ignore")  # one voice: rank 0's
    # The output folder first: a finished run of the same command, or other settings, are answered before any
    # model loads (a model load takes tens of seconds); the full comparison follows once the models are loaded.
    verdict = ctx.broadcast(_early_verdict(args, device) if ctx.rank == 0 else None)
    if verdict is None:
        job = _build_job(args, device)
        verdict = ctx.broadcast(_verdict(job, args) if ctx.rank == 0 else None)
    status, message, pending, settings = verdict
    if status == "error":
        raise TiTokInputError(message)
    if status == "complete":
        if ctx.rank == 0:
            print(f"titok sample: {message}; nothing to do", file=sys.stderr)
        return 0
    plan, layout = job.plan, job.layout
    done_before = plan.num_samples - sum(plan.shard_range(j)[1] - plan.shard_range(j)[0] for j in pending)
    reporter = Reporter(ctx, plan.num_samples, done_before, _console_if_main(ctx))
    t_gen = time.perf_counter()
    # PNG encoding overlaps the generation; on a CPU device it competes with it for the cores: one thread.
    pool = ThreadPoolExecutor(max_workers=4 if device.type == "cuda" else 1) if not args.no_png else None
    try:
        _make_shards(job, args, ctx, pending[ctx.rank::ctx.world_size], reporter, pool)
        if ctx.rank != 0:
            return 0
        _wait_for_shards(job, ctx, pending, done_before, reporter)
        t_assemble = time.perf_counter()
        written = assemble(layout, image_shape=(job.tok.image_size, job.tok.image_size, 3),
                           seq_len=job.gen.cfg.image_seq_len,
                           write_png=(lambda i, c, im: save_png(layout.png(i, c), im)) if pool else None)
    finally:
        reporter.close()
        if pool is not None:
            pool.shutdown(wait=True)
    run = _run_record(job, ctx, device, plan.num_samples - done_before, done_before,
                      t_start, t_gen, t_assemble, time.perf_counter())
    _finish(job, args, ctx, settings, written, run)
    return 0


@dataclasses.dataclass
class _Job:
    """What one `titok sample` run works with (models, pipeline, plan, output layout)."""

    tok: object
    gen: object
    pipe: object
    plan: "EvalPlan"
    layout: "Layout"
    classes: list
    batch_size: int


def _build_job(args, device) -> _Job:
    """Load the models, build the pipeline and the plan; every input error before any work."""
    from titok.cli import options

    tok, gen, pipe = options.load_generation(args, device)
    classes = parse_classes(args.classes, gen.cfg.num_classes)
    plan = EvalPlan(tuple(classes), args.num_per_class, args.shard_size)
    if plan.num_samples >= MAX_INDEX:
        raise TiTokInputError(f"{plan.num_samples} samples: at most {MAX_INDEX - 1} per run")
    if gen.cfg.image_seq_len * gen.cfg.codebook_size >= MAX_ELEMENTS:
        raise TiTokInputError("this generator's K x V is too large for the sampling noise counters")
    if len(pipe.scheduler) > MAX_STEPS:  # steps 0..MAX_STEPS-1: the counter's step field
        raise TiTokInputError(f"{len(pipe.scheduler)} sampling steps: titok sample takes at most {MAX_STEPS} "
                              "(--steps)")
    batch_size = args.batch_size or (64 if device.type == "cuda" else 8)
    return _Job(tok, gen, pipe, plan, Layout(Path(args.out), plan, gen.cfg.num_classes), classes, batch_size)


def _verdict(job: _Job, args):
    """Rank 0: (status, message, pending shards, settings) of the output folder against these settings."""
    tok, gen, pipe, plan, layout = job.tok, job.gen, job.pipe, job.plan, job.layout
    settings = {
        "model": {"tokenizer_config": dataclasses.asdict(tok.cfg), "generator_config": dataclasses.asdict(gen.cfg),
                  "weights_sha256": weights_digest(tok, gen)},
        "sampler": dataclasses.asdict(pipe.sampler),
        "classes": _compact_ranges(job.classes), "num_per_class": plan.num_per_class,
        "num_samples": plan.num_samples, "order": "sample i has class classes[i % len(classes)]",
        "seed": args.seed, "noise": NOISE_SCHEME, "mode": pipe.mode,
        "dtype": str(pipe.dtype).replace("torch.", ""), "device_type": pipe.device.type,
        "compute": "one intra-op thread per work item" if pipe.device.type == "cpu" else "device default",
        "decode_batch_size": args.decode_batch_size, "shard_size": plan.shard_size,
        "image_size": tok.image_size, "png": not args.no_png,
    }
    status, message = prepare_output(layout, settings, _sources(args))
    pending = []
    if status in ("new", "resume"):
        _remove_stale_temporaries(layout)
        done = layout.done_shards()
        pending = [j for j in range(plan.num_shards) if j not in done]
    if status == "complete":
        message = _complete(layout, plan.num_samples)
    return status, message, pending, settings


def _complete(layout: Layout, num_samples: int) -> str:
    return f"{layout.out} is complete ({num_samples} samples in {layout.npz})"


def _sources(args) -> dict:
    """Where the weights come from (recorded in the manifest): the sources as given and, under "files", [path,
    size, mtime_ns] of each file they resolve to now (None when one cannot be resolved)."""
    from titok.loading import source_files

    files = []
    try:
        for src in (getattr(args, "tokenizer", None), args.generator):
            if src is not None:
                for path in source_files(src):
                    st = path.stat()
                    files.append([str(path), st.st_size, st.st_mtime_ns])
    except (TiTokInputError, OSError):
        files = None
    return {"tokenizer": getattr(args, "tokenizer", None), "generator": args.generator,
            "variant": args.model, "random_weights": bool(args.random_weights), "files": files}


def _early_verdict(args, device):
    """Rank 0, before any model loads: the verdict (as `_verdict`'s) when the output folder answers alone:
    ("error", ...) when a setting the command line fixes differs from the manifest's (seed, classes, sizes,
    mode, dtype, device type, sampler overrides, ...) or the manifest cannot be resumed; ("complete", ...)
    when samples.npz exists and the sources resolve to the same files, unchanged (size, mtime) as recorded.
    None otherwise (no manifest, a resume, changed files): `_verdict` decides once the models are loaded."""
    from titok.runtimes import default_dtype

    out = Path(args.out)
    manifest = out / "manifest.json"  # Layout.manifest (a Layout needs the classes, which need the manifest)
    if not manifest.is_file():
        return None
    old, error = read_manifest(manifest, out)
    if old is None:
        return "error", error, [], None
    old_settings = _flatten(old["settings"])
    try:
        num_classes = int(old_settings["model.generator_config.num_classes"])
        classes = parse_classes(args.classes, num_classes)
    except (TiTokInputError, KeyError, TypeError, ValueError):
        return None  # the full path names the error
    layout = Layout(out, EvalPlan(tuple(classes), args.num_per_class, args.shard_size), num_classes)
    dtype = args.dtype or str(default_dtype(args.mode, device)[0]).replace("torch.", "")
    here = {
        "classes": _compact_ranges(classes), "num_per_class": args.num_per_class,
        "num_samples": len(classes) * args.num_per_class, "order": "sample i has class classes[i % len(classes)]",
        "seed": args.seed, "noise": NOISE_SCHEME, "mode": args.mode, "dtype": dtype, "device_type": device.type,
        "compute": "one intra-op thread per work item" if device.type == "cpu" else "device default",
        "decode_batch_size": args.decode_batch_size, "shard_size": args.shard_size, "png": not args.no_png,
    }
    for key, value in (("guidance_scale", args.guidance_scale), ("randomize_temperature", args.temperature),
                       ("num_steps", args.steps)):
        if value is not None:
            here[f"sampler.{key}"] = value
    here = json.loads(json.dumps(here))
    diffs = settings_differences({k: old_settings.get(k, "<unset>") for k in here}, here)
    if diffs:
        return "error", _other_settings(out, diffs), [], None
    sources = json.loads(json.dumps(_sources(args)))
    if layout.npz.is_file() and sources["files"] is not None and old.get("sources") == sources:
        return "complete", _complete(layout, layout.plan.num_samples), [], old["settings"]
    return None


def _console_if_main(ctx):
    from titok.cli import options

    return options.console(stderr=True) if ctx.rank == 0 else None


def _make_shards(job: _Job, args, ctx, mine: list, reporter, pool) -> None:
    """Generate and save this rank's shards (PNGs written by the pool as they come)."""
    import torch

    from titok.cli import options
    from titok.images import save_png

    futures = []
    exit_after = _test_exit_after()

    def write_png(index, label, image):
        futures.append(pool.submit(save_png, job.layout.png(index, label), image.copy()))

    with torch.no_grad():
        for count, j in enumerate(mine, 1):
            images, labels, tokens = generate_shard(
                job.pipe, job.plan, args.seed, j, batch_size=job.batch_size, decode_batch=args.decode_batch_size,
                on_done=reporter.advance, write_png=write_png if pool else None,
                check=lambda x: options.check_finite(x, "pixels", args))
            for f in futures:
                f.result()
            futures.clear()
            _save_shard(job.layout.shard(j), images, labels, tokens, job.plan.shard_range(j)[0])
            if exit_after is not None and exit_after == (ctx.rank, count):
                os._exit(3)  # the test hook: a crash right after a shard


def _wait_for_shards(job: _Job, ctx, pending: list, done_before: int, reporter) -> None:
    """Rank 0 waits for every shard (the other ranks may still work), showing the job's progress."""
    plan, layout = job.plan, job.layout
    for poll in range(10**12):
        remaining = [j for j in pending if not layout.shard(j).is_file()]
        if not remaining:
            break
        count = ctx.add_done(0)
        reporter.refresh(count, shard_count=sum(plan.shard_range(j)[1] - plan.shard_range(j)[0]
                                                for j in pending if j not in remaining))
        time.sleep(0.02 if poll < 100 else 0.5)
    reporter.refresh(plan.num_samples - done_before)


def _run_record(job: _Job, ctx, device, made: int, done_before: int, t_start, t_gen, t_assemble, t_end) -> dict:
    import torch

    gen_time = t_assemble - t_gen
    return {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "samples_made": made, "samples_before": done_before,
        "world_size": ctx.world_size, "batch_size": job.batch_size, "threads_per_process": torch.get_num_threads(),
        "device": _device_name(device), "wall_time_s": round(t_end - t_start, 3),
        "generation_time_s": round(gen_time, 3), "assembly_time_s": round(t_end - t_assemble, 3),
        "samples_per_s": round(made / gen_time, 4) if gen_time > 0 else None,
        "samples_per_s_per_device": round(made / gen_time / ctx.world_size, 4) if gen_time > 0 else None,
    }


def _finish(job: _Job, args, ctx, settings: dict, written: dict, run: dict) -> None:
    """Rank 0: the summary beside the outputs, shards removed (unless kept), one closing line."""
    from titok.cli import options
    from titok.images import save_json

    plan, layout = job.plan, job.layout
    previous_runs = []
    if layout.summary.is_file():
        try:
            previous_runs = json.loads(layout.summary.read_text()).get("runs", [])
        except (OSError, ValueError, AttributeError):
            previous_runs = []
    save_json(layout.summary, {"samples": plan.num_samples, **written, "last_run": run,
                               "runs": previous_runs + [run], "settings": settings})
    if not args.keep_shards:
        import shutil

        shutil.rmtree(layout.shards, ignore_errors=True)
    shape, _ = read_npz_header(layout.npz)
    rate = f"{run['samples_per_s']:.3g} samples/s ({run['samples_per_s_per_device']:.3g} per device x " \
           f"{ctx.world_size})" if run["samples_per_s"] else "no new samples"
    options.console().print(f"{plan.num_samples} samples ({len(job.classes)} classes x {plan.num_per_class}, seed "
                     f"{args.seed}, {job.pipe.mode} {settings['dtype']}, {len(job.pipe.scheduler)} steps) -> "
                     f"{layout.npz} {shape} uint8\n{run['samples_made']} made in this run: {rate}; summary in "
                     f"{layout.summary}", markup=False, soft_wrap=True)


def _compact_ranges(ids: list[int]) -> list:
    """[0, 1, 2, 7] -> ["0-2", 7] (the manifest stays short for 1000 classes); order kept."""
    out, i = [], 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(f"{ids[i]}-{ids[j]}" if j > i else ids[i])
        i = j + 1
    return out


def _device_name(device) -> str:
    import torch

    from titok.cpu_info import cpu_label

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_label()})"

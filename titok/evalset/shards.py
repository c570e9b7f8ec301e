"""Generating one shard: its samples' noise, generation batches and fixed-size decode chunks."""
from __future__ import annotations

from pathlib import Path

from titok.evalset.plan import EvalPlan
from titok.noise import SampleNoise


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

    from titok.outputs import atomic_write

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, images=images, labels=labels, tokens=tokens, start=np.int64(start))
    atomic_write(path, write)

"""The plan of an evaluation set: which sample has which class, which shard holds it, the folder layout."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from titok.errors import TiTokInputError


FORMAT = "titok-sample/2"   # 2: CPU work items run with one intra-op thread (titok.cpu_threads)


DEFAULT_DECODE_BATCH = 16     # >= 16 rows: PyTorch's CPU 1x1 convolutions take the same (oneDNN) path on 1 thread


DEFAULT_SHARD = 250


TEST_EXIT_ENV = "TITOK_SAMPLE_TEST_EXIT"


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

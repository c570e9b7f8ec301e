"""The one registry of kernel micro-benchmark cases: every op's shapes, declared once.

bench/ops/<op>.py runs `cases(op, quick)`; bench/kernel_bench.py takes its op list from `OPS`;
bench/test_kernels_benchmark.py (pytest-benchmark) times each op's `headline` case (`HEADLINE`). A case has a name, the
full (GPU) shape and the quick shape (CPU smoke runs, `--quick`), or no quick shape when the case would only
repeat another one at quick size. Working sets against the L2 (H200: 60 MiB) are noted per case; the rows
record `working_set_bytes` and `fits_l2` (bench/harness/micro.py).
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    shape: dict
    quick: dict | None        # the quick shape's overrides of `shape`; None: not run at quick size

    def at(self, quick: bool) -> dict:
        return {**self.shape, **self.quick} if quick else dict(self.shape)


CASES = {
    # z + codebook + indices, fp32.
    "nearest_code": (
        # TiTok-L-32 style codebook, a batch of 1024 images: 1.9 MiB (in L2).
        Case("titok_l32_b1024", {"M": 32768, "N": 4096, "D": 12, "l2_normalize": True}, {"M": 512}),
        # VQ-8k codebook, a batch of 64 images: 2.5 MiB (in L2).
        Case("vq8k_b64", {"M": 2048, "N": 8192, "D": 64, "l2_normalize": False}, {"M": 128}),
        # Bandwidth-bound codebook read: 2^21 x 16 fp32 = 128 MiB (past L2); 32 rows (one TiTok-L-32 image)
        # give 16 FLOP per codebook byte, about the H200's fp32 CUDA-core balance (67 TFLOP/s / 4.8 TB/s).
        Case("codebook_128mib", {"M": 32, "N": 2**21, "D": 16, "l2_normalize": False}, {"N": 4096}),
    ),
    # cond + uncond fp32 logits + ids in and out (TiTok-L-32 generator: K = 32, V = 4096).
    "maskgit_step": (
        Case("b1", {"B": 1, "K": 32, "V": 4096}, None),                   # 1 MiB: launch-bound decode step
        Case("b32", {"B": 32, "K": 32, "V": 4096}, None),                 # 32 MiB (in L2)
        Case("b256", {"B": 256, "K": 32, "V": 4096}, {"B": 8}),           # 256 MiB (past L2)
    ),
    # qkv + shared rows + output, bf16 (TiTok-L-32 decoder, first layer: H = 16, d = 64, 257 shared rows).
    "concat_attention": (
        Case("b64", {"B": 64, "H": 16, "d": 64, "Ls": 257, "Lp": 32}, {"B": 2}),   # 49 MiB (in L2)
        Case("b256", {"B": 256, "H": 16, "d": 64, "Ls": 257, "Lp": 32}, None),     # 194 MiB (past L2)
    ),
    # MaskGIT-ViT head, loss + backward, bf16 (the paper's training batch: M = B*K = 16384 rows).
    "masked_lm_loss": (
        Case("b64", {"B": 64, "K": 256, "D": 768, "V": 4096}, {"B": 4}),
    ),
}
OPS = tuple(CASES)
HEADLINE = {"nearest_code": "titok_l32_b1024", "maskgit_step": "b256", "concat_attention": "b64",
            "masked_lm_loss": "b64"}
# Run by default (bench/kernel_bench.py without --ops): the inference ops; masked_lm_loss (a training step) on
# request, `--ops masked_lm_loss`.
DEFAULT_OPS = ("nearest_code", "maskgit_step", "concat_attention")


def cases(op: str, quick: bool) -> list[tuple[str, dict]]:
    """(case name, shape) of `op` at full or quick size."""
    if op not in CASES:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    return [(c.name, c.at(quick)) for c in CASES[op] if not quick or c.quick is not None]


def headline(op: str, quick: bool) -> dict:
    """The shape of the op's headline case (the one the pytest-benchmark regression tests time)."""
    return next(c for c in CASES[op] if c.name == HEADLINE[op]).at(quick)

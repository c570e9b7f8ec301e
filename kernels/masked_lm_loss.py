"""Fused final projection + weighted, label-smoothed cross-entropy (the MaskGIT MLM loss), with gradients.

Math (the official MLMLoss over `lm_head`, rows m of the flattened (B*K) positions):

    z_m = W h_m + b                                   (V logits)
    CE_m = lse(z_m) - (1 - s) z_m[t_m] - (s / V) sum_v z_m[v]
    loss = sum_m w_m CE_m / (sum_m w_m + 1e-8)
    dz_m = c_m (softmax(z_m) - (1 - s) onehot(t_m) - s / V),  c_m = w_m / (sum w + 1e-8)
    dh = dz W,  dW = dz^T h,  db = sum_m dz_m

Algorithm (both backends; the long why is in docs/kernels/masked_lm_loss.md): rows are taken in
chunks of `chunk_rows`; for each chunk the logits (chunk, V) are made by one matmul in fp32, turned
*in place* into dz by `_mlm_ce_kernel` (triton) or by torch ops (torch), then dh[chunk] = dz W and
dW += dz^T h, db += sum dz. So the whole (M, V) logits never exist: the peak extra memory is one
(chunk, V) fp32 buffer plus fp32 dW / db accumulators. The kernel is one program per row: a first
pass over BLOCK_V tiles keeps the online max / sum-exp, the target logit (compare-and-sum over the
tile: no gather, which the interpreter also lacks) and the logit sum; a second pass writes dz.
The loss, dh, dW, db are computed in the forward call (as fused linear cross-entropy kernels do);
autograd's backward scales them by the incoming gradient.

Shapes and dtypes: hidden (M, D), weight (V, D), bias (V,) of one float dtype (fp32/fp16/bf16; bf16 not
under the interpreter); targets (M,) int32/int64 in [0, V) (not checked on the device: no sync);
weights (M,) float. Outputs: loss fp32 scalar, dh in hidden's dtype, dW / db in weight's dtype.
Limits: V < 2^31; M >= 1; the row chunk's matmuls run in the input dtype with fp32 logits.
Tested hardware: CPU under TRITON_INTERPRET=1, AOT compiles for sm_90/sm_80; no GPU run yet.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .aot import CompileJob
from .backend import (INDEX_DTYPES, KernelLaunch, check_backend, check_tensor,
                      interpreter_dtype_issue, launch, resolve_backend)

OP = "masked_lm_loss"
_BLOCK_V = 1024     # logits per tile: 8 fp32 values per thread at 4 warps, no spill (AOT)
_NUM_WARPS = 4
_DEFAULT_CHUNK_BYTES = 1 << 26  # a (chunk, V) fp32 buffer of at most 64 MiB by default


@triton.jit
def _mlm_ce_kernel(z_ptr, stride_z, targets_ptr, coef_ptr, loss_ptr, V, smoothing,
                   BLOCK_V: tl.constexpr):
    """Row pid of the fp32 logits z: write coef * CE to loss[pid] and overwrite z[pid] with dz."""
    row = tl.program_id(0).to(tl.int64)
    base = z_ptr + row * stride_z
    target = tl.load(targets_ptr + row).to(tl.int32)
    coef = tl.load(coef_ptr + row)
    cols = tl.arange(0, BLOCK_V)
    run_max = tl.full((BLOCK_V,), float("-inf"), tl.float32)
    run_sum = tl.zeros((BLOCK_V,), tl.float32)
    target_sum = tl.zeros((BLOCK_V,), tl.float32)
    logit_sum = tl.zeros((BLOCK_V,), tl.float32)
    for start in range(0, V, BLOCK_V):
        idx = start + cols
        ok = idx < V
        z = tl.load(base + idx, mask=ok, other=float("-inf"))
        new_max = tl.maximum(run_max, z)
        # Lanes that have seen only -inf (masked tail) subtract 0 instead: exp(-inf - 0) = 0, no NaN.
        safe_max = tl.where(new_max > float("-inf"), new_max, 0.0)
        run_sum = run_sum * tl.exp(run_max - safe_max) + tl.exp(z - safe_max)
        run_max = new_max
        target_sum += tl.where(idx == target, z, 0.0)
        logit_sum += tl.where(ok, z, 0.0)
    row_max = tl.max(run_max, axis=0)
    total = tl.sum(run_sum * tl.exp(run_max - row_max), axis=0)  # row_max is finite for finite logits
    lse = row_max + tl.log(total)
    ce = lse - (1.0 - smoothing) * tl.sum(target_sum, axis=0) - smoothing / V * tl.sum(logit_sum, axis=0)
    tl.store(loss_ptr + row, coef * ce)
    for start in range(0, V, BLOCK_V):
        idx = start + cols
        ok = idx < V
        z = tl.load(base + idx, mask=ok, other=0.0)
        dz = tl.exp(z - lse) - tl.where(idx == target, 1.0 - smoothing, 0.0) - smoothing / V
        tl.store(base + idx, coef * dz, mask=ok)


def _chunk_dz_torch(z, targets, coef, smoothing):
    """The torch twin of `_mlm_ce_kernel` on a chunk: returns per-row coef * CE, overwrites z with dz."""
    v = z.shape[1]
    lse = torch.logsumexp(z, dim=1)
    target_logit = z.gather(1, targets[:, None].long())[:, 0]
    ce = lse - (1.0 - smoothing) * target_logit - smoothing / v * z.sum(dim=1)
    z.sub_(lse[:, None]).exp_()
    z.scatter_add_(1, targets[:, None].long(), torch.full_like(target_logit, -(1.0 - smoothing))[:, None])
    z.sub_(smoothing / v).mul_(coef[:, None])
    return coef * ce


def default_chunk_rows(m: int, v: int) -> int:
    """Rows per chunk: a (chunk, V) fp32 buffer of at most 64 MiB, at least one row."""
    return max(1, min(m, _DEFAULT_CHUNK_BYTES // (4 * v)))


def _fused(hidden, weight, bias, targets, weights, smoothing: float, chunk_rows: int, use_triton: bool):
    """(loss, dh, dW, db) by row chunks; see the module docstring."""
    m, v = hidden.shape[0], weight.shape[0]
    coef_all = weights.float() / (weights.float().sum() + 1e-8)
    grad_h = torch.empty_like(hidden)
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=hidden.device)
    grad_b = torch.zeros(v, dtype=torch.float32, device=hidden.device)
    losses = torch.empty(m, dtype=torch.float32, device=hidden.device)
    for start in range(0, m, chunk_rows):
        rows = slice(start, min(m, start + chunk_rows))
        h = hidden[rows]
        z = torch.nn.functional.linear(h, weight, bias).float()
        if use_triton:
            kernel_launch = KernelLaunch(_mlm_ce_kernel, (z.shape[0],),
                                         (z, z.stride(0), targets[rows], coef_all[rows], losses[rows], v, smoothing),
                                         dict(BLOCK_V=_BLOCK_V, num_warps=_NUM_WARPS))
            launch(OP, kernel_launch)
        else:
            losses[rows] = _chunk_dz_torch(z, targets[rows], coef_all[rows], smoothing)
        dz = z.to(hidden.dtype)
        grad_h[rows] = dz @ weight
        if hidden.dtype == torch.float32:
            grad_w.addmm_(dz.t(), h)
        else:  # the low-precision matmul accumulates in fp32 inside; the chunk sums are added in fp32
            grad_w += (dz.t() @ h).float()
        grad_b += z.sum(dim=0)
    return losses.sum(), grad_h, grad_w.to(weight.dtype), grad_b.to(weight.dtype)


def _validate(hidden, weight, bias, targets, weights, label_smoothing, chunk_rows) -> None:
    check_tensor("hidden", hidden, ndim=2, layout="(M, D)")
    check_tensor("weight", weight, ndim=2, layout="(V, D)", device=hidden.device, device_of="hidden")
    check_tensor("bias", bias, ndim=1, layout="(V,)", device=hidden.device, device_of="hidden")
    check_tensor("targets", targets, dtypes=INDEX_DTYPES, ndim=1, layout="(M,)", device=hidden.device,
                 device_of="hidden")
    check_tensor("weights", weights, ndim=1, layout="(M,)", device=hidden.device, device_of="hidden")
    if weight.dtype != hidden.dtype or bias.dtype != hidden.dtype:
        raise TypeError(f"weight and bias must have hidden's dtype {hidden.dtype}, got {weight.dtype}, {bias.dtype}")
    if weight.shape[1] != hidden.shape[1] or bias.shape[0] != weight.shape[0]:
        raise ValueError(f"weight must be (V, D) with hidden's D and bias (V,), got hidden {tuple(hidden.shape)}, "
                         f"weight {tuple(weight.shape)}, bias {tuple(bias.shape)}")
    if targets.shape[0] != hidden.shape[0] or weights.shape[0] != hidden.shape[0]:
        raise ValueError(f"targets and weights must be (M,) with hidden's M = {hidden.shape[0]}, got "
                         f"{tuple(targets.shape)} and {tuple(weights.shape)}")
    if hidden.shape[0] < 1:
        raise ValueError(f"hidden must have at least one row, got shape {tuple(hidden.shape)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    if chunk_rows is not None and (not isinstance(chunk_rows, int) or chunk_rows < 1):
        raise ValueError(f"chunk_rows must be a positive int or None, got {chunk_rows!r}")


@torch.library.custom_op("titok::masked_lm_loss", mutates_args=())
def _masked_lm_loss_op(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                       weights: torch.Tensor, label_smoothing: float, chunk_rows: int,
                       backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss fp32 scalar, d loss / d hidden, d loss / d weight, d loss / d bias)."""
    not_applicable = interpreter_dtype_issue(hidden=hidden)
    use_triton = resolve_backend(OP, backend, hidden.device, not_applicable) == "triton"
    if use_triton and hidden.device.type == "cuda":
        with torch.cuda.device(hidden.device):
            return _fused(hidden, weight, bias, targets, weights, label_smoothing, chunk_rows, True)
    return _fused(hidden, weight, bias, targets, weights, label_smoothing, chunk_rows, use_triton)


@_masked_lm_loss_op.register_fake
def _(hidden, weight, bias, targets, weights, label_smoothing, chunk_rows, backend):
    return (hidden.new_empty((), dtype=torch.float32), torch.empty_like(hidden), torch.empty_like(weight),
            torch.empty_like(bias))


class _MaskedLMLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, weights, label_smoothing, chunk_rows, backend):
        loss, grad_h, grad_w, grad_b = torch.ops.titok.masked_lm_loss(
            hidden.detach(), weight.detach(), bias.detach(), targets, weights.detach(), label_smoothing,
            chunk_rows, backend)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_h, grad_w, grad_b = ctx.saved_tensors
        return (grad_h * grad_loss.to(grad_h.dtype), grad_w * grad_loss.to(grad_w.dtype),
                grad_b * grad_loss.to(grad_b.dtype), None, None, None, None, None)


def masked_lm_loss(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                   weights: torch.Tensor, *, label_smoothing: float = 0.1, chunk_rows: int | None = None,
                   backend: str = "auto") -> torch.Tensor:
    """sum_m weights_m * CE(W hidden_m + b, targets_m) / (sum weights + 1e-8), differentiable in hidden,
    weight and bias (the gradients are computed in this call). Never materialises the (M, V) logits:
    rows are chunked (`chunk_rows`, default `default_chunk_rows`). backend: "auto", "triton" or "torch".
    Weights get no gradient."""
    _validate(hidden, weight, bias, targets, weights, label_smoothing, chunk_rows)
    check_backend(backend)
    rows = chunk_rows or default_chunk_rows(hidden.shape[0], weight.shape[0])
    return _MaskedLMLoss.apply(hidden, weight, bias, targets, weights, float(label_smoothing), rows, backend)


# ---- ahead-of-time compile jobs ------------------------------------------------------------------------

# MaskGIT-ViT's codebook sizes: 4096 (TiTok-B-64, S-128) and 8192 (VQGAN-style), B*K rows of one chunk.
_AOT_CALLS = [(2048, 4096), (1024, 8192)]


def aot_jobs() -> list[CompileJob]:
    """The CE kernel's launch for each representative (rows, V), for sm_90 and sm_80."""
    jobs = []
    for rows, v in _AOT_CALLS:
        z = torch.empty((rows, v), dtype=torch.float32, device="meta")
        targets = torch.empty(rows, dtype=torch.int64, device="meta")
        coef = torch.empty(rows, dtype=torch.float32, device="meta")
        kernel_launch = KernelLaunch(_mlm_ce_kernel, (rows,), (z, z.stride(0), targets, coef, coef, v, 0.1),
                                     dict(BLOCK_V=_BLOCK_V, num_warps=_NUM_WARPS))
        for capability in (90, 80):
            jobs.append(CompileJob(f"ce V{v} sm{capability}", capability, kernel_launch))
    return jobs

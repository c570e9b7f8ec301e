"""Triton kernels for TiTok: one module per op (kernels + a validating launcher), pure-torch references apart.

    from titok_kernels.nearest_code import nearest_code
    from titok_kernels.maskgit_step import maskgit_step
    from titok_kernels.concat_attention import concat_attention
    from titok_kernels.masked_lm_loss import masked_lm_loss
    from titok_kernels.reference import nearest_code_torch, maskgit_step_torch, concat_attention_torch,
        masked_lm_loss_torch

Each op takes backend="auto" | "triton" | "torch"; `resolve_backend` is the rule they share, and the
environment variable TITOK_KERNEL_BACKEND changes what "auto" picks (titok_kernels.backend explains
both). `launch_counts()` / `reset_launch_counts()` count the Triton kernel launches per op.
Ahead-of-time compile checks: titok_kernels.aot and each op module's `aot_jobs()`.

Only titok_kernels.backend is imported here (torch only): `import titok_kernels` never imports Triton
or queries a device, and titok_kernels.reference stays pure torch.
"""
from .backend import (BACKEND_ENV, BACKENDS, KernelFallbackWarning, launch_counts, reset_launch_counts,
                      resolve_backend)

__all__ = ["BACKEND_ENV", "BACKENDS", "KernelFallbackWarning", "launch_counts", "reset_launch_counts",
           "resolve_backend"]

"""Triton kernels for TiTok, each with a validating launcher and a pure-torch reference.

Ops are imported lazily so that `import kernels` never imports Triton or queries a device.
"""
import importlib

_OPS = {
    "nearest_code": "kernels.nearest_code",
    "maskgit_step": "kernels.maskgit_step",
    "concat_attention": "kernels.concat_attention",
}

__all__ = list(_OPS)


def __getattr__(name):
    if name in _OPS:
        return getattr(importlib.import_module(_OPS[name]), name)
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")

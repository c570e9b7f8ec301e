"""What the kernel tests share: the environment switches and the low-precision error bound.

Switches (read once, at import: conftest.py sets TRITON_INTERPRET=1 before any test module loads when
there is no GPU):
  * HAS_CUDA       a CUDA device is present (conftest.py's flag);
  * INTERPRET      Triton runs under its CPU interpreter (TRITON_INTERPRET set to anything but "" / "0");
  * TRITON_DEVICE  where a test that can run either way puts its tensors: "cuda" if present, else "cpu";
  * BACKENDS       the backends a test can run on CPU tensors: "torch", plus "triton" under the interpreter;
  * needs_triton       skip unless the Triton path can run at all (CUDA, or the interpreter);
  * needs_triton_cpu   skip unless the Triton path runs on CPU tensors (the interpreter).

The bound (docs/conventions: "at most twice plain torch's error"): a kernel in low precision may be at
most twice as far from a high-precision reference as plain torch in the same precision, plus a small
eps that each caller states and justifies:

    kernel_err <= 2 * torch_err + eps,   e.g. max|kernel - ref64| <= 2 * max|torch_lowp - ref64| + eps.
"""
import os

import pytest

from conftest import HAS_CUDA

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
TRITON_DEVICE = "cuda" if HAS_CUDA else "cpu"
BACKENDS = ["torch"] + (["triton"] if INTERPRET else [])

needs_triton = pytest.mark.skipif(not (HAS_CUDA or INTERPRET), reason="needs CUDA or TRITON_INTERPRET=1")
needs_triton_cpu = pytest.mark.skipif(not INTERPRET, reason="Triton on CPU tensors needs TRITON_INTERPRET=1")


def assert_within_twice_torch_error(kernel_err, torch_err, eps, what="kernel"):
    """Assert kernel_err <= 2 * torch_err + eps, evaluated as written on the values given (Python floats
    or 0-d tensors, whose dtype then sets the arithmetic): the one implementation of the bound."""
    assert kernel_err <= 2 * torch_err + eps, (
        f"{what} error {float(kernel_err):.3e} > 2 * torch error {float(torch_err):.3e} + eps {float(eps):.3e}")


def assert_twice_torch_max_error(out, torch_lowp, ref64, eps, what="kernel"):
    """max|out - ref64| <= 2 * max|torch_lowp - ref64| + eps, the errors taken in float64; returns
    (kernel error, torch error)."""
    err = (out.double() - ref64).abs().max().item()
    torch_err = (torch_lowp.double() - ref64).abs().max().item()
    assert_within_twice_torch_error(err, torch_err, eps, what)
    return err, torch_err


def assert_compiles_cleanly(report, name: str) -> None:
    """An ahead-of-time compile report (`titok_kernels.aot`): no spills to the stack, shared memory within the
    chip's limit, at most 255 registers a thread."""
    assert report.stack_bytes == 0, f"{name} spills: {report}"
    assert report.shared_bytes <= report.shared_limit, f"{name} shared memory: {report}"
    assert 0 < report.registers <= 255, f"{name} registers: {report}"

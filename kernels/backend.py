"""Which backend an op runs on, the input checks every launcher shares, and Triton launch counting.

Imports torch only (Triton lazily, inside functions), so importing it queries no device.

Backend contract (every op takes `backend="auto" | "triton" | "torch"`):

* `"torch"`: the pure-torch reference of the op (`titok_kernels.reference`).
* `"triton"`: the Triton kernel. An error where it cannot run: a tensor that is neither on a
  CUDA device nor on the CPU with `TRITON_INTERPRET=1` set (ValueError), or a call the kernel
  does not take (the op says why: an unsupported head dim, misaligned rows, bfloat16 under the
  interpreter, ...; the op's own ValueError / TypeError).
* `"auto"`: the kernel for CUDA tensors where it applies, the torch reference otherwise. Where
  the kernel does not apply to a CUDA call, auto runs torch and says so with a
  `KernelFallbackWarning`, once per process for each (op, reason).
* The environment variable `TITOK_KERNEL_BACKEND` (`triton`, `torch`, or unset / `auto`)
  changes what `"auto"` resolves to, and only that: `torch` makes auto always torch; `triton`
  makes auto pick the kernel for CPU tensors too (it then needs `TRITON_INTERPRET=1`, else a
  ValueError), still falling back, with the once-per-reason warning, where the kernel does not
  apply. It is read at every call, not at import.

Launch counting: every Triton kernel launch of an op goes through `launch`, which adds one to
that op's count (a dict increment). `launch_counts()` returns {op: launches so far} and
`reset_launch_counts()` clears it; e.g. a test runs a pipeline between the two and checks that
the reference pipeline launched nothing. An op that runs several kernels per call counts each
(nearest_code: 2 or 3 per call).

Threads: `launch` may be called from several Python threads at once (titok sample runs its CPU work items on a
pool). The count is taken under a lock; under TRITON_INTERPRET=1 the whole launch is, because Triton's
interpreter patches `triton.language` module-wide for the duration of each launch (two at once fail). On CUDA
launches are not serialised.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import warnings
from typing import Any, Callable, NamedTuple, Optional, Sequence

import torch

BACKENDS = ("auto", "triton", "torch")
BACKEND_ENV = "TITOK_KERNEL_BACKEND"
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)
_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.int32: "int32", torch.int64: "int64"}


class KernelFallbackWarning(UserWarning):
    """backend="auto" ran the torch reference because the Triton kernel does not apply to the call."""


@dataclasses.dataclass(frozen=True)
class NotApplicable:
    """Why the Triton kernel cannot take a call: `reason` is a short, shape-independent key (one
    warning per op and reason); `error` is what backend="triton" raises, naming the argument and
    the shape / dtype / stride received."""

    reason: str
    error: Exception


def interpreting() -> bool:
    """True when TRITON_INTERPRET is set (Triton kernels then run as numpy code on CPU tensors)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def _auto_choice() -> str:
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ValueError(f"environment variable {BACKEND_ENV} must be one of {BACKENDS} (or unset), "
                         f"got {os.environ[BACKEND_ENV]!r}")
    return choice


def _runnable(device: torch.device) -> bool:
    return device.type == "cuda" or (device.type == "cpu" and interpreting())


_WARNED: set = set()


def resolve_backend(op: str, backend: str, device, not_applicable: Optional[NotApplicable] = None) -> str:
    """"triton" or "torch" for one call of `op` on `device` (see the module docstring).

    `not_applicable`: why the kernel cannot take this call, or None where it can.
    """
    check_backend(backend)
    device = torch.device(device)
    if backend == "torch":
        return "torch"
    if backend == "triton":
        if not _runnable(device):
            raise ValueError(f"backend='triton' needs CUDA tensors, or CPU tensors with TRITON_INTERPRET=1 set "
                             f"before titok_kernels.{op} is imported; got tensors on {device}")
        if not_applicable is not None:
            raise not_applicable.error
        return "triton"
    choice = _auto_choice()
    if choice == "torch" or (choice == "auto" and device.type != "cuda"):
        return "torch"
    if not _runnable(device):
        if device.type == "cpu":
            raise ValueError(f"{BACKEND_ENV}=triton makes backend='auto' run Triton on CPU tensors, which needs "
                             f"TRITON_INTERPRET=1 set before titok_kernels.{op} is imported")
        not_applicable = NotApplicable(f"tensors on {device.type}", ValueError(
            f"Triton runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), got {device}"))
    if not_applicable is not None:
        key = (op, not_applicable.reason)
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(f"titok_kernels.{op}: backend='auto' runs the torch reference "
                          f"({not_applicable.reason}): {not_applicable.error}", KernelFallbackWarning, stacklevel=2)
        return "torch"
    return "triton"


def interpreter_dtype_issue(**tensors: Optional[torch.Tensor]) -> Optional[NotApplicable]:
    """bfloat16 CPU tensors cannot run under the Triton interpreter (numpy has no bfloat16)."""
    for name, t in tensors.items():
        if t is not None and t.device.type == "cpu" and t.dtype == torch.bfloat16:
            return NotApplicable("bfloat16 under the Triton interpreter", TypeError(
                f"bfloat16 is not supported by the Triton interpreter (TRITON_INTERPRET=1): {name} is bfloat16; "
                f"use float32/float16 or a CUDA device"))
    return None


# ---- input checks -----------------------------------------------------------------------------------

def _dtype_list(dtypes: Sequence[torch.dtype]) -> str:
    names = [_DTYPE_NAMES.get(d, str(d)) for d in dtypes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def check_tensor(name: str, t: Any, *, dtypes: Sequence[torch.dtype] = FLOAT_DTYPES, ndim: Optional[int] = None,
                 layout: str = "", device: Optional[torch.device] = None, device_of: str = "") -> None:
    """Raise TypeError / ValueError naming `name` unless `t` is a tensor of one of `dtypes`, with
    `ndim` dims (described by `layout`, e.g. "(B, K, V)") and on `device` (that of `device_of`)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise TypeError(f"{name} must be {_dtype_list(dtypes)}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on the device of {device_of} ({device}), got {t.device}")


# ---- launching ----------------------------------------------------------------------------------------

class KernelLaunch(NamedTuple):
    """One launch as the launcher makes it: `kernel[grid](*args, **kwargs)`. The ahead-of-time
    harness (titok_kernels.aot) compiles the same (kernel, args, kwargs)."""

    kernel: Any
    grid: Any
    args: tuple
    kwargs: dict


_LAUNCHES: dict = {}
_LAUNCH_LOCK = threading.Lock()  # the count; and interpreted launches whole (see "Threads" above)


def launch(op: str, kernel_launch: KernelLaunch) -> None:
    """Launch one kernel of `op` and count it (thread-safe; interpreted launches run one at a time)."""
    def run():
        kernel_launch.kernel[kernel_launch.grid](*kernel_launch.args, **kernel_launch.kwargs)

    if interpreting():
        with _LAUNCH_LOCK:
            _fix_old_interpreter_index()
            _LAUNCHES[op] = _LAUNCHES.get(op, 0) + 1
            run()
        return
    with _LAUNCH_LOCK:
        _LAUNCHES[op] = _LAUNCHES.get(op, 0) + 1
    run()


def launch_counts() -> dict:
    """{op name: Triton kernel launches since the start or the last `reset_launch_counts()`}."""
    with _LAUNCH_LOCK:
        return dict(_LAUNCHES)


def reset_launch_counts() -> None:
    with _LAUNCH_LOCK:
        _LAUNCHES.clear()


def _fix_old_interpreter_index() -> None:
    """Compatibility with Triton < 3.9's interpreter under numpy >= 2.4 (a no-op elsewhere).

    The interpreter holds every scalar as a 1-element numpy array and, during a launch, gives
    tl.tensor an `__index__` of `int(array)`, which numpy >= 2.4 refuses for arrays of one
    dimension ("only 0-dimensional arrays can be converted to Python scalars"). A loop whose
    bound is a runtime argument (`for v0 in range(0, V, BLOCK_V)`) calls it, so every kernel with
    such a loop failed. Triton 3.9 converts `array.squeeze()`; this wraps the interpreter's
    per-launch patch of tl.tensor so that it does the same. Applied once, before the first
    interpreted launch, and only for Triton < 3.9.
    """
    import triton

    if tuple(int(p) for p in triton.__version__.split(".")[:2]) >= (3, 9):
        return
    from triton.runtime import interpreter

    patch: Callable = interpreter._patch_lang_tensor
    if getattr(patch, "titok_index_fix", False):
        return

    def patch_lang_tensor(tensor, scope):
        patch(tensor, scope)  # records the original attributes, which the scope restores after the launch
        tensor.__index__ = lambda self: int(self.handle.data.squeeze())

    patch_lang_tensor.titok_index_fix = True
    interpreter._patch_lang_tensor = patch_lang_tensor

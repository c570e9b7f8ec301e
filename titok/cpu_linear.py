"""bf16 linear layers on a CPU with their weights packed once for oneDNN (the fast runtime's matrix products).

`F.linear` on bf16 CPU tensors runs oneDNN's matrix product on the plain (N, K) weight, which oneDNN packs
into its blocked layout again on every call. `linear(x, weight, bias)` packs each weight once
(`mkldnn::_reorder_linear_weight`, the packing that torch.compile's CPU freezing pass does) and calls
`mkldnn::_linear_pointwise` on the packed copy: the same bf16 products with fp32 accumulation, 5-37% faster
at the model's shapes on the 2-core AMD EPYC Zen 4 (`bench/cpu_ops.py`; docs/benchmarks.md, "The fast path
against the machine's matrix rate").

Contract:
- `linear(x, weight, bias=None)` has `F.linear`'s signature and result shape and dtype. It takes the packed
  route only where `packing_applies(x, weight)`: CPU tensors, x and weight bf16, no autograd (grad mode off or
  nothing requiring grad), oneDNN with bf16 present, TITOK_CPU_PACKED_LINEAR not "0". Everywhere else it IS
  `F.linear` (fp32 stays bit-equal to the reference). On the packed route the values are oneDNN's bf16
  product, within the bf16 bound of `F.linear`'s (tests/test_cpu_linear.py; bit-equal on the CPUs measured,
  not promised).
- A packed copy is made on first use of a weight tensor and made again when the weight changes in place
  (its data pointer or version counter moves); it is dropped with the weight (weak reference). It costs the
  weight's size again in memory. Thread-safe: pipelines run from several threads (titok.cpu_threads). A
  oneDNN that cannot pack (an op missing, an ISA it refuses) turns the packed route off for the process.
- `linear_gelu(x, w, b)` = `F.gelu(F.linear(x, w, b))` and `linear_add(x, w, b, residual)` = `residual +
  F.linear(x, w, b)`: on the packed route the GELU / the residual add is oneDNN's post-op on the fp32 accumulator
  (one call, one rounding to bf16: at most the unfused error in the tests); elsewhere exactly the unfused calls.
- `packed_linears(module)`: a copy of `module` whose `nn.Linear` submodules run `linear`; the parameters and
  buffers are the caller's own tensors (no copy), the caller's module is unchanged.
"""
from __future__ import annotations

import copy
import itertools
import os
import threading

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.weak import WeakIdKeyDictionary

PACKED_LINEAR_ENV = "TITOK_CPU_PACKED_LINEAR"

_lock = threading.Lock()
_packed: WeakIdKeyDictionary = WeakIdKeyDictionary()   # weight tensor -> ((data_ptr, version), packed copy)
_available: bool | None = None


def onednn_bf16_available() -> bool:
    """Whether this PyTorch build has oneDNN with bf16 support on this CPU (checked once)."""
    global _available
    if _available is None:
        try:
            _available = bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            _available = False
    return _available


def packing_enabled() -> bool:
    """False when TITOK_CPU_PACKED_LINEAR=0 (plain F.linear everywhere, e.g. to measure the difference)."""
    return os.environ.get(PACKED_LINEAR_ENV, "").strip() != "0" and onednn_bf16_available()


def packing_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `linear(x, weight, ...)` takes the packed route (see the module docstring)."""
    return (x.device.type == "cpu" and weight.device.type == "cpu"
            and x.dtype == torch.bfloat16 and weight.dtype == torch.bfloat16
            and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
            and packing_enabled())


def packed_weight(weight: torch.Tensor) -> torch.Tensor:
    """oneDNN's packed copy of a (N, K) bf16 weight, made once per weight value."""
    key = (weight.data_ptr(), weight._version)
    with _lock:
        entry = _packed.get(weight)
        if entry is None or entry[0] != key:
            with torch.no_grad():
                entry = (key, torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous()))
            _packed[weight] = entry
        return entry[1]


def _packed_route(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor | None:
    """The packed copy of `weight` when `linear(x, weight, bias)` takes the packed route, else None. A build whose
    oneDNN cannot pack (an op missing, an ISA it refuses) gets None for the rest of the process."""
    global _available
    if not packing_applies(x, weight) or (bias is not None and bias.dtype != torch.bfloat16):
        return None
    try:
        return packed_weight(weight)
    except (RuntimeError, NotImplementedError, AttributeError):
        _available = False
        return None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)`, through a packed weight where `packing_applies` (module docstring)."""
    packed = _packed_route(x, weight, bias)
    if packed is None:
        return F.linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.gelu(F.linear(x, weight, bias))` (exact GELU). On the packed route one oneDNN call that applies the GELU
    to the fp32 accumulator (no bf16 rounding in between); elsewhere exactly those two calls."""
    packed = _packed_route(x, weight, bias)
    if packed is None:
        return F.gelu(F.linear(x, weight, bias))
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu", [], "none")


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               residual: torch.Tensor) -> torch.Tensor:
    """`residual + F.linear(x, weight, bias)` (a residual connection). On the packed route, for a bf16 residual of
    the output's shape, one oneDNN call that adds the residual to the fp32 accumulator; elsewhere exactly that sum."""
    packed = _packed_route(x, weight, bias)
    if packed is None:
        return residual + F.linear(x, weight, bias)
    if residual.dtype != torch.bfloat16 or residual.shape != (*x.shape[:-1], weight.shape[0]):  # e.g. broadcast
        return residual + torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, packed, bias, "add")


class PackedLinear(nn.Linear):
    """nn.Linear whose forward is `titok.cpu_linear.linear` (the same parameters, the same result shape)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


def packed_linears(module: nn.Module) -> nn.Module:
    """A copy of `module` (sharing its parameters and buffers) whose exact `nn.Linear` submodules are
    PackedLinear; subclasses of nn.Linear and every other module keep their class."""
    memo = {id(t): t for t in itertools.chain(module.parameters(), module.buffers())}
    clone = copy.deepcopy(module, memo)
    for sub in clone.modules():
        if type(sub) is nn.Linear:
            sub.__class__ = PackedLinear
    return clone

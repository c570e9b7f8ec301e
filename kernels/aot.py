"""Ahead-of-time compilation of the kernels' launches for NVIDIA targets, without a GPU.

Why: the interpreter (TRITON_INTERPRET=1) runs kernels as numpy code and cannot see register
pressure, spills or shared-memory use. Compiling to a cubin for sm_90 / sm_80 on the CPU
catches those, so every launchable configuration is checked in CI.

What is compiled is what a launch compiles. Each op module declares, beside its kernels,
`aot_jobs()`: a list of `CompileJob(name, capability, launch)`, where `launch` is the
`KernelLaunch` (kernel, grid, args, kwargs) that the op's own launcher builds for a
representative call (tensors on the "meta" device: shapes, strides and dtypes without memory;
their address 0 counts as 16-byte aligned, as a fresh allocation is). `specialization` runs
Triton's own launch-time binder on those arguments for the target: pointers 16-byte aligned
and integers divisible by 16 get `tt.divisibility = 16`, integers equal to 1 become the
constant 1, except the parameters the kernel lists in `do_not_specialize`. So the compile gets
the same signature, constants and attributes as the launch (and with them, e.g., 128-bit vector
loads of unit-stride rows). `specialize=False` compiles the unspecialised kernel instead
(every integer a plain i32/i64, no alignment facts), for comparison.

`compile_jobs("titok_kernels.maskgit_step")` compiles an op's jobs (all, or those named) and
returns {name: CompileReport}: registers per thread, stack bytes (non-zero means spills),
shared memory used and the chip's limit, and the 128-bit global loads in the PTX. It runs one
subprocess per capability, side by side, with the interpreter switched off (under
TRITON_INTERPRET=1 `@triton.jit` yields interpreter objects that cannot be compiled).
Resource figures come from the `cuobjdump` shipped inside the triton wheel.

The binder is Triton's (`create_function_from_signature` and `JITFunction._pack_args`, the same
in triton 3.6 and 3.9): private API, used so that the specialisation cannot drift from Triton's.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
import subprocess
import sys
import tempfile
from typing import Optional

from .backend import KernelLaunch

# Maximum dynamic shared memory per block (bytes) by compute capability.
SHARED_MEMORY_LIMIT = {90: 232448, 80: 166912}


@dataclasses.dataclass(frozen=True)
class CompileJob:
    """One kernel launch to compile for sm_<capability>; `name` is unique within the op."""

    name: str
    capability: int
    launch: KernelLaunch


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """Resource use of one compiled job."""

    name: str
    capability: int
    specialized: bool
    num_warps: int
    num_stages: int
    registers: int
    stack_bytes: int
    shared_bytes: int
    shared_limit: int
    vector_loads: int  # ld.global ... .v4 instructions (128-bit loads of 32-bit elements) in the PTX

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0

    @property
    def fits(self) -> bool:
        return not self.spills and self.shared_bytes <= self.shared_limit


def _jit_function(kernel):
    import triton

    while not isinstance(kernel, triton.runtime.jit.JITFunction):  # unwrap autotune / heuristics
        kernel = kernel.fn
    return kernel


def specialization(launch: KernelLaunch, capability: int, specialize: bool = True):
    """(JITFunction, signature, constexprs, attrs, options) that launching `launch` on an sm_<capability>
    GPU compiles with (specialize=False: as if every parameter were in do_not_specialize and
    do_not_specialize_on_alignment)."""
    import copy

    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime.jit import create_function_from_signature

    fn = _jit_function(launch.kernel)
    backend = make_backend(GPUTarget("cuda", capability, 32))
    params = fn.params
    if not specialize:
        params = [copy.copy(p) for p in params]
        for p in params:
            p.do_not_specialize = p.do_not_specialize_on_alignment = True
    binder = create_function_from_signature(fn.signature, params, backend)
    bound_args, spec, options = binder(*launch.args, **launch.kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, launch.kwargs, bound_args, spec, options)
    return fn, signature, constexprs, attrs, options


def _cuobjdump() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise FileNotFoundError(f"cuobjdump not found in the triton wheel at {path}")
    return path


def compile_job(job: CompileJob, specialize: bool = True) -> CompileReport:
    """Compile one job in this process (the interpreter must be off)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn, signature, constexprs, attrs, options = specialization(job.launch, job.capability, specialize)
    compiled = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                              target=GPUTarget("cuda", job.capability, 32), options=options.__dict__)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([_cuobjdump(), "-res-usage", cubin], capture_output=True, text=True, check=True).stdout
    match = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)", out)
    if match is None:
        raise RuntimeError(f"could not read resource usage from cuobjdump output:\n{out}")
    registers, stack, static_shared = (int(g) for g in match.groups())
    return CompileReport(
        name=job.name, capability=job.capability, specialized=specialize, num_warps=options.num_warps,
        num_stages=options.num_stages, registers=registers, stack_bytes=stack,
        shared_bytes=int(compiled.metadata.shared) + static_shared, shared_limit=SHARED_MEMORY_LIMIT[job.capability],
        vector_loads=len(re.findall(r"\bld\.global\.[\w:.]*\bv4\.", compiled.asm["ptx"])))


def compile_jobs(module: str, names: Optional[list[str]] = None, *, specialize: bool = True) -> dict:
    """Compile the jobs declared by `module.aot_jobs()` (those in `names`, or all): one subprocess per
    capability, side by side, without the interpreter. Returns {name: CompileReport}."""
    jobs = importlib.import_module(module).aot_jobs()
    if names is not None:
        unknown = set(names) - {job.name for job in jobs}
        if unknown:
            raise ValueError(f"{module}.aot_jobs() declares no job named {sorted(unknown)}")
        jobs = [job for job in jobs if job.name in names]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    procs = []
    for capability in sorted({job.capability for job in jobs}):
        request = dict(module=module, capability=capability, specialize=specialize,
                       names=[job.name for job in jobs if job.capability == capability])
        proc = subprocess.Popen([sys.executable, "-m", "titok_kernels.aot"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        proc.stdin.write(json.dumps(request))
        proc.stdin.close()
        procs.append(proc)
    reports = {}
    for proc in procs:
        out, err = proc.stdout.read(), proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"ahead-of-time compilation of {module} failed:\n{err[-4000:]}")
        reports.update({r["name"]: CompileReport(**r) for r in json.loads(out.strip().splitlines()[-1])})
    return reports


def _main() -> None:
    """Subprocess entry: compile the named jobs of one module for one capability; print JSON reports."""
    import warnings

    warnings.filterwarnings("ignore")
    request = json.loads(sys.stdin.read())
    jobs = [job for job in importlib.import_module(request["module"]).aot_jobs()
            if job.capability == request["capability"] and job.name in request["names"]]
    print(json.dumps([dataclasses.asdict(compile_job(job, request["specialize"])) for job in jobs]))


if __name__ == "__main__":
    _main()

"""Ahead-of-time compilation of a Triton kernel for an NVIDIA target, without a GPU.

Why: the interpreter (TRITON_INTERPRET=1) runs kernels as numpy code and cannot
see register pressure, spills or shared-memory use. Compiling to a cubin for
sm_90 / sm_80 on the CPU catches those, so every kernel is checked in CI.

`compile_report("titok_kernels.nearest_code", "_nearest_code_kernel", signature,
constexprs, capability=90)` returns the registers per thread, the stack bytes
(non-zero means spills), the shared memory the kernel uses, and the chip's
limit. Resource figures come from the `cuobjdump` shipped inside the triton
wheel; its `ptxas` is not used. Under TRITON_INTERPRET=1 `@triton.jit` yields
interpreter objects that cannot be compiled, so the compilation then runs in a
subprocess with the interpreter switched off.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile

# Maximum dynamic shared memory per block (bytes) by compute capability.
SHARED_MEMORY_LIMIT = {90: 232448, 80: 166912}


@dataclasses.dataclass(frozen=True)
class CompileReport:
    """Resource use of one compiled kernel variant."""

    name: str
    capability: int
    num_warps: int
    num_stages: int
    registers: int
    stack_bytes: int
    shared_bytes: int
    shared_limit: int

    @property
    def spills(self) -> bool:
        return self.stack_bytes > 0

    @property
    def fits(self) -> bool:
        return not self.spills and self.shared_bytes <= self.shared_limit


def _cuobjdump() -> str:
    import triton

    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(path):
        raise FileNotFoundError(f"cuobjdump not found in the triton wheel at {path}")
    return path


def compile_report(module: str, kernel: str, signature: dict, constexprs: dict | None = None, *,
                   capability: int = 90, num_warps: int = 4, num_stages: int = 3,
                   options: dict | None = None) -> CompileReport:
    """Compile `module.kernel` (a @triton.jit function) for sm_<capability>; report its resources.

    `signature` maps every argument name to a Triton type string ("*fp32", "i32",
    "i64", "fp32", ... or "constexpr"); `constexprs` gives the constexpr values.
    """
    if capability not in SHARED_MEMORY_LIMIT:
        raise ValueError(f"capability must be one of {sorted(SHARED_MEMORY_LIMIT)}, got {capability}")
    request = dict(module=module, kernel=kernel, signature=dict(signature),
                   constexprs=dict(constexprs or {}), capability=capability,
                   num_warps=num_warps, num_stages=num_stages, options=dict(options or {}))
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        proc = subprocess.run([sys.executable, "-m", "titok_kernels.aot"], input=json.dumps(request),
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"compiling {module}.{kernel} for sm_{capability} failed:\n{proc.stderr[-4000:]}")
        return CompileReport(**json.loads(proc.stdout.strip().splitlines()[-1]))
    return _compile(**request)


def _compile(module, kernel, signature, constexprs, capability, num_warps, num_stages, options):
    import importlib

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = getattr(importlib.import_module(module), kernel)
    while not isinstance(fn, triton.runtime.jit.JITFunction):  # unwrap autotune / heuristics
        fn = fn.fn
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    opts = {"num_warps": num_warps, "num_stages": num_stages, **options}
    compiled = triton.compile(src, target=GPUTarget("cuda", capability, 32), options=opts)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "kernel.cubin")
        with open(cubin, "wb") as f:
            f.write(compiled.asm["cubin"])
        out = subprocess.run([_cuobjdump(), "-res-usage", cubin], capture_output=True,
                             text=True, check=True).stdout
    match = re.search(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)", out)
    if match is None:
        raise RuntimeError(f"could not read resource usage from cuobjdump output:\n{out}")
    registers, stack, static_shared = (int(g) for g in match.groups())
    return CompileReport(
        name=kernel, capability=capability, num_warps=num_warps, num_stages=num_stages,
        registers=registers, stack_bytes=stack,
        shared_bytes=int(compiled.metadata.shared) + static_shared,
        shared_limit=SHARED_MEMORY_LIMIT[capability],
    )


def compile_reports(jobs: list[dict]) -> dict[str, dict]:
    """Compile many kernel variants, one subprocess per capability running side by side.

    Each job: name, module, kernel, signature, constexprs, capability, num_warps, and optionally
    num_stages and options. Returns {name: CompileReport fields}. The subprocesses run without
    the interpreter, whatever the caller's TRITON_INTERPRET.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    procs = []
    for capability in sorted({job["capability"] for job in jobs}):
        batch = [job for job in jobs if job["capability"] == capability]
        procs.append(subprocess.Popen([sys.executable, "-m", "titok_kernels.aot", "--batch"], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root))
        procs[-1].stdin.write(json.dumps(batch))
        procs[-1].stdin.close()
    reports = {}
    for proc in procs:
        out, err = proc.stdout.read(), proc.stderr.read()
        if proc.wait() != 0:
            raise RuntimeError(f"ahead-of-time compilation failed:\n{err[-4000:]}")
        reports.update({r["job"]: r for r in json.loads(out.strip().splitlines()[-1])})
    return reports


def _compile_job(job: dict) -> dict:
    report = _compile(module=job["module"], kernel=job["kernel"], signature=job["signature"],
                      constexprs=job.get("constexprs", {}), capability=job["capability"],
                      num_warps=job.get("num_warps", 4), num_stages=job.get("num_stages", 3),
                      options=job.get("options", {}))
    return {"job": job["name"], **dataclasses.asdict(report)}


if __name__ == "__main__":  # subprocess entry: one request, or a batch of jobs (--batch)
    import warnings

    warnings.filterwarnings("ignore")
    request = json.loads(sys.stdin.read())
    if sys.argv[1:] == ["--batch"]:
        print(json.dumps([_compile_job(job) for job in request]))
    else:
        print(json.dumps(dataclasses.asdict(_compile(**request))))

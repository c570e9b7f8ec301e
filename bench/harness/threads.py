"""The CPU thread policy of the bench tools: how many intra-op threads, and how OpenMP threads wait.

At a CPU tool's start `choose` looks at what the machine has free and picks:
- an idle machine (at most half a core of the allowed CPUs taken by others): PyTorch's defaults, i.e. one
  thread per allowed CPU and OpenMP's active (spinning) wait. Passive waiting costs a lot there: on the AMD EPYC
  development machine (2 cores) bf16 `fast` generation at batch 1 took 1.41 s with the defaults, 2.70 s with
  OMP_WAIT_POLICY=PASSIVE and 2.37 s with one thread;
- a busy machine: OMP_WAIT_POLICY=PASSIVE and `busy_threads` intra-op threads (the allowed CPUs plus those
  taken by others, at most twice the allowed CPUs). Spinning threads lose whole scheduler time slices when
  other processes hold the cores: beside the synthetic load of `bench/busy_load.py` the same generation took
  12.4 s with the defaults, 4.59 s passive on 2 threads and 4.83 s on one thread; and the main job's `fast`
  kept 22%, 29% and 31% of its idle rate passive on 2, 3 and 4 threads (docs/cpu-threads.md).
"Free" is measured, not guessed: the idle time of the allowed CPUs in /proc/stat over `SAMPLE_S` seconds while
this process sleeps (the load average lags by a minute and counts this tool's own earlier runs; it is recorded,
not used). Where /proc/stat is missing (not Linux) the defaults are kept.

OpenMP reads OMP_WAIT_POLICY once, when torch loads it: `apply` re-executes the tool with it set (the decision
travels in TITOK_THREAD_POLICY, which also prevents a second re-execution). What the user set wins: --threads and
--omp-wait-policy, then OMP_NUM_THREADS / OMP_WAIT_POLICY in the environment; on a CUDA device nothing changes
unless asked. The record (`"threads"` in result files) says what was chosen, from what, and why.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

ENV_MARKER = "TITOK_THREAD_POLICY"
SAMPLE_S = 0.5
BUSY_MARGIN = 0.5  # cores taken by others above which the machine counts as busy
POLICIES = ("auto", "active", "passive")


def allowed_cpus() -> list[int]:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def _cpu_times(cpus: list[int]) -> tuple[float, float] | None:
    """(idle, total) jiffies summed over `cpus` from /proc/stat; None where it cannot be read."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    wanted = {f"cpu{i}" for i in cpus}
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            values = [float(v) for v in parts[1:]]
            idle += values[3] + (values[4] if len(values) > 4 else 0.0)  # idle + iowait
            total += sum(values[:8])  # guest time is already inside user/nice
    return (idle, total) if total > 0 else None


def measure(sample_s: float = SAMPLE_S) -> dict:
    """What the machine has free now: allowed CPUs, their idle CPUs (None if unknown), the 1-minute load."""
    cpus = allowed_cpus()
    first = _cpu_times(cpus)
    time.sleep(sample_s)
    second = _cpu_times(cpus)
    idle = None
    if first and second and second[1] > first[1]:
        idle = len(cpus) * (second[0] - first[0]) / (second[1] - first[1])
    try:
        load1 = os.getloadavg()[0]
    except OSError:
        load1 = None
    return {"allowed_cpus": len(cpus), "idle_cpus": None if idle is None else round(idle, 2),
            "load1": None if load1 is None else round(load1, 2), "sample_s": sample_s}


def busy_threads(cpus: int, idle: float) -> int:
    """The intra-op thread count on a busy machine: the allowed CPUs plus the CPUs other processes take
    (rounded up), at most twice the allowed CPUs. The scheduler shares a core among runnable threads, and a
    passively waiting thread gives its slice away during serial work, so a process with one thread per CPU
    gets less than its share beside other multi-threaded processes (measured: docs/cpu-threads.md)."""
    return min(2 * cpus, cpus + math.ceil(max(0.0, cpus - idle) - 1e-9))


def decide(measured: dict, *, threads: int | None = None, policy: str = "auto", env=None,
           device_type: str = "cpu") -> dict:
    """The choice for these measurements and user settings (a pure function; see the module docstring)."""
    env = os.environ if env is None else env
    cpus = measured["allowed_cpus"]
    record = {"measured": measured, "intra_op": None, "omp_wait_policy": None, "source": {}, "reason": ""}
    env_threads, env_policy = env.get("OMP_NUM_THREADS"), env.get("OMP_WAIT_POLICY")
    idle = measured.get("idle_cpus")
    busy = device_type == "cpu" and idle is not None and cpus - idle > BUSY_MARGIN
    # threads: flag > environment > auto
    if threads is not None:
        record["intra_op"], record["source"]["intra_op"] = threads, "--threads"
    elif env_threads:
        record["intra_op"], record["source"]["intra_op"] = None, "OMP_NUM_THREADS"
    elif busy:
        record["intra_op"], record["source"]["intra_op"] = busy_threads(cpus, idle), "auto"
    else:
        record["source"]["intra_op"] = "default"
    # wait policy: flag > environment > auto
    if policy != "auto":
        record["omp_wait_policy"], record["source"]["omp_wait_policy"] = policy.upper(), "--omp-wait-policy"
    elif env_policy:
        record["omp_wait_policy"], record["source"]["omp_wait_policy"] = env_policy.upper(), "OMP_WAIT_POLICY"
    elif busy:
        record["omp_wait_policy"], record["source"]["omp_wait_policy"] = "PASSIVE", "auto"
    else:
        record["source"]["omp_wait_policy"] = "default"
    if device_type != "cpu":
        record["reason"] = f"{device_type} device: the host threads are left as they are"
        return record
    if idle is None:
        state = "the CPUs' idle time could not be read"
    elif busy:
        state = f"busy: {cpus - idle:.1f} of {cpus} allowed CPUs taken by other processes"
    else:
        state = f"idle: {idle:.1f} of {cpus} allowed CPUs free"
    wait_source, thread_source = record["source"]["omp_wait_policy"], record["source"]["intra_op"]
    wait = {"auto": "passive waiting", "default": "OpenMP's default waiting"}.get(
        wait_source, f"the wait policy of {wait_source}")
    count = {"default": "PyTorch's thread count",
             "auto": f"{record['intra_op']} threads (the allowed CPUs + those taken by others)"}.get(
        thread_source, f"the thread count of {thread_source}")
    record["reason"] = f"{state}: {wait}, {count}"
    return record


def apply(record: dict, *, script_entry: bool) -> dict:
    """Carry out a decision: re-execute for the wait policy where needed, then set torch's thread count.
    Returns the record with what was applied (`intra_op` as torch reports it, `omp_wait_policy` in force)."""
    wanted = record["omp_wait_policy"]
    current = os.environ.get("OMP_WAIT_POLICY")
    if wanted and (current or "").upper() != wanted:
        if script_entry and ENV_MARKER not in os.environ:
            env = {**os.environ, "OMP_WAIT_POLICY": wanted, ENV_MARKER: json.dumps(record)}
            sys.stdout.flush(), sys.stderr.flush()
            os.execve(sys.executable, [sys.executable, *sys.argv], env)
        record = {**record, "reason": record["reason"] + f" (not applied: {wanted} needs a fresh process; "
                  "run the tool as a script)", "omp_wait_policy": current}
    import torch

    if record["intra_op"]:
        torch.set_num_threads(record["intra_op"])
    return {**record, "intra_op": torch.get_num_threads(),
            "omp_wait_policy": (os.environ.get("OMP_WAIT_POLICY") or "default (active)").upper()}


def configure(threads: int | None, policy: str, device_type: str, *, script_entry: bool) -> dict:
    """The whole policy at a tool's start: the decision of the process before a re-execution (if any), else
    measure and decide now; then apply. Returns the record for the result file."""
    inherited = os.environ.get(ENV_MARKER)
    if inherited:
        try:
            record = json.loads(inherited)
            record["reexecuted"] = True
            return apply(record, script_entry=False)
        except (ValueError, KeyError, TypeError):
            pass
    if policy not in POLICIES:
        raise ValueError(f"--omp-wait-policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    measured = measure() if device_type == "cpu" else {"allowed_cpus": len(allowed_cpus()), "idle_cpus": None,
                                                        "load1": None, "sample_s": 0}
    return apply(decide(measured, threads=threads, policy=policy, device_type=device_type),
                 script_entry=script_entry)


def summary(record: dict) -> str:
    """One line for the tools' output."""
    return (f"threads: {record['intra_op']} intra-op, OMP wait policy {record['omp_wait_policy']} "
            f"({record['reason']})")

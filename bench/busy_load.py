"""A documented synthetic CPU load: what a shared workstation or CI runner looks like to a benchmark.

    python bench/busy_load.py --seconds 300 &       # then run a benchmark beside it

Starts `--procs` processes (default 2), each running PyTorch fp32 matrix products of `--size` (default 512)
on `--threads` intra-op threads (default 2) in bursts of `--burst-ms` (default 200 ms) with `--sleep-ms`
(default 20 ms) of sleep between bursts, for `--seconds` (default 300) at most; then it stops by itself.
Ctrl-C or SIGTERM stops the children too. It prints what it runs and, at the end, the matrix products each
process made. Used by docs/cpu-threads.md to measure the thread policy (bench/harness/threads.py).
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import sys
import time


def _worker(seconds: float, size: int, threads: int, burst_ms: float, sleep_ms: float, counts, slot: int) -> None:
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    end = time.monotonic() + seconds
    done = 0
    while time.monotonic() < end:
        burst_end = min(end, time.monotonic() + burst_ms / 1000)
        while time.monotonic() < burst_end:
            a = torch.mm(a, b).mul_(1.0 / size)
            done += 1
        counts[slot] = done
        time.sleep(sleep_ms / 1000)
    counts[slot] = done


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/busy_load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=300.0, help="stop after this long (default 300)")
    p.add_argument("--procs", type=int, default=2, help="load processes (default 2)")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads of each (default 2)")
    p.add_argument("--size", type=int, default=512, help="square matrix size (default 512)")
    p.add_argument("--burst-ms", type=float, default=200.0, help="length of a burst of products (default 200)")
    p.add_argument("--sleep-ms", type=float, default=20.0, help="sleep between bursts (default 20)")
    args = p.parse_args(argv)
    if min(args.seconds, args.procs, args.threads, args.size, args.burst_ms) <= 0 or args.sleep_ms < 0:
        p.error("every value must be positive (--sleep-ms may be 0)")
    if args.seconds > 3600:
        p.error("--seconds: at most 3600 (the load must end by itself)")
    print(f"busy_load: {args.procs} processes x {args.threads} threads, {args.size}x{args.size} fp32 matmuls, bursts "
          f"of {args.burst_ms:g} ms with {args.sleep_ms:g} ms sleeps, for {args.seconds:g} s (pid {os.getpid()})",
          flush=True)
    counts = mp.Array("q", args.procs)
    procs = [mp.Process(target=_worker, args=(args.seconds, args.size, args.threads, args.burst_ms, args.sleep_ms,
                                              counts, i), daemon=True) for i in range(args.procs)]

    def stop(*_):
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        raise SystemExit(130)
    signal.signal(signal.SIGTERM, stop)
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(args.seconds + 30)
    except KeyboardInterrupt:
        stop()
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
    print(f"busy_load: done, {list(counts)} products per process", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

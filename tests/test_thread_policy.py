"""The bench tools' CPU thread policy (bench/harness/threads.py): the decision on given measurements, the user's
settings winning, and the re-execution marker that carries the decision (no loop)."""
import json

import torch

from titok_bench.harness import threads

IDLE = {"allowed_cpus": 2, "idle_cpus": 1.9, "load1": 0.3, "sample_s": 0.5}
BUSY = {"allowed_cpus": 2, "idle_cpus": 0.1, "load1": 4.2, "sample_s": 0.5}


def test_idle_machine_keeps_pytorchs_defaults():
    r = threads.decide(IDLE, env={})
    assert r["intra_op"] is None and r["omp_wait_policy"] is None
    assert r["source"] == {"intra_op": "default", "omp_wait_policy": "default"} and r["reason"].startswith("idle")


def test_busy_machine_waits_passively_with_a_thread_per_cpu_and_per_cpu_taken():
    r = threads.decide(BUSY, env={})
    assert r["intra_op"] == 4 and r["omp_wait_policy"] == "PASSIVE" and r["reason"].startswith("busy")
    assert r["source"] == {"intra_op": "auto", "omp_wait_policy": "auto"}
    half = threads.decide({"allowed_cpus": 8, "idle_cpus": 4.0, "load1": 4.0, "sample_s": 0.5}, env={})
    assert half["intra_op"] == 12 and half["omp_wait_policy"] == "PASSIVE"
    assert threads.busy_threads(16, 15.4) == 17 and threads.busy_threads(2, 0.0) == 4
    assert threads.busy_threads(4, 4.5) == 4 and threads.busy_threads(2, 1.5) == 3
    one = threads.decide({"allowed_cpus": 1, "idle_cpus": 0.9, "load1": 3.0, "sample_s": 0.5}, env={})
    assert one["intra_op"] is None and one["omp_wait_policy"] is None  # 0.1 of a core taken: idle


def test_the_users_settings_win():
    r = threads.decide(BUSY, env={"OMP_WAIT_POLICY": "active", "OMP_NUM_THREADS": "2"})
    assert r["omp_wait_policy"] == "ACTIVE" and r["intra_op"] is None
    assert r["source"] == {"intra_op": "OMP_NUM_THREADS", "omp_wait_policy": "OMP_WAIT_POLICY"}
    r = threads.decide(BUSY, threads=2, policy="active", env={"OMP_WAIT_POLICY": "passive"})
    assert r["intra_op"] == 2 and r["omp_wait_policy"] == "ACTIVE"
    assert r["source"] == {"intra_op": "--threads", "omp_wait_policy": "--omp-wait-policy"}


def test_no_change_on_cuda_or_without_proc_stat():
    r = threads.decide(BUSY, env={}, device_type="cuda")
    assert r["intra_op"] is None and r["omp_wait_policy"] is None and "cuda" in r["reason"]
    r = threads.decide({**BUSY, "idle_cpus": None}, env={})
    assert r["intra_op"] is None and r["omp_wait_policy"] is None


def test_measure_reads_the_allowed_cpus():
    m = threads.measure(sample_s=0.05)
    assert m["allowed_cpus"] >= 1 and (m["idle_cpus"] is None or 0 <= m["idle_cpus"] <= m["allowed_cpus"] + 0.01)


def test_reexecuted_process_takes_the_decision_and_does_not_loop(monkeypatch):
    """The marker carries the parent's decision: the child applies it (threads set) and never re-executes."""
    saved = torch.get_num_threads()
    record = threads.decide(BUSY, env={})
    monkeypatch.setenv(threads.ENV_MARKER, json.dumps(record))
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    monkeypatch.setattr(threads.os, "execve", lambda *a: (_ for _ in ()).throw(AssertionError("re-executed")))
    try:
        out = threads.configure(None, "auto", "cpu", script_entry=True)
        assert out["reexecuted"] and out["intra_op"] == record["intra_op"] == 4 == torch.get_num_threads()
        assert out["omp_wait_policy"] == "PASSIVE"
    finally:
        torch.set_num_threads(saved)


def test_in_process_call_cannot_change_the_wait_policy_and_says_so(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv(threads.ENV_MARKER, raising=False)
    monkeypatch.setattr(threads.os, "execve", lambda *a: (_ for _ in ()).throw(AssertionError("re-executed")))
    saved = torch.get_num_threads()
    try:
        out = threads.apply(threads.decide(BUSY, env={}), script_entry=False)
        assert "not applied" in out["reason"] and out["omp_wait_policy"] == "DEFAULT (ACTIVE)"
    finally:
        torch.set_num_threads(saved)
    assert "intra-op" in threads.summary(out)

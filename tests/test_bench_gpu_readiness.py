"""What the first GPU run must measure right, checked on CPU (issue 17): full batches in one call, provenance
without .git, error rows instead of lost result files, measured ceilings, graph-timed kernel rows, the results
renderer. The GPU-only halves are `gpu` tests in the kernel and pipeline test files."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from titok_bench.harness import measure
from titok_bench.harness.models import SPECS
from titok_bench.harness.nvml import NvmlMonitor

ROOT = Path(__file__).resolve().parents[1]


def _settings(**kw):
    base = dict(device=torch.device("cpu"), iters=1, warmup=0, stages=False, stage_iters=1, stage_warmup=0,
                tf32=False)
    return measure.Settings(**{**base, **kw})


# ---- defect 1: a row runs the batch it names in ONE pipeline call --------------------------------------------

@pytest.mark.parametrize("mode", ["reference", "fast"])
def test_a_row_above_64_runs_as_one_call_and_records_it(monkeypatch, mode):
    """Batch 80 > the pipeline's max_batch of 64: the runtime sees one call of 80 (not 64 + 16), and the row
    says call_batch 80."""
    from titok.pipeline import Pipeline

    spec = SPECS["tiny-titok"]
    models = spec.build("cpu")
    sample_batches, decode_batches = [], []
    real_init = Pipeline.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        assert self.max_batch == 64                      # the chunking is there to be turned off
        real_sample, real_decode = self.runtime.sample, self.runtime.decode
        self.runtime.sample = lambda cls, **kw: (sample_batches.append(len(cls)), real_sample(cls, **kw))[1]
        self.runtime.decode = lambda ids: (decode_batches.append(len(ids)), real_decode(ids))[1]

    monkeypatch.setattr(Pipeline, "__init__", init)
    job = measure.Job(spec, mode, torch.float32, 80)
    row = measure.measure_group([job], {spec.key: models}, _settings(), NvmlMonitor("cpu"), lambda r: True)[0]
    assert row["status"] == "ok", row["message"]
    assert row["batch_size"] == 80 and row["call_batch"] == 80
    assert sample_batches == [80] and decode_batches == [80]   # iters=1, warmup=0: exactly one call of 80


def test_call_batch_is_in_the_result_schema():
    schema = json.loads((ROOT / "bench" / "schema_sampling.json").read_text())
    row = schema["$defs"]["row"]
    assert "call_batch" in row["required"] and "call_batch" in row["properties"]


# ---- defect 4: provenance without .git ---------------------------------------------------------------------

def test_git_sha_comes_from_the_variable_when_set(monkeypatch):
    from titok_bench.harness import env

    monkeypatch.setenv("TITOK_GIT_SHA", "abc123")
    assert env.git_sha() == "abc123" and env.environment("cpu")["git_sha"] == "abc123"
    assert env.git_dirty() is None                     # a given commit: whether the files match it is unknown
    monkeypatch.delenv("TITOK_GIT_SHA")
    assert env.git_sha() not in (None, "abc123")       # this checkout has .git: git's commit
    assert env.git_dirty() in (True, False)            # and git says whether the tracked files differ from it


def test_a_copy_without_git_records_the_given_sha_in_its_json(tmp_path):
    """The project copied without .git (an unpacked archive): a tool's JSON carries TITOK_GIT_SHA."""
    imports = tmp_path / "imports"
    imports.mkdir()
    for name, folder in (("titok", "titok"), ("titok_kernels", "kernels"), ("titok_bench", "bench")):
        shutil.copytree(ROOT / folder, imports / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "k.json"
    env = {**os.environ, "PYTHONPATH": str(imports), "TITOK_GIT_SHA": "abc123", "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, str(imports / "titok_bench" / "kernel_bench.py"), "--device", "cpu",
                           "--quick", "--ops", "nearest_code", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text())["environment"]["git_sha"] == "abc123"

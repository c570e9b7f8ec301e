"""Test set-up: Triton runs under its CPU interpreter when no GPU is present, every test is seeded, and the
golden models of tests/data/ load by name."""
import json
import os
from pathlib import Path

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit kernel is defined (at import of titok_kernels.*).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine (a skip is not a pass)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


# ---- golden data from the official TiTok code (tests/data, made by tests/data/regenerate_goldens.py) ----
DATA_DIR = Path(__file__).resolve().parent / "data"


def golden_path(name: str) -> Path:
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"golden file missing: {path} (tests/data/ is part of the repository; "
                                "tests/data/regenerate_goldens.py re-derives its outputs)")
    return path


def golden_tokenizer(name: str):
    """(tokenizer loaded from the golden weights, its io tensors)."""
    from safetensors.torch import load_file

    from titok.configs import tokenizer_config_from_official
    from titok.loading import build_tokenizer, load_strict

    cfg = tokenizer_config_from_official(json.loads(golden_path(f"{name}.config.json").read_text()))
    model = build_tokenizer(cfg, "meta").to_empty(device="cpu")
    load_strict(model, load_file(golden_path(f"{name}.tokenizer.safetensors")), part="tokenizer", label=name)
    return model.eval(), load_file(golden_path(f"{name}.tokenizer.io.safetensors"))


def golden_generator(name: str):
    """(generator, its sampler config (`generator.cfg.sampler`), io tensors) from the golden files."""
    from safetensors.torch import load_file

    from titok.configs import generator_config_from_official
    from titok.loading import build_generator_model, load_strict

    gcfg = generator_config_from_official(json.loads(golden_path(f"{name}.config.json").read_text()))
    model = build_generator_model(gcfg, "meta").to_empty(device="cpu")
    load_strict(model, load_file(golden_path(f"{name}.generator.safetensors")), part="generator", label=name)
    return model.eval(), gcfg.sampler, load_file(golden_path(f"{name}.generator.io.safetensors"))


def snapshot(root) -> dict:
    """Every file and folder under root: relative path -> (content hash, mode) for files, "dir" for folders;
    two snapshots equal when nothing was written, replaced, created or re-moded."""
    import hashlib
    import stat

    out = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                digest = hashlib.sha256(fh.read()).hexdigest()
            out[os.path.relpath(p, root)] = (digest, stat.S_IMODE(os.stat(p).st_mode))
    return out

"""Test set-up: Triton runs under its CPU interpreter when no GPU is present, and every test is seeded."""
import os

import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit kernel is defined (at import of kernels.*).
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

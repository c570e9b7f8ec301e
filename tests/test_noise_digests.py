"""Every seeded random stream of the project, pinned by stored SHA-256 digests (`titok/noise.py` has the table).

Moving or rewriting the noise code must leave these bits unchanged: the counter-based stream of `titok sample`,
the per-step parity noise, the fast runtime's per-(seed, step) torch noise and its chunk seeds, and the token ids
that seeded reference and fast sampling give on the golden tiny generators (token ids are discrete: they do not
depend on the CPU's rounding unless two logits tie to the last bit, which these seeds do not meet).
"""
import hashlib

import pytest
import torch

from conftest import golden_generator, golden_tokenizer
from titok.pipeline import Pipeline

DIGESTS = {   # computed at 1109918, before the noise code moved into titok/noise.py
    "sample_stream": "77038df84827fa5a",
    "parity_noise": "051b3fc348f617c5",
    "torch_noise": "a9309e37167f6e4b",
    "torch_noise_seed": [6017775124710473527, 2081509580990343558, 934784229587331163],
    "chunk_seeds": [5, 4095051218741643470, 2227117907221014205],
    "tokens_tiny_vit_reference": "2c1c05b9fd06c771",
    "tokens_tiny_vit_fast": "ecc6e5fa267b86bf",
    "tokens_tiny_uvit_reference": "d38ce115215892f4",
    "tokens_tiny_uvit_fast": "9bdc3f9d1db2a5f6",
}


def _digest(*tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), t.dtype)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def test_sample_stream():
    from titok.noise import SampleNoise, uniform_at

    noise = SampleNoise(7, [0, 1, 5, 2**31 - 1], 3, 8, 64)
    flat = [t for pair in noise for t in pair]
    assert _digest(*flat) == DIGESTS["sample_stream"]
    assert float(flat[0][2, 3, 9]) == uniform_at(7, (5 << 32) | (0 << 22) | (0 << 21) | (3 * 64 + 9))


def test_parity_noise():
    from titok.noise import draw_noise

    assert _digest(*[t for pair in draw_noise(2, 8, 64, 3, seed=3) for t in pair]) == DIGESTS["parity_noise"]


def test_fast_runtime_torch_noise_and_chunk_seeds():
    from titok.noise import chunk_seeds, torch_noise, torch_noise_seed

    u, c = torch_noise(torch.zeros(2, 8, 64), seed=11, offset=2)
    assert _digest(u, c) == DIGESTS["torch_noise"]
    assert [torch_noise_seed(s, o) for s, o in ((0, 0), (11, 2), (2**64 - 1, 7))] == DIGESTS["torch_noise_seed"]
    assert chunk_seeds(5, 3) == DIGESTS["chunk_seeds"]
    assert chunk_seeds(None, 3) == [None, None, None] and chunk_seeds(5, 1) == [5]


@pytest.mark.parametrize("mode", ["reference", "fast"])
@pytest.mark.parametrize("name", ["tiny_vit", "tiny_uvit"])
def test_seeded_sampling_token_ids(name, mode):
    tok, _ = golden_tokenizer("tiny_legacy")
    gen, sampler, _ = golden_generator(name)
    pipe = Pipeline(tok, gen, mode=mode, sampler=sampler, dtype=torch.float32)
    ids = pipe.generate_tokens(torch.tensor([1, 3, 5, 7, 9]), seed=5, batch_size=2)   # three chunks
    assert _digest(ids) == DIGESTS[f"tokens_{name}_{mode}"]

"""Every random stream of titok-kernels, in one place.

| who draws | stream | defined by |
|---|---|---|
| `reference` / `compile` sampling with `seed` | `torch.manual_seed(seed)` (`seed_global_generator`), then the official draws from torch's global generator: per step `uniform_(0, 1)` over the (B, K, V) logits, then over (B, K); later chunks of one call draw on | `titok.runtimes.ReferenceRuntime` |
| `fast` sampling with `seed` | per step the (seed, offset = step index) stream: in-kernel Philox on CUDA (`titok_kernels.maskgit_step`), `torch_noise(seed, offset)` in the torch backend; chunk i > 0 of a call gets `chunk_seeds(seed, n)[i]` | `titok_kernels`, `chunk_seeds` |
| `fast` sampling without `seed` | `kernel_seed(None)`: one seed drawn from torch's global generator per chunk | `kernel_seed` |
| given noise (`titok sample`) | the counter-based stream below (`SampleNoise`, `step_noise`): sample i's uniforms depend on (seed, i) only | this module |
| parity runs | `draw_noise(seed)`: a `torch.Generator(seed)`, per step rand (B, K, V) then (B, K) | this module |
| `titok generate --seed` | `torch.manual_seed(seed)` once, then every batch draws on (as the official sampler in one process) | `titok.cli` |
| generator training | the official order from torch's global generator (`titok.training.mask_tokens`) | `titok.training` |
| random weights | `torch.Generator(seed)` per model (`titok.loading.init_random_weights`) | `titok.loading` |

There is one splitmix64 (`splitmix64`, the output function; titok_kernels.reference defines it, as the
kernels' torch backend derives its generator seeds from it and the kernels may not import titok).

Counter-based scheme (version 1, `NOISE_SCHEME`): sample i's uniforms at step s are
`splitmix64(key + c * GAMMA) >> 40` scaled to [0, 1) (24 bits, exact in fp32) at the counters
c = (i << 32) | (s << 22) | (which << 21) | j, which = 0 for the (K, V) sampling noise (j = k * V + v)
and 1 for the (K,) confidence noise (j = k), key = splitmix64(splitmix64(seed)). These are the
splitmix64 stream of `key` at positions c: every (sample, step, element) has its own position, so
streams never overlap; any step's noise is computed on its own (no state); the integer arithmetic is
exact on every device, so the uniforms are bit-identical on CPU and CUDA. tests/test_noise_digests.py
pins every stream above by stored digests.

Importing this module imports neither torch nor the kernels (the command line imports it).
"""
from __future__ import annotations

from collections.abc import Sequence

NOISE_SCHEME = "splitmix64-counter-v1"
GAMMA = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB   # splitmix64's multipliers (the tensor version below)
MAX_INDEX = 1 << 31           # sample indices below 2^31
MAX_STEPS = 1 << 10           # the step field of the counter: 10 bits, steps 0..1023
MAX_ELEMENTS = 1 << 21        # K * V below 2^21 (S-128: 128 x 4096 = 2^19)


# ---- the per-call streams of the runtimes ---------------------------------------------------------------

def seed_global_generator(seed: int) -> None:
    """`torch.manual_seed(seed)`: what the official sampler does before drawing (reference/compile runtimes)."""
    import torch

    torch.manual_seed(seed)


def kernel_seed(seed: int | None) -> int:
    """The fast runtime's noise seed: `seed`, or one drawn from torch's global generator (so that
    `torch.manual_seed` makes unseeded fast runs reproducible too, and two unseeded calls differ)."""
    if seed is not None:
        return seed
    import torch

    return int(torch.randint(0, 2**62, (1,)).item())


def chunk_seeds(seed: int | None, chunks: int) -> list:
    """The fast runtime's seeds of the chunks of one call: `seed` for the first, then draws of a
    `torch.Generator(seed)`; all None without a seed (each chunk then takes `kernel_seed(None)`)."""
    if seed is None or chunks <= 1:
        return [seed] + [None] * (chunks - 1) if chunks >= 1 else []
    import torch

    more = torch.Generator().manual_seed(seed)
    return [seed] + [int(torch.randint(0, 2**62, (1,), generator=more)) for _ in range(chunks - 1)]


def torch_noise_seed(seed: int, offset: int) -> int:
    """The torch.Generator seed of the fast runtime's (seed, offset) stream (torch backend of maskgit_step)."""
    from titok_kernels.reference import torch_noise_seed as derive

    return derive(seed, offset)


def torch_noise(logits, seed: int, offset: int):
    """(sample (B, K, V), confidence (B, K)) uniforms of the (seed, offset) stream on the logits' device."""
    from titok_kernels.reference import torch_noise as draw

    return draw(logits, seed, offset)


def draw_noise(batch: int, seq_len: int, vocab: int, steps: int, *, seed: int = 0, device="cpu") -> list:
    """Per-step uniform noise [(sample (B, K, V), confidence (B, K))] from a `torch.Generator(seed)`, for parity
    runs (the same uniforms to every runtime)."""
    import torch

    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for _ in range(steps):
        u_sample = torch.rand(batch, seq_len, vocab, generator=gen)
        u_conf = torch.rand(batch, seq_len, generator=gen)
        out.append((u_sample.to(device), u_conf.to(device)))
    return out


# ---- the counter-based stream (`titok sample`) -------------------------------------------------------------

def splitmix64(z: int) -> int:
    """The splitmix64 output function (a bijection of 64-bit integers) on a Python int."""
    from titok_kernels.reference import splitmix64 as mix

    return mix(z)


def _signed(x: int) -> int:
    """A 64-bit pattern as the int64 value with the same bits."""
    x &= _MASK64
    return x - (1 << 64) if x >> 63 else x


def noise_key(seed: int) -> int:
    """The 64-bit key of a run's noise."""
    return splitmix64(splitmix64(int(seed) & _MASK64))


def noise_counter(index: int, step: int, which: int, element: int) -> int:
    """The stream position of one uniform: sample `index`, step, which (0 sample noise, 1 confidence), element."""
    return (index << 32) | (step << 22) | (which << 21) | element


def uniform_at(seed: int, counter: int) -> float:
    """One uniform of the scheme, in pure Python: the definition the tensor code is tested against."""
    return (splitmix64(noise_key(seed) + counter * GAMMA) >> 40) * 2.0 ** -24


def _uniforms(counters, key: int):
    """int64 counters (a fresh tensor: modified in place) -> float32 uniforms in [0, 1): splitmix64 in int64
    tensor arithmetic (products wrap modulo 2^64 on CPU and CUDA alike; `>>` is arithmetic on int64, so each
    logical shift masks the sign-extended bits away)."""
    import torch

    z = counters.mul_(_signed(GAMMA)).add_(_signed(key))
    t = torch.empty_like(z)
    for shift, mult in ((30, _MIX1), (27, _MIX2)):
        torch.bitwise_right_shift(z, shift, out=t)
        z.bitwise_xor_(t.bitwise_and_((1 << (64 - shift)) - 1)).mul_(_signed(mult))
    torch.bitwise_right_shift(z, 31, out=t)
    z.bitwise_xor_(t.bitwise_and_((1 << 33) - 1))
    del t
    z.bitwise_right_shift_(40).bitwise_and_((1 << 24) - 1)
    return z.to(torch.float32).mul_(2.0 ** -24)


def check_indices(idx, seq_len: int, vocab: int) -> None:
    """Sample indices (1-D int64) and the (K, V) size fit the counters (ValueError otherwise)."""
    import torch

    if idx.dim() != 1:
        raise ValueError(f"indices must be 1-D, got shape {tuple(idx.shape)}")
    if idx.numel():
        lo, hi = torch.stack([idx.min(), idx.max()]).tolist()  # one device-to-host copy
        if lo < 0 or hi >= MAX_INDEX:
            raise ValueError(f"sample indices must lie in [0, 2^31), got {lo}..{hi}")
    if seq_len * vocab >= MAX_ELEMENTS:
        raise ValueError(f"K x V = {seq_len} x {vocab} is too large for the noise counters (< 2^21)")


def step_noise(seed: int, indices, step: int, seq_len: int, vocab: int, device=None, *, checked: bool = False):
    """(u_sample (B, K, V), u_conf (B, K)) fp32 uniforms of sampling step `step` for the samples `indices`
    (on the indices' device, or `device`)."""
    import torch

    idx = torch.as_tensor(indices, dtype=torch.int64, device=device)
    if not checked:
        check_indices(idx, seq_len, vocab)
    if not 0 <= step < MAX_STEPS:
        raise ValueError(f"step must lie in [0, {MAX_STEPS}), got {step}")
    key = noise_key(seed)
    base = (idx << 32) | (step << 22)
    arange = torch.arange(seq_len * vocab, device=idx.device, dtype=torch.int64)
    u_sample = _uniforms(base[:, None] + arange, key).view(-1, seq_len, vocab)
    u_conf = _uniforms((base | (1 << 21))[:, None] + arange[:seq_len], key)
    return u_sample, u_conf


class SampleNoise(Sequence):
    """The `noise` argument of `Pipeline.generate_tokens` for a batch of sample indices: one
    (u_sample (B, K, V), u_conf (B, K)) pair per step, computed when asked for, on the indices'
    device (memory: one step's worth, whatever the number of steps). `Pipeline` checks the shapes
    by iterating once, so each step's noise is computed twice (cheap next to a generator forward)."""

    def __init__(self, seed: int, indices, num_steps: int, seq_len: int, vocab: int, device=None):
        import torch

        self.seed, self.num_steps, self.seq_len, self.vocab = int(seed), int(num_steps), seq_len, vocab
        self.indices = torch.as_tensor(indices, dtype=torch.int64, device=device)
        check_indices(self.indices, seq_len, vocab)  # once (one host sync per batch on CUDA), not per step

    def __len__(self) -> int:
        return self.num_steps

    def __getitem__(self, step):
        if isinstance(step, slice):
            return [self[s] for s in range(*step.indices(self.num_steps))]
        if step < 0:
            step += self.num_steps
        if not 0 <= step < self.num_steps:
            raise IndexError(f"step {step} out of range for {self.num_steps} steps")
        return step_noise(self.seed, self.indices, step, self.seq_len, self.vocab, checked=True)

"""Sampling at scale: class-conditional evaluation sets (50,000 ImageNet samples for FID) for `titok sample`.

`titok sample` generates `len(classes) x num_per_class` samples into a folder, in shards that are
written atomically, resumable after any crash, spread over any number of processes and machines
launched by `torchrun`, and assembles at the end the `.npz` the ADM/guided-diffusion evaluation suite
reads (`arr_0`: uint8 N x H x W x 3, plus `labels`). The logic lives in this package
(`plan`, `dist`, `manifest`, `shards`, `archive`, `progress`, `run`); `titok/cli/sample.py` declares the
command.

Output folder (OUT):

    manifest.json       the settings of the run (model identity, sampler, classes, N, seed, mode, dtype,
                        device type, noise scheme, shard and decode sizes); a restart must match it
    samples/            one PNG per sample, named by index and class: 000123_c0123.png (--no-png: none)
    shards/             shard_00012.npz: images, labels, tokens of samples [12*S, 13*S) (the resume state;
                        removed once samples.npz is written unless --keep-shards)
    samples.npz         arr_0 uint8 (N, H, W, 3), labels int64 (N,): the evaluation suite's sample batch
    tokens.npy          (N, K) int64 token ids (`titok decode OUT/tokens.npy` turns them back into images)
    summary.json        samples, wall time, samples/s (aggregate and per device), settings, one entry per run

Sample i has class `classes[i % len(classes)]` (the official script's order: every prefix of the set
is class-balanced). Shard j holds samples [j*S, (j+1)*S) (S = --shard-size); pending shards are dealt
to the ranks round-robin; batches start at the shard's start, so a sample is computed in the same
batch shape and position whatever the number of processes and however often the run was resumed.

Randomness: sample i's uniforms depend on (seed, i) only (the counter-based scheme of `titok.noise`, passed to
`Pipeline.generate_tokens(noise=...)`), never on the batch, the rank or the run. Decoding runs in
chunks of exactly --decode-batch-size rows (the last one padded): the CPU's convolution algorithm
choice depends on the batch size (measured: up to 15/255 in bf16), a fixed chunk removes that. On a
CPU every generation batch and decode chunk runs with ONE intra-op thread, several at once
(`titok.cpu_threads.ItemRunner`): kernels that round by thread count (oneDNN on Intel/AMX) cannot
make the set depend on the thread count. docs/sampling-at-scale.md has the guarantees.

Noise: the counter-based stream of `titok.noise` (`SampleNoise`), scheme `titok.noise.NOISE_SCHEME`.

Test hook: TITOK_SAMPLE_TEST_EXIT="RANK:N" makes that rank exit (status 3, as a crash) right after
writing its N-th shard.
"""
from __future__ import annotations

from titok.evalset.archive import assemble, read_npz_header, write_npz_streaming
from titok.evalset.dist import DistContext, init_distributed
from titok.evalset.manifest import pixel_dependencies, prepare_output, read_manifest, settings_differences, weights_digest
from titok.evalset.plan import DEFAULT_DECODE_BATCH, DEFAULT_SHARD, FORMAT, TEST_EXIT_ENV, EvalPlan, Layout, parse_classes
from titok.evalset.run import run_sample
from titok.evalset.settings import SampleSettings
from titok.evalset.shards import decode_fixed, generate_shard
from titok.noise import MAX_STEPS

__all__ = ["DEFAULT_DECODE_BATCH", "DEFAULT_SHARD", "FORMAT", "MAX_STEPS", "TEST_EXIT_ENV", "DistContext", "EvalPlan",
           "Layout", "SampleSettings", "assemble", "decode_fixed", "generate_shard", "init_distributed", "parse_classes",
           "pixel_dependencies", "prepare_output", "read_manifest", "read_npz_header", "run_sample",
           "settings_differences", "weights_digest", "write_npz_streaming"]

"""The benchmark harness of titok-kernels (imported as `titok_bench.harness`); the tools in bench/ are thin on it.

- `timing`: CUDA-event / perf_counter timing, median / p20 / p80, interleaving, per-pair ratios;
- `graph_timing`: per-call GPU time from CUDA-graph replays (N calls captured in one graph);
- `micro`: kernel micro-benchmark rows (eager + graph time, cost, L2 fit, error rows);
- `env`: `--device` parsing, the environment block, device peaks, memory, the CPU-share check;
- `nvml`: NVML readings during a run;
- `cli`: one-line errors and exit statuses (2 usage, 130 interrupted), argument and output-path checks;
- `results`: atomic writers (titok's), the shared JSON-Schema blocks, validation;
- `models`: what a row runs (TiTok variants and the MaskGIT baseline through `titok.pipeline.Pipeline`,
  DiT-XL/2 through diffusers);
- `measure`: the row loop (interleaved groups, out-of-memory rows, stage timing, speed-ups);
- `report` / `plots`: rich tables and figures made from the result rows.
"""
from titok_bench.harness.env import device_peaks, device_slug, environment, parse_device
from titok_bench.harness.timing import Timing, micro_settings, summarize_ms, time_chain, time_fn

__all__ = ["Timing", "device_peaks", "device_slug", "environment", "micro_settings", "parse_device", "summarize_ms",
           "time_chain", "time_fn"]

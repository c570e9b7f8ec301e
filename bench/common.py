"""Compatibility re-export for bench/ops/*.py until they import `titok_bench.harness` (its successor)."""
from titok_bench.harness import device_peaks, time_fn

__all__ = ["device_peaks", "time_fn"]

"""Result files: atomic writers, the JSON-Schema blocks every result file shares, validation.

Writers: every file a bench tool writes goes through titok's atomic writers (a temporary name in the
same folder, then a rename): `write_json` is `titok.outputs.save_json`; `write_atomic(path, write)`
runs `write(tmp_path)` (matplotlib's savefig, a text writer, the profiler's trace export) the same
way. An interrupted run therefore leaves either the previous file or the complete new one.
"""
from __future__ import annotations

import json
from pathlib import Path

from titok.outputs import atomic_write, save_json

from titok_bench.harness.nvml import NVML_FIELDS

write_json = save_json


def write_atomic(path, write) -> None:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it to `path`."""
    atomic_write(Path(path), lambda tmp: write(str(tmp)))


def write_text(path, text: str) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)
    write_atomic(path, write)


def jsonable(payload):
    """The payload as it reads back from JSON (tuples -> lists, keys -> strings)."""
    return json.loads(json.dumps(payload))


def validate_json(payload: dict, schema_path: str) -> None:
    """Validate a payload against a JSON-Schema file (draft 2020-12); ValueError listing the errors."""
    import jsonschema

    with open(schema_path) as f:
        schema = json.load(f)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(jsonable(payload)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors[:10]]
        raise ValueError(f"{len(errors)} schema error(s) against {schema_path}:\n  " + "\n  ".join(lines))


_STAT = {"type": ["object", "null"], "properties": {k: {"type": "number"} for k in ("min", "p50", "max", "mean")},
         "required": ["min", "p50", "max", "mean"]}

# The NVML block: `static` (NvmlMonitor.static_info) and `during_run` (NvmlMonitor.summary).
NVML_SCHEMA = {
    "type": ["object", "null"],
    "properties": {
        "static": {"type": ["object", "null"]},
        "during_run": {
            "type": ["object", "null"],
            "properties": {"samples": {"type": "integer", "minimum": 1}, "interval_s": {"type": "number"},
                           "seconds": {"type": "number"}, **{f: _STAT for f in NVML_FIELDS}},
            "required": ["samples", *NVML_FIELDS],
        },
    },
    "required": ["static", "during_run"],
}

_CEILING_ENTRY = {"type": "object", "properties": {
    "reps": {"type": "integer", "minimum": 1}, "p50_ms": {"type": "number"}, "min_ms": {"type": "number"},
    "error": {"type": "string", "description": "why this measurement failed (the others stand)"}}}

# Measured ceilings (titok_bench.harness.ceilings.measure_ceilings): null when not measured (--no-ceilings).
CEILINGS_SCHEMA = {
    "type": ["object", "null"],
    "description": "this device's own ceilings, measured at the start of the run (titok_bench.harness.ceilings): "
                   "dense N^3 matmuls per math mode (TFLOP/s = 2 N^3 / median call) and a copy (GB/s = bytes read "
                   "+ written / median call); on a CPU the CPU's fp32 and bf16 rates; null when skipped",
    "properties": {
        "device_type": {"enum": ["cuda", "cpu"]},
        "matmul": {"type": "object", "description": "math-mode key (bf16, fp16, tf32, fp32) -> measurement",
                   "additionalProperties": {**_CEILING_ENTRY, "properties": {
                       **_CEILING_ENTRY["properties"], "n": {"type": "integer"}, "dtype": {"type": "string"},
                       "tf32": {"type": "boolean"}, "tflops": {"type": "number"},
                       "n_asked": {"type": "integer", "description": "the size asked for, where the CPU's probe "
                                   "found one call of it over the budget (an emulated dtype) and N was halved"},
                       "n_reason": {"type": "string"}}, "required": ["n", "dtype"]}},
        "copy": {**_CEILING_ENTRY, "properties": {**_CEILING_ENTRY["properties"], "bytes": {"type": "integer"},
                                                  "counted": {"type": "string"}, "gbps": {"type": "number"}},
                 "required": ["bytes"]},
        "seconds": {"type": "number"},
        "threads": {"type": ["integer", "null"]},
        "method": {"type": "string"},
    },
    "required": ["device_type", "matmul", "copy", "seconds", "method"],
}

# The environment block of every result file (`env.environment()`, plus keys a tool adds, e.g. "nvml").
ENVIRONMENT_SCHEMA = {
    "type": "object",
    "properties": {
        "command": {"type": "string"},
        "timestamp": {"type": "string"},
        "git_sha": {"type": ["string", "null"]},
        "git_dirty": {"type": ["boolean", "null"]},
        "python": {"type": "string"},
        "torch": {"type": "string"},
        "triton": {"type": ["string", "null"]},
        "cuda": {"type": ["string", "null"]},
        "device_type": {"type": "string"},
        "device_name": {"type": "string"},
        "cpu_threads": {"type": "integer"},
        "peaks": {
            "type": ["object", "null"],
            "properties": {"family": {"type": "string"}, "bandwidth_gbps": {"type": "number"},
                           "tflops": {"type": "object", "additionalProperties": {"type": "number"}}},
            "required": ["family", "bandwidth_gbps", "tflops"],
        },
        "nvml": NVML_SCHEMA,
        "ceilings": CEILINGS_SCHEMA,
    },
    "required": ["command", "timestamp", "git_sha", "python", "torch", "triton", "cuda", "device_type",
                 "device_name", "cpu_threads", "peaks"],
}

"""Which CPU this is: the facts every CPU figure and every CPU-dependent guarantee names.

`cpu_identity()` reads /proc/cpuinfo once (model name, vendor, family, model, stepping, and the ISA flags
that decide bf16 speed and rounding: AVX2, AVX-512, AVX512-BF16, AMX); `cpu_label()` is one line of it,
e.g. "AMD EPYC (AuthenticAMD family 26 model 2; avx512_bf16)". Off Linux: `platform.processor()`.
"""
from __future__ import annotations

import functools
import platform

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
_LABEL_FLAGS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")   # the first one present names the bf16 path


@functools.lru_cache(maxsize=1)
def cpu_identity() -> dict:
    """{model_name, vendor_id, cpu family, model, stepping, flags (those of ISA_FLAGS present)}."""
    model, flags, ids = platform.processor() or platform.machine() or "unknown", set(), {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name" and model != value and "model_name" not in ids:
                    model, ids["model_name"] = value, value
                elif key in ("cpu family", "model", "stepping", "vendor_id") and key not in ids:
                    ids[key] = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    ids.pop("model_name", None)
    return {"model_name": model, **ids, "flags": [f for f in ISA_FLAGS if f in flags]}


def cpu_label() -> str:
    """One line: model name (vendor family F model M; the widest bf16-relevant ISA flag)."""
    ident = cpu_identity()
    where = " ".join(p for p in (ident.get("vendor_id"),
                                 f"family {ident['cpu family']}" if "cpu family" in ident else None,
                                 f"model {ident['model']}" if "model" in ident else None) if p)
    isa = next((f for f in _LABEL_FLAGS if f in ident["flags"]), None)
    inside = "; ".join(p for p in (where, isa) if p)
    return f"{ident['model_name']} ({inside})" if inside else ident["model_name"]

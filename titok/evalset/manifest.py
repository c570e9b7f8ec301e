"""The settings of a run (manifest.json): writing them, comparing a restart with them, what the pixels depend on."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from titok.evalset.plan import FORMAT, Layout


def weights_digest(*modules) -> str:
    """sha256 over the modules' state dicts (names, dtypes, shapes, bytes): the identity of the weights."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            t = t.detach().cpu().contiguous()
            h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def settings_differences(old: dict, new: dict) -> list[str]:
    a, b = _flatten(old), _flatten(new)
    diffs = []
    for k in sorted(set(a) | set(b)):
        if a.get(k, "<unset>") != b.get(k, "<unset>"):
            show = [json.dumps(x.get(k, "<unset>"))[:60] for x in (a, b)]
            diffs.append(f"{k} {show[0]} there, {show[1]} now")
    return diffs


def pixel_dependencies(device_type: str) -> dict:
    """What, besides the settings, the samples' bits depend on (recorded in manifest.json, not compared)."""
    import platform

    import torch

    if device_type == "cpu":
        from titok.cpu_info import cpu_label
        from titok.cpu_threads import THREADS_PER_ITEM

        return {"intra_op_threads_per_item": THREADS_PER_ITEM, "cpu": cpu_label(), "machine": platform.machine(),
                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
                "not": "the thread count, the number of processes, the batch size, resumes"}
    return {"device": device_type, "torch": torch.__version__, "batch_size": "yes: the GPU's kernels are chosen by "
            "shape (keep --batch-size to reproduce a set)", "not": "the number of processes, resumes"}


def prepare_output(layout: Layout, settings: dict, sources: dict | None = None) -> tuple[str, str]:
    """Rank 0, before any work: ("new" | "resume" | "complete" | "error", message). A new folder gets
    manifest.json: `settings` (compared on every restart: the model by its configs and weights digest)
    and `sources` (where the weights came from; recorded, not compared)."""
    from titok.images import save_json

    out = layout.out
    settings = json.loads(json.dumps(settings))  # as it reads back from the file (tuples become lists)
    if out.exists() and not out.is_dir():
        return "error", f"--out {out} is a file; give a folder (it is created if missing)"
    if layout.manifest.is_file():
        old, error = read_manifest(layout.manifest, out)
        if old is None:
            return "error", error
        diffs = settings_differences(old["settings"], settings)
        if diffs:
            return "error", _other_settings(out, diffs)
        here = json.loads(json.dumps(pixel_dependencies(settings.get("device_type", "cpu"))))
        if old.get("pixels_depend_on") != here and not layout.npz.is_file():
            print(f"titok sample: note: {out} was started with {json.dumps(old.get('pixels_depend_on'))[:200]}; "
                  f"here: {json.dumps(here)[:200]}: the shards made here may differ in the last bits of their "
                  "pixels from a run made there", file=sys.stderr)
        return ("complete" if layout.npz.is_file() else "resume"), ""
    if layout.npz.exists() or layout.shards.exists():
        return "error", f"{out} holds samples.npz or shards/ but no manifest.json: not a titok sample folder; " \
                        "give another --out"
    try:
        import torch

        save_json(layout.manifest, {"format": FORMAT, "settings": settings, "sources": sources or {},
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                    "environment": {"torch": torch.__version__, "python": sys.version.split()[0]},
                                    "pixels_depend_on": pixel_dependencies(settings.get("device_type", "cpu"))})
    except OSError as exc:
        return "error", f"--out {out}: cannot write there ({exc.strerror or type(exc).__name__})"
    return "new", ""


def read_manifest(manifest: Path, out: Path) -> tuple[dict | None, str]:
    """(manifest, "") of a folder that has one, or (None, why it cannot be resumed: unreadable, another format)."""
    try:
        old = json.loads(manifest.read_text())
        old["settings"].items()
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{manifest} is unreadable ({type(exc).__name__}); use another --out"
    if old.get("format") != FORMAT:
        return None, (f"{out} was made by another version of titok sample (format {old.get('format')!r}, "
                      f"this one writes {FORMAT!r}: on a CPU its pixels depended on the thread count); "
                      "give another --out")
    return old, ""


def _other_settings(out: Path, diffs: list[str]) -> str:
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    return (f"{out} holds a run with other settings: {'; '.join(diffs[:3])}{more}. Run the same command to resume "
            "it, or give another --out")


def _remove_stale_temporaries(layout: Layout) -> None:
    """Temporary files a killed run left: `.NAME.XXXXXXXX.tmp` (titok.images' temporary names) in shards/ and
    samples/, and in OUT for the names this command writes there."""
    import re

    pattern = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.tmp$")
    ours = {p.name for p in (layout.manifest, layout.npz, layout.tokens, layout.summary)}
    for folder in (layout.out, layout.shards, layout.samples):
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            m = pattern.match(p.name)
            if m and (folder != layout.out or m.group(1) in ours) and p.is_file():
                try:
                    p.unlink()
                except OSError:
                    pass

#!/usr/bin/env bash
# Download, on a machine WITH network, the wheels of the Python packages that the GPU machine lacks, so that
# they travel with the GPU check (bench/gpu_check.sh installs them there, offline, into a --target folder).
#
#   bash bench/fetch_gpu_wheels.sh            # -> .whl/ at the repository root (git-ignored: /.whl/)
#   bash bench/fetch_gpu_wheels.sh DIR        # -> DIR
#   bash bench/fetch_gpu_wheels.sh --list     # print the pinned list, download nothing
#
# The target GPU machine (an offline H200 box; any machine without network alike) runs Python 3.12 (cp312, x86-64 manylinux) with
# torch 2.11, triton 3.6, numpy 2.5 and a long list of packages, and reaches no registry. Of what this
# project needs there, it has: numpy, safetensors 0.8.0, pillow, rich, matplotlib, nvidia-ml-py (pynvml),
# scipy, huggingface-hub 1.33.0, pytest, hypothesis, pytest-benchmark, pytest-xdist, pytest-timeout, attrs,
# typing-extensions, packaging, regex, requests, filelock. It LACKS, and so these travel:
#
#   diffusers                  the DiT-XL/2 baseline of `--compare paper` (bench/baselines/dit.py). Its needs
#                              are all on the machine (huggingface-hub>=1.32: 1.33.0 there; safetensors>=0.8:
#                              0.8.0 there; numpy, Pillow, regex, requests, filelock); importlib_metadata is
#                              imported by diffusers only on Python < 3.8, so it does not travel.
#   jsonschema                 validation of the result files against bench/schema_sampling.json
#   + jsonschema-specifications, referencing (pure Python) and rpds-py (binary: the cp312 manylinux wheel).
#     attrs and typing-extensions, their other needs, are on the machine.
#
# One version of each (two stop the whole install there): older wheels of a pinned name are removed from DIR.
# The versions are those this project is tested with here. Total about 7 MB (limit for what travels with a
# device call: 64 MiB with the working tree, whose tests/data/ is about 14 MiB; this script fails above 40 MiB).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
MAX_MIB="${MAX_WHEEL_MIB:-40}"

PINS=(
  "diffusers==0.42.1"
  "jsonschema==4.26.0"
  "jsonschema-specifications==2025.9.1"
  "referencing==0.37.0"
  "rpds-py==2026.9.1"
)
# What the target GPU machine (Python 3.12, torch 2.11, triton 3.6) already has, normalised names, for the needs check below.
ON_MACHINE="attrs typing-extensions huggingface-hub safetensors numpy pillow regex requests filelock zipp
packaging rich matplotlib scipy pytest hypothesis pytest-benchmark nvidia-ml-py torch triton"
# Declared needs that are never imported there: diffusers imports importlib_metadata only on Python < 3.8.
NOT_IMPORTED="importlib-metadata"

if [ "${1:-}" = "--list" ]; then printf '%s\n' "${PINS[@]}"; exit 0; fi
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then sed -n '2,26p' "$0"; exit 0; fi
DEST="${1:-$ROOT/.whl}"
mkdir -p "$DEST"

# Remove other versions of the pinned names (wheel file names use the name with '-' -> '_').
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"; version="${pin##*==}"; stem="${name//-/_}"
  for f in "$DEST"/*.whl; do
    [ -e "$f" ] || continue
    base="$(basename "$f")"
    b_name="${base%%-*}"; rest="${base#*-}"; b_version="${rest%%-*}"
    if [ "${b_name,,}" = "${stem,,}" ] && [ "$b_version" != "$version" ]; then
      echo "removing $base (pinned: $pin)"; rm -f "$f"
    fi
  done
done

"$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PINS[@]}"

# Needs check: every non-extra requirement of every wheel (markers evaluated for CPython 3.12 on Linux) must
# be carried or already on the machine.
"$PYTHON" - "$DEST" "$ON_MACHINE $NOT_IMPORTED" "${PINS[@]}" <<'EOF'
import re, sys, zipfile
from pathlib import Path
dest, on_machine, pins = Path(sys.argv[1]), sys.argv[2].split(), sys.argv[3:]
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
carried = {norm(p.split("==")[0]) for p in pins}
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
try:
    from packaging.markers import Marker
except ImportError:
    Marker = None
missing = []
for whl in sorted(dest.glob("*.whl")):
    with zipfile.ZipFile(whl) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        lines = z.read(meta).decode("utf-8", "replace").splitlines()
    for line in lines:
        if not line.startswith("Requires-Dist:"):
            continue
        req, _, marker = line[len("Requires-Dist:"):].partition(";")
        if "extra" in marker:
            continue
        if marker.strip() and Marker is not None and not Marker(marker.strip()).evaluate(env):
            continue
        name = norm(re.split(r"[ <>=!~\[(;]", req.strip(), maxsplit=1)[0])
        if name not in carried and name not in on_machine:
            missing.append(f"{whl.name}: {req.strip()}")
if missing:
    print("needs neither carried nor on the GPU machine:\n  " + "\n  ".join(missing))
    sys.exit(1)
print("needs check: every requirement is carried or on the GPU machine")
EOF

total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "wheels in $DEST:"
ls -l "$DEST"/*.whl | awk '{printf "  %9d  %s\n", $5, $NF}'
echo "total: $total bytes ($(( total / 1048576 )) MiB; limit ${MAX_MIB} MiB)"
if [ "$total" -gt $(( MAX_MIB * 1048576 )) ]; then
  echo "error: the wheels exceed ${MAX_MIB} MiB: the working tree + carry must stay under 64 MiB" >&2
  exit 1
fi

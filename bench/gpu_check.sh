#!/usr/bin/env bash
# The GPU check: every GPU test and benchmark of the project, in six stages of at most ~7.5 minutes each by
# their written estimates, so that each fits one command under a 10-minute limit (a CI job, a batch slot).
#
#   bash bench/gpu_check.sh --stage 1       # GPU tests, main-job table (bf16, fp32), parity, kernel benchmarks
#   bash bench/gpu_check.sh --stage 2       # --compare paper (paper protocol), --compare tokens (Fig. 4d)
#   bash bench/gpu_check.sh --stage 3       # --compare paper, best protocol, 256 px (DiT-XL/2 compiled)
#   bash bench/gpu_check.sh --stage 4       # --compare paper, best protocol, 512 px
#   bash bench/gpu_check.sh --stage 5       # the profile, then the torch.compile rows in bf16
#   bash bench/gpu_check.sh --stage 6       # the torch.compile rows in fp32
#   bash bench/gpu_check.sh --rehearse      # every stage's commands on CPU at tiny sizes (the plumbing test)
#   bash bench/gpu_check.sh --dry-run       # print the steps; run nothing, write nothing
#   options: --stage N[,N] (default: all six, one after the other), --steps NAME[,NAME] (only these steps), -h
#
# Outputs: each step writes into a work folder ($GPU_CHECK_WORK or a temporary one); after EVERY step that
# folder is packed into $OUT/gpu_check_stageN.tgz, and the summary is copied to $OUT/gpu_check_stageN.txt,
# so a command cut off at its limit still returns everything done so far ($OUT: 2 files per stage). Every
# step runs under `timeout` (SIGINT, then SIGKILL 20 s later), clipped to what is left of the stage budget
# ($GPU_CHECK_BUDGET, default 570 s). The clock starts when the script starts: the set-up (wheel install,
# the CUDA probe) counts in the first stage's budget. Every step runs even if an earlier one failed; the
# exit status is the number of failed steps (listed in stageN.summary.txt).
#
# Set-up, offline: the wheels in .whl/ (bench/fetch_gpu_wheels.sh downloads them on a machine with network:
# diffusers, jsonschema + needs) are installed with `pip install --no-index --no-deps --target` into a
# temporary folder put first on PYTHONPATH; the project goes on PYTHONPATH under its import names through a
# temporary folder of symbolic links (titok -> titok/, titok_kernels -> kernels/, titok_bench -> bench/): no
# pip install of the project, no build backend needed. A machine with network can instead `pip install -e
# ".[test,bench]"` and leave .whl/ empty.
#
# Environment: PYTHON (default python3), OUT, GPU_CHECK_WHEELS (default .whl), GPU_CHECK_BUDGET (s per stage),
# GPU_CHECK_TIMEOUT_<step> (s; overrides one step's timeout), GPU_CHECK_WORK, GPU_TESTS_WORKERS (pytest-xdist
# workers for the GPU tests, default 4 where xdist is installed; 0: serial), GPU_CHECK_KEEP=1 (keep temp dirs),
# TITOK_GIT_SHA (the commit to record when the copy has no .git).
#
# ---- Time estimates (H200 SXM, cold caches: a fresh machine per stage; profiles/README.md has the table) ----
# Rates. Measured on an H200: 788 TFLOP/s for a bf16 8192^3 matmul, 4.3 TB/s copy. Datasheet: bf16 dense 989,
# TF32 dense 494, fp32 67 TFLOP/s. Assumed end to end, at these shapes:
#   bf16 TiTok/MaskGIT, batch >= 16: 250 TFLOP/s (fast: 200 in --compare's batch 16); fp32 + TF32, eager: 120
#   (100 at batch 16); fp32 without TF32 (the training step's reference): 50; DiT-XL/2 fp32 + TF32 eager 150,
#   bf16 compiled 400. Batch 1 is launch-bound: ~6,300 kernels per titok-l-32 generation x ~12 us = ~75 ms
#   eager, ~15 ms under a CUDA graph.
# Fixed costs: a Python process (import torch, CUDA context, priming) 15 s; titok-l-32 built with random weights
# 10 s; each --compare model 3 s; a TiTok-B + MaskGIT-ViT pair of the token sweep 8 s. Triton JIT ~1-1.5 s per
# kernel variant. Inductor, cold: 30-120 s per graph (central 50 s); a compile row compiles the generator and
# the decoder, each twice (batch 1 static, then dynamic): 4 graphs.
# FLOPs per image (titok.flops, bench/baselines; 2 per multiply-add): titok-l-32 0.544 TFLOP; --compare 256 px:
# L-32 0.544, B-64 0.588, S-128 9.949, MaskGIT 1.575 (sum 12.66), DiT-XL/2 118.67 sampling (250 steps x 2 CFG
# forwards) + 0.62 decode; 512 px: L-64 1.298, B-128 6.645, MaskGIT 10.574 (sum 18.52), DiT-XL/2 524.58 + 2.51.
# Token sweep (K = 16..256, titok_bench.harness.token_sweep): sampling 0.32..1.64 TFLOP/img (sum over the 7 K:
# 5.9); training 6 x 177M x K FLOP per token-row (batch 64, K = 256: 17.4 TFLOP a step; sum over K: 53).
#
# Stage 1 (the one that matters most): ~6.0 min
#   env  set-up + imports, versions, nvidia-smi -> 20 s                                         (limit  60 s)
#   gpu_tests  pytest -m gpu: ~150 Triton variants x 1-1.5 s of JIT spread over 4 xdist workers, 2 tests with
#              inductor compiles 45 s, runs 20 s, start 15 s -> 120 s (serial: 290)             (limit 330 s)
#   sampling_l32_bf16  batch 1,32,256 x (2 warm-up + 5 timed + ~3 stage passes) = 289 x 10 x 0.544 = 1572
#              TFLOP x 2 pipelines at 250 = 13 s; graphs + autotune 10 s; start+build+prime+ceilings 35 s -> 60 s
#                                                                                              (limit 150 s)
#   sampling_l32_fp32  the same at 120 TFLOP/s: 26 + 10 + 35 -> 72 s                          (limit 180 s)
#   parity     batch 32, 5 parts, ~6 generation-equivalents + an fp64 decode of 4 images: 1-3 s; start+builds
#              25 s; kernel compiles 10 s -> 40 s                                                (limit 120 s)
#   kernel_bench  ~33 (op, case, provider) rows x (55 eager calls + a graph capture + 22 replays) = ~10 s;
#              ~20 kernel variants 20 s; start 15 s -> 45 s                                       (limit 120 s)
# Stage 2 (the paper protocol, the token sweep): ~5.3 min
#   env  -> 20 s                                                                                (limit  60 s)
#   compare_paper  batch 16, warm-up 1 + 2 timed = 48 images a model, fp32 + TF32 eager; DiT-XL/2 timed over
#              64 of its 250 steps and projected (its steps cost the same): TiTok+MaskGIT (12.66 + 18.52) x 48 =
#              1496 TFLOP at 100 = 15 s; DiT (64/250 x 118.67 + 0.62 + 64/250 x 524.58 + 2.51) x 48 = 8054 at
#              150 = 54 s; start 15 s, builds 27 s -> 111 s                                       (limit 240 s)
#   tokens     sampling: 5.9 x 32 images x 8 calls = 1510 TFLOP a pipeline: reference at 120 = 13 s, fast at 250
#              = 6 s; fast graphs + JIT per K 7 x 6.5 = 45 s; training: 53 x 8 steps = 427 TFLOP: reference at 50 =
#              9 s, fast at 250 = 2 s, the fused loss's JIT 6 s; the K=32/K=256 groups 15 s; builds 7 x 8 + 8 =
#              64 s; start 15 s -> 185 s                                                         (limit 300 s)
# Stage 3 (best protocol, 256 px): ~3.0 min (upper end of the inductor range: 5.6 min)
#   env  -> 20 s                                                                                (limit  60 s)
#   compare_best_256  bf16, batch 16, 48 images: TiTok+MaskGIT fast 12.66 x 48 = 608 TFLOP at 200 = 3 s; DiT
#              compiled (64/250 x 118.67 + 0.62) x 48 = 1488 at 400 = 4 s; inductor: DiT transformer + VAE
#              decoder, 2 graphs, 80 s (60-240); CUDA graphs + JIT 4 x 10 = 40 s; start 15 + builds 15 s -> 157 s
#                                                                                              (limit 360 s)
# Stage 4 (best protocol, 512 px): ~3.2 min (upper end of the inductor range: 5.7 min)
#   env  -> 20 s                                                                                (limit  60 s)
#   compare_best_512  18.52 x 48 = 889 TFLOP at 200 = 4 s; DiT (64/250 x 524.58 + 2.51) x 48 = 6566 at 400 =
#              16 s; inductor 2 graphs 95 s (60-240); graphs + JIT 3 x 10 = 30 s; start 15 + builds 12 s -> 172 s
#                                                                                              (limit 360 s)
# Stage 5 (the profile, the compile rows in bf16): ~4.9 min (upper end: 9.6 min, clipped by the budget)
#   env  -> 20 s                                                                                (limit  60 s)
#   profile    fast bf16 batch 64, eager (no CUDA graph: the profiler sees the operators): ~10 passes x 64 x
#              0.544 = 348 TFLOP at 150 = 2 s; profiler passes and autotune 20 s; start+build 25 s -> 48 s
#                                                                                              (limit 120 s)
#   sampling_l32_compile_bf16  batch 1,32,256, warm-up 1 + 3 timed, no stage timing: inductor 4 graphs x 50 s =
#              200 s (120-480); 289 x 4 x 0.544 = 629 TFLOP at 250 = 3 s; start+build 25 s -> 228 s (limit 330 s)
# Stage 6 (the compile rows in fp32): ~4.2 min (upper end: 8.8 min, clipped by the budget)
#   env  -> 20 s                                                                                (limit  60 s)
#   sampling_l32_compile_fp32  200 s + 629 TFLOP at 120 = 5 s + 25 s -> 230 s                     (limit 330 s)
# ------------------------------------------------------------------------------------------------------------
set -u
CLOCK0=$(date +%s)   # the budget clock: the set-up counts in the first stage
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 1

usage() { sed -n '2,13p' "$0"; }
DRY=0; REHEARSE=0; STAGES=""; ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --rehearse) REHEARSE=1 ;;
    --stage) shift; STAGES="${STAGES:+$STAGES,}${1:-}" ;;
    --stage=*) STAGES="${STAGES:+$STAGES,}${1#--stage=}" ;;
    --steps) shift; ONLY="${1:-}" ;;
    --steps=*) ONLY="${1#--steps=}" ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$STAGES" ] || [ "$STAGES" = all ] && STAGES="1,2,3,4,5,6"
for s in ${STAGES//,/ }; do
  case "$s" in 1|2|3|4|5|6) ;; *) echo "gpu_check: --stage takes 1 to 6 or all, got '$s'" >&2; exit 2 ;; esac
done

PY="${PYTHON:-python3}"
OUT="${OUT:-$ROOT/out/gpu_check}"
case "$OUT" in /*) ;; *) OUT="$ROOT/$OUT" ;; esac
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
BUDGET="${GPU_CHECK_BUDGET:-570}"

# ---- sizes: the real run, or the CPU rehearsal (same commands, tiny models, batch 1, one iteration) --------
if [ "$REHEARSE" = 1 ]; then
  MODE="rehearsal (CPU, tiny sizes)"
  DEV="--device cpu"; L32=tiny-titok; MAIN_B=1; MAIN_IT="--iters 1 --warmup 1 --stage-iters 1"
  PARITY="--model tiny --batch-size 1"; CMP=tiny; CMP_SIZE="--batch-sizes 1 --iters 1 --warmup 1 --project-steps 2"
  RES_LO=64; RES_HI=64; TOKENS="--compare tiny-tokens --token-counts 32,256 --iters 1 --warmup 0 --train-batch-size 2"
  PROF="--model tiny --batch-size 1 --iters 1"; KB_SIZE="--quick"; COMPILE_B=1; COMPILE_IT="--iters 1 --warmup 1"
else
  MODE="GPU"
  DEV=""; L32=titok-l-32; MAIN_B=1,32,256; MAIN_IT="--iters 5 --warmup 2 --stage-iters 2"
  PARITY="--model titok-l-32 --batch-size 32"; CMP=paper
  CMP_SIZE="--batch-sizes 16 --iters 2 --warmup 1 --project-steps 64"
  RES_LO=256; RES_HI=512; TOKENS="--compare tokens"
  PROF="--model titok-l-32 --batch-size 64 --iters 3"; KB_SIZE=""; COMPILE_B=1,32,256; COMPILE_IT="--iters 3 --warmup 1"
fi

# ---- the steps: stage|name|timeout (s)|log file (in the work folder)|command ($WORK: the work folder) -------
STEP_LIST=()
add() { STEP_LIST+=("$1|$2|$3|$4|$(tr -s ' ' <<<"$5")"); }
for s in 1 2 3 4 5 6; do add "$s" env 60 "stage$s.env.txt" "$PY \"\$GPU_CHECK_ENV_PY\""; done
add 1 gpu_tests 330 gpu_tests.log \
  "$PY -m pytest -q -m gpu tests/ -rs -p no:cacheprovider --continue-on-collection-errors --durations=15 --junitxml=\$WORK/gpu_tests.xml \$PYTEST_EXTRA"
add 1 sampling_l32_bf16 150 sampling_l32_bf16.log \
  "$PY bench/sampling.py --model $L32 --pipelines reference,fast --dtype bfloat16 --batch-sizes $MAIN_B $MAIN_IT $DEV --out \$WORK/sampling_l32_bf16.json --plot \$WORK/sampling_l32_bf16.png"
add 1 sampling_l32_fp32 180 sampling_l32_fp32.log \
  "$PY bench/sampling.py --model $L32 --pipelines reference,fast --dtype float32 --batch-sizes $MAIN_B $MAIN_IT $DEV --out \$WORK/sampling_l32_fp32.json"
add 1 parity 120 parity_l32.log \
  "$PY bench/parity.py $PARITY $DEV --out \$WORK/parity_l32.json"
add 1 kernel_bench 120 kernel_bench.log \
  "$PY bench/kernel_bench.py $KB_SIZE $DEV --out \$WORK/kernels.json"
add 2 compare_paper 240 compare_paper.log \
  "$PY bench/sampling.py --compare $CMP --protocol paper $CMP_SIZE $DEV --out \$WORK/compare_paper.json --plot \$WORK/compare_paper.png"
add 2 tokens 300 tokens.log \
  "$PY bench/sampling.py $TOKENS $DEV --out \$WORK/tokens.json --plot \$WORK/tokens.png"
add 3 compare_best_256 360 compare_best_256.log \
  "$PY bench/sampling.py --compare $CMP --protocol best --resolutions $RES_LO $CMP_SIZE $DEV --out \$WORK/compare_best_256.json --plot \$WORK/compare_best_256.png"
add 4 compare_best_512 360 compare_best_512.log \
  "$PY bench/sampling.py --compare $CMP --protocol best --resolutions $RES_HI $CMP_SIZE $DEV --out \$WORK/compare_best_512.json --plot \$WORK/compare_best_512.png"
add 5 profile 120 profile_l32.log \
  "$PY bench/profiling.py $PROF --pipeline fast $DEV --out-dir \$WORK"
add 5 sampling_l32_compile_bf16 330 sampling_l32_compile_bf16.log \
  "$PY bench/sampling.py --model $L32 --pipelines compile --dtype bfloat16 --batch-sizes $COMPILE_B $COMPILE_IT --stages off $DEV --out \$WORK/sampling_l32_compile_bf16.json"
add 6 sampling_l32_compile_fp32 330 sampling_l32_compile_fp32.log \
  "$PY bench/sampling.py --model $L32 --pipelines compile --dtype float32 --batch-sizes $COMPILE_B $COMPILE_IT --stages off $DEV --out \$WORK/sampling_l32_compile_fp32.json"

selected() {  # stage name -> 0 if this step runs
  case ",$STAGES," in *",$1,"*) ;; *) return 1 ;; esac
  [ -z "$ONLY" ] && return 0
  case ",$ONLY," in *",$2,"*) return 0 ;; esac
  return 1
}
if [ -n "$ONLY" ]; then
  for n in ${ONLY//,/ }; do
    found=0
    for e in "${STEP_LIST[@]}"; do IFS='|' read -r _ name _ _ _ <<<"$e"; [ "$name" = "$n" ] && found=1; done
    [ "$found" = 1 ] || { echo "gpu_check: no step named '$n' (see --dry-run)" >&2; exit 2; }
  done
fi

if [ "$DRY" = 1 ]; then
  echo "gpu_check dry run ($MODE): stages $STAGES; outputs: \$OUT=$OUT (gpu_check_stageN.tgz + .txt per stage)"
  echo "set-up: pip install --no-index --no-deps --target \$SITE $WHEELS/*.whl; PYTHONPATH=\$SITE:\$IMPORTS"
  echo "        (\$IMPORTS: titok -> titok/, titok_kernels -> kernels/, titok_bench -> bench/)"
  for s in ${STAGES//,/ }; do
    echo "stage $s (budget $BUDGET s):"
    for e in "${STEP_LIST[@]}"; do
      IFS='|' read -r st name t log cmd <<<"$e"
      [ "$st" = "$s" ] && selected "$st" "$name" || continue
      echo "  [$name, timeout ${t}s, log \$WORK/$log] $cmd"
    done
    echo "  after each step: tar -czf \$OUT/gpu_check_stage$s.tgz -C \$WORK ."
  done
  exit 0
fi

# ---- set-up ----------------------------------------------------------------------------------------------
mkdir -p "$OUT" || exit 1
TMPD="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")" || exit 1
[ "${GPU_CHECK_KEEP:-0}" = 1 ] || trap 'rm -rf "$TMPD"' EXIT
SITE="$TMPD/site"; IMPORTS="$TMPD/imports"
mkdir -p "$SITE" "$IMPORTS"
ln -s "$ROOT/titok" "$IMPORTS/titok"
ln -s "$ROOT/kernels" "$IMPORTS/titok_kernels"
ln -s "$ROOT/bench" "$IMPORTS/titok_bench"
HAVE_TIMEOUT=1; command -v timeout >/dev/null 2>&1 || HAVE_TIMEOUT=0

# Wheels: all of them on the GPU machine; in a rehearsal whose Python is not CPython 3.12 only the pure-Python
# ones (the cp312 binary wheels cannot install there: their packages come from the local environment).
WHEEL_NOTE=""; WHEEL_RC=0; WHEEL_SECS=0
WHEEL_LOG="$TMPD/wheels.log"; : >"$WHEEL_LOG"
shopt -s nullglob
all_wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if [ ${#all_wheels[@]} = 0 ]; then
  WHEEL_NOTE="no wheels in $WHEELS (bench/fetch_gpu_wheels.sh downloads them): nothing installed"
else
  pyver="$("$PY" -c 'import sys; print("cp%d%d" % sys.version_info[:2])' 2>/dev/null)"
  install=(); skipped=()
  for w in "${all_wheels[@]}"; do
    b="$(basename "$w")"
    if [ "$REHEARSE" = 1 ] && [ "$pyver" != cp312 ] && [[ "$b" != *-none-any.whl ]]; then skipped+=("$b"); else install+=("$w"); fi
  done
  wheel_start=$(date +%s)
  if [ ${#install[@]} -gt 0 ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${install[@]}" >>"$WHEEL_LOG" 2>&1
    WHEEL_RC=$?
  fi
  WHEEL_SECS=$(($(date +%s) - wheel_start))
  WHEEL_NOTE="installed ${#install[@]} wheel(s) from $WHEELS into the --target folder (pip rc $WHEEL_RC)"
  [ ${#skipped[@]} = 0 ] || WHEEL_NOTE="$WHEEL_NOTE; skipped in rehearsal (binary, not for $pyver): ${skipped[*]}"
  for w in "${install[@]}"; do echo "  installed: $(basename "$w")" >>"$WHEEL_LOG"; done
fi
echo "$WHEEL_NOTE" >>"$WHEEL_LOG"

export PYTHONPATH="$SITE:$IMPORTS${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if [ "$REHEARSE" = 1 ]; then
  # CPU only, and torch.compile as a no-op: inductor compiles take minutes on a 2-core CPU; the compile
  # pipeline's code path still runs (eager).
  export CUDA_VISIBLE_DEVICES="" TORCH_COMPILE_DISABLE=1
fi
if [ "$REHEARSE" = 0 ] && [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ] && \
   ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)" >/dev/null 2>&1; then
  echo "gpu_check: $PY sees no CUDA device: this is no GPU machine (on a CPU: --rehearse;" \
       "GPU_CHECK_ALLOW_CPU=1 runs the full sizes anyway)" >&2
  exit 3
fi
PYTEST_EXTRA=""
if "$PY" -c "import xdist" >/dev/null 2>&1 && [ "${GPU_TESTS_WORKERS:-4}" != 0 ] && [ "$REHEARSE" = 0 ]; then
  PYTEST_EXTRA="-n ${GPU_TESTS_WORKERS:-4}"
fi
if "$PY" -c "import pytest_timeout" >/dev/null 2>&1; then PYTEST_EXTRA="$PYTEST_EXTRA --timeout 240"; fi
export PYTEST_EXTRA

export GPU_CHECK_ENV_PY="$TMPD/env_check.py"
cat >"$GPU_CHECK_ENV_PY" <<'EOF'
"""gpu_check env step: versions, import check, the device. Non-zero exit if something required is missing."""
import importlib, importlib.metadata, importlib.util, os, platform, shutil, subprocess, sys, time

root, stage, rehearse = os.environ["GPU_CHECK_ROOT"], os.environ["GPU_CHECK_STAGE"], os.environ["GPU_CHECK_REHEARSE"] == "1"
print("date (UTC):", time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "| host:", platform.node())
print("python:", sys.version.split()[0], sys.executable, "| platform:", platform.platform())
print("git sha:", os.environ.get("GPU_CHECK_SHA", "unknown"), "| stage:", stage, "| rehearsal:", rehearse)
print("PYTHONPATH:", os.environ.get("PYTHONPATH", ""))
print("wheels:", os.environ.get("GPU_CHECK_WHEEL_NOTE", ""))
required = ["torch", "triton", "numpy", "titok", "titok_kernels", "titok_bench", "rich", "safetensors", "PIL",
            "pytest"]
if stage in ("2", "3", "4") and not rehearse:
    required.append("diffusers")          # the DiT-XL/2 baseline: imported, to see it works with what is there
# Looked up, not imported (cheaper): what some steps use when it is there.
optional = {"matplotlib": "matplotlib", "pynvml": "nvidia-ml-py", "jsonschema": "jsonschema",
            "diffusers": "diffusers", "hypothesis": "hypothesis", "pytest_benchmark": "pytest-benchmark",
            "scipy": "scipy", "huggingface_hub": "huggingface-hub", "xdist": "pytest-xdist",
            "pytest_timeout": "pytest-timeout"}
bad = []
for name in required:
    try:
        mod = importlib.import_module(name)
        where = os.path.dirname(getattr(mod, "__file__", "") or "")
        print(f"  {name:18s} {str(getattr(mod, '__version__', '-')):24s} {where}")
    except Exception as exc:  # noqa: BLE001 - report every failure, whatever it is
        print(f"  {name:18s} MISSING ({type(exc).__name__}: {exc})")
        bad.append(name)
for name, dist in optional.items():
    if name in required:
        continue
    spec = importlib.util.find_spec(name)
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = "-"
    where = os.path.dirname(spec.origin or "") if spec is not None else ""
    print(f"  {name:18s} {version:24s} {where}" if spec is not None else f"  {name:18s} not installed (optional)")
for name, folder in (("titok", "titok"), ("titok_kernels", "kernels"), ("titok_bench", "bench")):
    mod = sys.modules.get(name)
    if mod is not None and not os.path.realpath(mod.__file__).startswith(os.path.join(os.path.realpath(root), folder)):
        print(f"  {name} comes from {mod.__file__}, not from this checkout's {folder}/")
        bad.append(name)
for tool in ("sampling.py", "parity.py", "kernel_bench.py", "profiling.py"):
    if not os.path.exists(os.path.join(root, "bench", tool)):
        print(f"  bench/{tool} is missing")
        bad.append(tool)
data = os.path.join(root, "tests", "data")
golden = sorted(f for f in os.listdir(data) if f.endswith(".safetensors")) if os.path.isdir(data) else []
print(f"tests/data: {len(golden)} golden .safetensors files, "
      f"{sum(os.path.getsize(os.path.join(data, f)) for f in golden) / 1e6:.1f} MB (the GPU pipeline tests load them)")
if stage == "1" and not golden:
    bad.append("tests/data")
import torch
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| cuDNN", torch.backends.cudnn.version(),
      "| cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"device: {p.name}, capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{p.total_memory / 2**30:.1f} GiB")
elif not rehearse:
    print("no CUDA device: this is not a GPU machine (use --rehearse on a CPU)")
    bad.append("cuda")
smi = shutil.which("nvidia-smi")
if smi:
    for args in ([], ["--query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,"
                      "temperature.gpu,memory.used,memory.total", "--format=csv"]):
        print(subprocess.run([smi, *args], capture_output=True, text=True, timeout=30).stdout)
else:
    print("nvidia-smi: not found" + (" (rehearsal)" if rehearse else ""))
if bad:
    print("MISSING / WRONG:", ", ".join(bad))
sys.exit(1 if bad else 0)
EOF
export GPU_CHECK_ROOT="$ROOT" GPU_CHECK_REHEARSE="$REHEARSE" GPU_CHECK_WHEEL_NOTE="$WHEEL_NOTE"
# The commit: what the caller gives in TITOK_GIT_SHA (a copy without .git) is kept as given; else git's.
if [ -n "${TITOK_GIT_SHA:-}" ]; then
  GPU_CHECK_SHA="$TITOK_GIT_SHA"
else
  GPU_CHECK_SHA="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
  git -C "$ROOT" status --porcelain 2>/dev/null | grep -q . && GPU_CHECK_SHA="$GPU_CHECK_SHA+uncommitted"
fi
export GPU_CHECK_SHA TITOK_GIT_SHA="$GPU_CHECK_SHA"   # every tool records it as environment.git_sha

# ---- running ---------------------------------------------------------------------------------------------
pack() {  # pack the stage's work folder into its archive, atomically; copy the summary beside it
  tar -czf "$OUT/.gpu_check_stage$1.tgz.part" -C "$WORK" . 2>/dev/null \
    && mv -f "$OUT/.gpu_check_stage$1.tgz.part" "$OUT/gpu_check_stage$1.tgz"
  cp -f "$SUMMARY" "$OUT/gpu_check_stage$1.txt" 2>/dev/null
}
say() { echo "$*" | tee -a "$SUMMARY"; }
cpu_mark() {  # $TMPD/cpu.<name>: CPU seconds (user + system) used so far by this shell's finished children
  times >"$TMPD/times"   # (not in a $(...) subshell: that one has no children yet)
  awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); printf "%.1f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
    "$TMPD/times" >"$TMPD/cpu.$1"
}

total_failed=0
for S in ${STAGES//,/ }; do
  export GPU_CHECK_STAGE="$S"
  WORK="${GPU_CHECK_WORK:-$TMPD/work}/stage$S"
  rm -rf "$WORK"; mkdir -p "$WORK"; export WORK
  rm -f "$OUT/gpu_check_stage$S.tgz" "$OUT/gpu_check_stage$S.txt" "$OUT/.gpu_check_stage$S.tgz.part"
  SUMMARY="$WORK/stage$S.summary.txt"; TSV="$WORK/stage$S.steps.tsv"
  cp "$WHEEL_LOG" "$WORK/stage$S.wheels.log"
  printf 'stage\tstep\trc\tstatus\tseconds\tcpu_s\ttimeout_s\tlog\tcommand\n' >"$TSV"
  stage_start=$(date +%s); [ "$S" = "${STAGES%%,*}" ] && stage_start=$CLOCK0   # the first stage pays the set-up
  deadline=$((stage_start + BUDGET)); failed=0
  say "=== gpu_check stage $S, $MODE, $(date -u '+%Y-%m-%d %H:%M:%S') UTC, sha $GPU_CHECK_SHA, budget ${BUDGET}s"
  say "    wheels: $WHEEL_NOTE"
  [ "$stage_start" = "$CLOCK0" ] && say "    set-up before this stage: $(($(date +%s) - CLOCK0))s (counted in its budget)"
  wstatus=ok; [ "$WHEEL_RC" = 0 ] || { wstatus=failed; failed=$((failed + 1)); tail -n 15 "$WHEEL_LOG" | tee -a "$SUMMARY"; }
  printf '%s\twheels\t%s\t%s\t%s\t\t0\tstage%s.wheels.log\tpip install --no-index --no-deps --target SITE %s/*.whl\n' \
    "$S" "$WHEEL_RC" "$wstatus" "$WHEEL_SECS" "$S" "$WHEELS" >>"$TSV"
  [ "$HAVE_TIMEOUT" = 1 ] || say "    warning: no 'timeout' command here: steps run without time limits"
  [ "$REHEARSE" = 1 ] && say "    rehearsal: CPU only (CUDA_VISIBLE_DEVICES=''), TORCH_COMPILE_DISABLE=1 (compile rows run eager)"
  pack "$S"
  for e in "${STEP_LIST[@]}"; do
    IFS='|' read -r st name t log cmd <<<"$e"
    [ "$st" = "$S" ] && selected "$st" "$name" || continue
    override="GPU_CHECK_TIMEOUT_$name"; t="${!override:-$t}"
    left=$((deadline - $(date +%s) - 30))
    if [ "$left" -lt 5 ]; then
      say "--- $name: SKIPPED (stage budget of ${BUDGET}s spent)"
      printf '%s\t%s\t\tskipped\t0\t0\t0\t%s\t%s\n' "$S" "$name" "$log" "$cmd" >>"$TSV"
      failed=$((failed + 1)); pack "$S"; continue
    fi
    [ "$t" -gt "$left" ] && t="$left"
    say "--- $(date -u +%H:%M:%S) $name (timeout ${t}s) -> $log"
    say "    $cmd"
    start=$(date +%s); cpu_mark start
    if [ "$HAVE_TIMEOUT" = 1 ]; then
      timeout -s INT -k 20 "$t" bash -c "$cmd" >"$WORK/$log" 2>&1 </dev/null
    else
      bash -c "$cmd" >"$WORK/$log" 2>&1 </dev/null
    fi
    rc=$?; secs=$(($(date +%s) - start)); cpu_mark end
    cpu=$(awk -v a="$(cat "$TMPD/cpu.start")" -v b="$(cat "$TMPD/cpu.end")" 'BEGIN { printf "%.1f", b - a }')
    status=ok
    if [ "$rc" != 0 ]; then
      status=failed
      { [ "$rc" = 124 ] || [ "$rc" = 137 ]; } && [ "$secs" -ge "$t" ] && status=timeout
      failed=$((failed + 1))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$S" "$name" "$rc" "$status" "$secs" "$cpu" "$t" "$log" "$cmd" >>"$TSV"
    say "    $status (rc $rc) in ${secs}s (${cpu} CPU-s)"
    if [ "$status" != ok ]; then tail -n 15 "$WORK/$log" | sed 's/^/    | /' | tee -a "$SUMMARY"; fi
    pack "$S"
  done
  say "=== stage $S: $failed failed step(s) in $(($(date +%s) - stage_start))s; archive $OUT/gpu_check_stage$S.tgz"
  pack "$S"
  total_failed=$((total_failed + failed))
done
n_out=$(find "$OUT" -maxdepth 1 -type f | wc -l)
[ "$n_out" -le 12 ] || echo "warning: $n_out files in $OUT: more than 2 per stage"
echo "gpu_check: $total_failed failed step(s); outputs in $OUT"
exit "$total_failed"

#!/usr/bin/env bash
# One-command check on a CUDA machine (never run on one yet: written on a CPU-only host).
#
#   scripts/gpu_check.sh            # from the repository root or anywhere; PYTHON=... overrides
#
# 1. checks torch.cuda.is_available() (exit 2 with one line when there is no CUDA device);
# 2. runs the CUDA tests (pytest -m cuda: backbones on CUDA vs CPU, the spconv backend on CUDA vs
#    the torch backend on CPU, spconv gradients; they skip on CPU machines);
# 3. benchmarks the backbones on the GPU (bench/bench_backbone.py --device cuda: MinkUNet, one
#    layer, and the official UniSeg3D backbone on the torch backend / spconv backend / spconv's own
#    net at 50k / 150k / 300k voxels);
# 4. benchmarks the whole model with the official config on the GPU
#    (bench/bench_model.py --config official --device cuda), when bench_model.py has those flags.
# Each step has its own time limit; the whole run stays well under 15 minutes.
# For the spconv rows on the GPU install the CUDA wheel of spconv matching the CUDA torch
# (e.g. pip install spconv-cu120); the PyPI package "spconv" is CPU-only and its rows are skipped.
# Exit status: 0 all steps passed, 1 a step failed, 2 no CUDA device.

set -u
cd "$(dirname "$0")/.." || exit 1
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3)"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device (torch.cuda.is_available() is False with $PY); nothing to check" >&2
  exit 2
fi

"$PY" - <<'EOF'
import torch
p = torch.cuda.get_device_properties(0)
print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
try:
    import spconv
    from spconv.cppconstants import CPU_ONLY_BUILD
    print(f"gpu_check: spconv {spconv.__version__}, {'CPU-only build' if CPU_ONLY_BUILD else 'CUDA build'}")
except Exception as e:  # noqa: BLE001
    print(f"gpu_check: spconv not usable ({type(e).__name__}: {e})")
EOF

status=0
step() {  # step NAME LIMIT_S CMD...
  local name="$1" limit="$2"
  shift 2
  echo
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || status=1
}

mapfile -t cuda_tests < <(grep -l "pytest.mark.cuda" tests/test_*.py)
step "CUDA tests" 300 "$PY" -m pytest -q -rs -m cuda "${cuda_tests[@]}"

step "backbone benchmark (GPU)" 240 "$PY" bench/bench_backbone.py --device cuda --threads 8 --repeats 5 \
  --sizes 50000 150000 300000 --spconv-max-voxels 400000

if "$PY" bench/bench_model.py --help 2>/dev/null | grep -q -- "--device"; then
  step "model benchmark (GPU, official config)" 240 "$PY" bench/bench_model.py --config official --device cuda \
    --sizes 50000 150000 300000
else
  echo
  echo "== model benchmark skipped: bench/bench_model.py has no --device/--config official yet;"
  echo "   the call will be: $PY bench/bench_model.py --config official --device cuda --sizes 50000 150000 300000"
fi

echo
[ "$status" -eq 0 ] && echo "gpu_check: all steps passed" || echo "gpu_check: a step failed (see above)"
exit "$status"

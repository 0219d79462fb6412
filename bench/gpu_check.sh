#!/usr/bin/env bash
# The GPU check, as one short script for a CUDA machine (minutes, not hours):
#   1. the gpu-marked tests (the pipeline on CUDA vs CPU on real footage, batched face models),
#   2. bench/lesson.py --device cuda (the 30-student composite lesson end to end, per-model table),
#   3. the per-model benches that exist in bench/ with a --device option.
#
#   bash bench/gpu_check.sh [WHEELS_DIR] [LESSON_SECONDS]
#
# Sized to finish inside one 10-minute command: tests <= 200 s, lesson <= 300 s, the
# per-model benches <= 60 s each (each step has its own timeout and the script goes on).
#
# The GPU box is expected to have Python 3.12 with torch, numpy and opencv-python-headless.
# What else the pipeline imports (pydantic, pydantic-settings, pandas, scipy, pytest and
# their dependencies; PyAV optional) is installed from WHEELS_DIR when given, without
# network. decord, mediapipe, dlib and celery are not needed: the pipeline imports them
# lazily and decodes with OpenCV where decord is absent. Model files come from
# $AFFECTLINE_MODEL_DIR (carry ~/.cache/affectline/models there); nothing is downloaded.
# Everything it prints is also written to $OUT/gpu_check.txt when $OUT is set.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${1:-}
SECONDS_LESSON=${2:-60}
LOG=${OUT:-/tmp}/gpu_check.txt
exec > >(tee "$LOG") 2>&1

if [ -n "$WHEELS" ] && [ -d "$WHEELS" ]; then
  $PY -m pip install --quiet --no-index --find-links "$WHEELS" "$WHEELS"/*.whl || echo "wheel install failed"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export AFFECTLINE_DEVICE=cuda AFFECTLINE_LANDMARKER=torch AFFECTLINE_EMBEDDER=torch AFFECTLINE_DATA_DIR=${AFFECTLINE_DATA_DIR:-/tmp/affectline-gpu}
echo "== device"
nvidia-smi -L 2>/dev/null || true
$PY - <<'EOF'
import sys, torch
print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
for m in ("decord", "mediapipe", "dlib", "celery", "av", "pandas", "scipy", "pydantic_settings"):
    try:
        __import__(m); print(f"  {m}: present")
    except ImportError:
        print(f"  {m}: absent")
import ingest.pipeline  # the GPU path must import with what is here
print("ingest.pipeline imports")
EOF

echo "== gpu tests"
timeout 200 $PY -m pytest -q -m gpu tests/test_pipeline_gpu.py $(ls tests/test_*gpu*.py tests/test_*torch*.py 2>/dev/null | grep -v test_pipeline_gpu.py) -p no:cacheprovider
echo "gpu tests exit $?"

echo "== lesson, cuda, ${SECONDS_LESSON} s"
timeout 300 $PY bench/lesson.py --device cuda --seconds "$SECONDS_LESSON"
echo "lesson exit $?"

echo "== per-model benches"
[ -f bench/landmarks.py ] && { timeout 60 $PY bench/landmarks.py --device cuda --reps 2 --no-mediapipe; echo "landmarks exit $?"; }
[ -f bench/reid.py ] && { timeout 60 $PY bench/reid.py --device cuda --skip-dlib; echo "reid exit $?"; }
[ -f bench/caer.py ] && { timeout 60 $PY bench/caer.py --device cuda; echo "caer exit $?"; }
exit 0

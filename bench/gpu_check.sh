#!/usr/bin/env bash
# The GPU check, as one short script for a CUDA machine (minutes, not hours):
#   1. the gpu-marked tests (the pipeline on CUDA vs CPU on real footage, batched face models),
#   2. bench/lesson.py --device cuda (the 30-student composite lesson end to end, per-model table),
#   3. the per-model benches that exist in bench/ with a --device option.
#
#   bash bench/gpu_check.sh [WHEELS_DIR] [LESSON_SECONDS]
#
# Sized to finish inside one 10-minute command: tests <= 180 s, lesson <= 240 s, the
# per-model benches <= 40 s each (each step has its own timeout and the script goes on).
#
# The GPU box is expected to have Python 3.12 with torch, numpy, h5py and opencv-python-headless.
# What else the pipeline imports (pydantic, pydantic-settings, pandas, pytest and their
# dependencies) is installed from WHEELS_DIR when given, without network. scipy, decord,
# mediapipe, LiteRT, dlib, PyAV and celery are not needed: the tracker solves assignments
# with numpy, the pipeline decodes with OpenCV where decord is absent, and the lesson bench
# encodes with OpenCV where PyAV is. Model files come from .gpu_kit/models when present,
# else $AFFECTLINE_MODEL_DIR; nothing is downloaded. bench/gpu_kit.sh builds .gpu_kit/
# (wheels + converted models, 54 MiB with the working tree); then one device call:
#   run(carry=[".gpu_kit"], command="bash bench/gpu_check.sh .gpu_kit/wheels", timeout_s=560)
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
[ -d .gpu_kit/models ] && export AFFECTLINE_MODEL_DIR="$PWD/.gpu_kit/models"
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
import pipeline.analyse  # the GPU path must import with what is here
print("pipeline.analyse imports")
EOF

echo "== gpu tests"
timeout 180 $PY -m pytest -q -m gpu tests/test_pipeline_gpu.py $(ls tests/test_*gpu*.py tests/test_*torch*.py 2>/dev/null | grep -v test_pipeline_gpu.py) -p no:cacheprovider
echo "gpu tests exit $?"

echo "== lesson, cuda, ${SECONDS_LESSON} s"
timeout 240 $PY bench/lesson.py --device cuda --seconds "$SECONDS_LESSON"
echo "lesson exit $?"

echo "== per-model benches"
# (landmarks batched vs one crop on CUDA: in the lesson bench's per-model table above)
[ -f bench/reid.py ] && { timeout 40 $PY bench/reid.py --device cuda --skip-dlib; echo "reid exit $?"; }
[ -f bench/caer.py ] && { timeout 40 $PY bench/caer.py --device cuda; echo "caer exit $?"; }
exit 0

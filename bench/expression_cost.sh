#!/bin/bash
# Usage: PYTHON=.venv/bin/python bench/expression_cost.sh   (prints each run's CPU line; ~8 min on 2 cores)
# Interleaved: the three expression models, two rounds, one process each.
cd "$(dirname "$0")/.."; export PYTHONPATH=$PWD
for round in 1 2; do for m in mini_xception calibrated calibrated_ensemble; do
  echo "== round $round $m"; AFFECTLINE_EXPRESSION_MODEL=$m ${PYTHON:-.venv/bin/python} bench/lesson.py --seconds 10 --skip-models 2>&1 | grep -E "CPU seconds|per-stage|End to end"
done; done

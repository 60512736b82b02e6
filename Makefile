# make demo: meta-train and evaluate a ProtoNet on real Omniglot (a few minutes on 2 cores).
# make test: the test suite.
# Both create or reuse .venv and install the project (torch==2.13.0 when no torch is present).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED_DATA := $(wildcard ../shared/data)
export INNERLOOP_DATA ?= $(if $(SHARED_DATA),$(abspath $(SHARED_DATA)),)
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/innerloop demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs

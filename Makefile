# sealq: two commands do all set-up.
#   make run   - create .venv, install sealq (llama.cpp built for this CPU), run `sealq loop` on the bundled data
#   make test  - same set-up, then the test suite: unit and model tiers (slow end-to-end tests: `make test-slow`)
# Checks: `make test-fast` (unit tier: no model, under a minute), `make lint` (ruff), `make typecheck` (mypy),
# `make docs-check` (generated docs are current; `make docs` regenerates them).

PYTHON ?= python3
VENV   ?= .venv
TORCH_PIP_ARGS ?=
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.sealq-installed

# llama.cpp must not be built with -march=native: on machines that advertise AMX but do not allow it
# (this sandbox), the native build dies with SIGILL. Turn native off and enable what the CPU has.
CPUFLAGS := $(shell grep -m1 '^flags' /proc/cpuinfo 2>/dev/null)
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
  -DGGML_AVX=$(if $(findstring avx ,$(CPUFLAGS)),ON,OFF) \
  -DGGML_AVX2=$(if $(findstring avx2,$(CPUFLAGS)),ON,OFF) \
  -DGGML_FMA=$(if $(findstring fma,$(CPUFLAGS)),ON,OFF) \
  -DGGML_F16C=$(if $(findstring f16c,$(CPUFLAGS)),ON,OFF) \
  -DGGML_AVX512=$(if $(findstring avx512f,$(CPUFLAGS)),ON,OFF)

# The llama.cpp wheel is built once per (version, flags) into a wheelhouse of its own: pip's general
# cache could hand back a wheel built with other flags (a native build that dies with SIGILL here).
LLAMA_VERSION := 0.3.36
LLAMA_BUILD_ID := $(shell echo "$(LLAMA_VERSION) $(LLAMA_CMAKE_ARGS)" | sha256sum | cut -c1-12)
WHEELHOUSE ?= $(HOME)/.cache/sealq/wheels/llama-cpp-python-$(LLAMA_BUILD_ID)
# The source distribution is kept beside the wheelhouses: the wheel is built from it, and it carries
# llama.cpp's own converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py), which the tests
# use as the reference for every architecture. They are unpacked into the venv ($(UPSTREAM)).
SDIST := $(HOME)/.cache/sealq/wheels/llama_cpp_python-$(LLAMA_VERSION).tar.gz
UPSTREAM := $(VENV)/src/llama.cpp

# Tests run in one pytest-xdist worker per usable core (CPU affinity), and tests/conftest.py pins every torch
# and llama.cpp thread count to 1: results never depend on the machine's load or on how the suite was started.
TEST_WORKERS = $(shell $(BIN)/python -c "from sealq.cores import usable_cores; print(usable_cores())")
PYTEST = $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
DOCS = README.md $(wildcard docs/*.md docs/notes/*.md)

.PHONY: install run test test-fast test-slow lint typecheck docs docs-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU build of torch first (a bare `torch` requirement would pull a multi-GB CUDA build). This machine
	# kind has the CPU wheel on local disk; elsewhere point TORCH_PIP_ARGS at a CPU wheel index.
	$(BIN)/python -m pip install torch==2.13.0 $(TORCH_PIP_ARGS)
	@if [ ! -f $(SDIST) ]; then \
	  mkdir -p $(dir $(SDIST)) && rm -rf $(SDIST).d && \
	  $(BIN)/python -m pip download -q --no-deps --no-binary llama-cpp-python -d $(SDIST).d llama-cpp-python==$(LLAMA_VERSION) && \
	  mv $(SDIST).d/llama_cpp_python-$(LLAMA_VERSION).tar.gz $(SDIST) && rm -rf $(SDIST).d; \
	fi
	@if ! ls $(WHEELHOUSE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; then \
	  echo "building llama-cpp-python $(LLAMA_VERSION) with: $(LLAMA_CMAKE_ARGS) (5-8 minutes on 2 cores)"; \
	  rm -rf $(WHEELHOUSE).tmp; \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	    $(BIN)/python -m pip wheel --no-cache-dir --no-deps -w $(WHEELHOUSE).tmp $(SDIST) && \
	  mkdir -p $(dir $(WHEELHOUSE)) && rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).tmp $(WHEELHOUSE); \
	fi
	$(BIN)/python -m pip install --no-deps --no-index --find-links $(WHEELHOUSE) llama-cpp-python==$(LLAMA_VERSION)
	$(BIN)/python -m pip install -e '.[test,ray]'
	rm -rf $(UPSTREAM) && mkdir -p $(UPSTREAM)
	tar -xzf $(SDIST) -C $(UPSTREAM) --strip-components=3 \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/convert_lora_to_gguf.py \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/conversion \
	  llama_cpp_python-$(LLAMA_VERSION)/vendor/llama.cpp/gguf-py
	$(BIN)/python -c "import llama_cpp, torch, peft, transformers, gguf; print('sealq deps ok: torch', torch.__version__, 'llama_cpp', llama_cpp.__version__)"
	touch $(STAMP)

run: install
	$(BIN)/sealq loop

test: install
	$(PYTEST) -m "not slow"

test-fast: install
	$(BIN)/python -m pytest -q -m "unit and not model and not slow"

# One worker per core as make test, then the tests that start a Ray cluster of their own worker processes, alone:
# next to another test worker and a CPU-bound process they ran past their 15-minute timeout.
test-slow: install
	$(PYTEST) -m "slow and not cluster"
	$(BIN)/python -m pytest -q -m "slow and cluster"

lint: install
	$(BIN)/ruff check .

typecheck: install
	$(BIN)/mypy

docs: install
	$(BIN)/cog -I scripts -r $(DOCS)

docs-check: install
	$(BIN)/cog -I scripts --check --check-fail-msg "generated docs are stale: run make docs" $(DOCS)

clean:
	rm -rf $(VENV) build *.egg-info

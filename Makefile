# qatflow — build, test, run. `make run` and `make test` work on a fresh machine (see .ci/run for what it installs).
SWIFT      ?= swift
CONFIG     ?= release
BUILD_DIR  ?= .build
VENV       ?= .venv
PYTHON     := $(VENV)/bin/python
QATFLOW    := $(BUILD_DIR)/$(CONFIG)/qatflow
PIPELINE   ?= pipelines/mobilenetv2.yaml
PY_PACKAGES := onnx onnxruntime numpy sympy safetensors pillow

.PHONY: build test run bench datasets venv venv-torch proto clean qemu system-libraries slurm

build: system-libraries
	$(SWIFT) build -c $(CONFIG) --scratch-path $(BUILD_DIR)

# C libraries the Swift targets link (zlib for IDX, libpng and libjpeg-turbo for image datasets): installed with
# apt-get when missing and we are root, else named so the build error is not a mystery.
SYSTEM_HEADERS := /usr/include/zlib.h:zlib1g-dev /usr/include/png.h:libpng-dev /usr/include/turbojpeg.h:libturbojpeg0-dev
system-libraries:
	@missing=""; for pair in $(SYSTEM_HEADERS); do [ -f "$${pair%%:*}" ] || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing system libraries:$$missing (install them with your package manager)"; exit 1; fi; \
	fi

# The Python venv holds ONNX Runtime and friends (cross-checks in tests and benchmarks) and Pillow (make datasets
# writes the image-file datasets with it). Debian's python3 needs python3-venv for it: installed here when missing
# and we are root with apt-get.
venv: $(VENV)/.ready
$(VENV)/.ready: Makefile
	@python3 -c 'import venv, ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; } || \
	  { echo "python3 cannot make a venv: install python3-venv"; exit 1; }
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check $(PY_PACKAGES)
	touch $@

datasets: venv
	bash scripts/fetch-datasets.sh
	$(PYTHON) scripts/write-image-datasets.py datasets/fashion-mnist-images datasets/fashion-mnist /usr/share/datasets/fashion-mnist

# QEMU user mode lets the tests run ONNX Runtime on an emulated AVX2-only CPU (scripts/avx2-emulated); installed
# here when missing and we are root with apt-get, else those tests skip (CI installs it and never skips them).
qemu:
	@command -v qemu-x86_64 >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user; } || \
	  echo "note: no qemu-x86_64 (apt-get install qemu-user): the emulated-AVX2 ONNX Runtime tests will be skipped"

# A one-node Slurm cluster on this machine (scripts/slurm-localhost.sh) for `qatflow run --executor slurm` and its
# integration test; installed and started when we are root with apt-get, else that test is skipped and says why.
slurm:
	@command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; } || \
	  echo "note: no Slurm (apt-get install slurm-wlm munge): the Slurm executor test will be skipped"
	@[ "$$(id -u)" != 0 ] || ! command -v slurmctld >/dev/null 2>&1 || bash scripts/slurm-localhost.sh > /dev/null || \
	  echo "note: the local Slurm cluster did not start (see /var/log/slurm/)"

# Tests build in release: the numeric kernels are 100-700x slower in debug.
test: system-libraries venv datasets qemu slurm
	QATFLOW_PYTHON=$(abspath $(PYTHON)) $(SWIFT) test -c $(CONFIG) --scratch-path $(BUILD_DIR)

run: build datasets
	$(QATFLOW) run $(PIPELINE)
	@$(QATFLOW) show last --models-only

# PyTorch for `make bench`'s same-run training comparison only (not needed by anything else; large download).
TORCH_VENV ?= .venv-torch
venv-torch: $(TORCH_VENV)/.ready
$(TORCH_VENV)/.ready:
	python3 -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install --quiet --disable-pip-version-check torch==2.15.0 onnx numpy
	touch $@

bench: build venv datasets
	PYTHON=$(PYTHON) TORCH_PYTHON=$(TORCH_VENV)/bin/python bash scripts/bench.sh $(QATFLOW)

proto:
	bash scripts/gen-proto.sh

clean:
	rm -rf $(BUILD_DIR) .qatflow

# The bits × lr QAT sweep (pipelines/sweep.yaml); `qatflow report` prints where its report and plots are.
.PHONY: sweep
sweep: build datasets
	$(QATFLOW) run pipelines/sweep.yaml

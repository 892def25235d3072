# detkit: `make demo` trains and evaluates the one-stage detector on the built-in dataset;
# `make test` runs the test suite. Both install into .venv first (once; a stamp makes re-runs instant).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test lint docs demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check detkit tools tests

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --quiet

demo: $(STAMP)
	$(PY) tools/demo.py

bench: $(STAMP)
	$(PY) tools/bench_ops.py

# GPU machine (lent to some sessions; no package registry there): `make gpu-wheels` here, where PyPI is
# reachable, fills $(GPU_WHEELS) with the cp312 wheels its python3 lacks; `make gpu-check` there installs them
# (no venv) and runs the CUDA tests, CUDA-vs-CPU kernels, bench rows and bf16 trainings. Without CUDA it exits 0.
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_WHEELS ?= .whl
.PHONY: gpu-check gpu-wheels

gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py --wheels $(GPU_WHEELS) $(GPU_CHECK_ARGS)

gpu-wheels: $(STAMP)
	$(PY) tools/gpu_check.py --download-wheels $(GPU_WHEELS)

clean:
	rm -rf $(VENV) lightning_logs runs site

# Task runner. The two commands a newcomer needs: `make demo` and `make test`;
# both create and fill their own virtualenv (.venv) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
TOOLS := .venv-tools
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONDONTWRITEBYTECODE := 1
export SAM_CLI_TELEMETRY := 0

.PHONY: help demo test lint unit template image-check bench train train-seed clean

help:  ## list the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	@touch $@

$(VENV)/.demo: $(VENV)/.python requirements/runtime.txt requirements/constraints.txt requirements/demo.txt
	$(PIP) install -r requirements/demo.txt
	@touch $@

$(VENV)/.dev: $(VENV)/.python requirements/runtime.txt requirements/constraints.txt requirements/training.txt requirements/dev.txt
	$(PIP) install -r requirements/dev.txt
	@touch $@ $(VENV)/.demo

demo: $(VENV)/.demo  ## label the sample images through an embedded S3 with the bundled model
	$(PY) -m infra.demo

test: lint unit template image-check  ## everything CI runs: lint, tests, template and image checks

lint: $(VENV)/.dev  ## ruff + hadolint
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/hadolint Dockerfile

unit: $(VENV)/.dev  ## pytest: unit, integration (moto) and end-to-end (moto server over HTTP)
	$(PY) -m pytest -q

$(TOOLS)/.sam: requirements/tools.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip --disable-pip-version-check -q install -r requirements/tools.txt
	@touch $@

template: $(TOOLS)/.sam  ## cfn-lint and sam validate --lint on template.yaml
	$(TOOLS)/bin/cfn-lint --include-checks I -- template.yaml
	AWS_DEFAULT_REGION=us-east-1 $(TOOLS)/bin/sam validate --lint --template template.yaml

image-check: $(VENV)/.dev  ## the image's requirements in a clean venv (entry points, size), and the dev venv on the same pins
	$(PYTHON) infra/check_image_requirements.py --dev-python $(PY)

BENCHMARKS = cold_start speed s3_client s3_path cost throughput recognition strings touching askew allow_digits limits

bench: $(VENV)/.dev  ## every benchmark beside its target (a FAIL does not stop the rest), then the tables in README.md, docs/BENCHMARKS.md and docs/MODEL.md regenerated
	for b in $(BENCHMARKS); do $(PY) benchmarks/$$b.py || echo "benchmarks/$$b.py: FAIL (exit $$?)"; done
	$(PY) benchmarks/report.py

train: $(VENV)/.dev  ## the bundled model's recipe: 30 augmented epochs, 6 fine-tuning, 6 on rendered uploads; publish, calibrate, line reader
	$(PY) -m training train --arch bn_cnn --run runs/bn_cnn
	$(PY) -m training train --arch bn_cnn --init-from runs/bn_cnn --epochs 6 --learning-rate 3e-4 --no-augment \
		--run runs/bn_cnn_ft
	$(PY) -m training run --arch bn_cnn --init-from runs/bn_cnn_ft --epochs 6 --learning-rate 3e-4 \
		--rendered-copies 1 --run runs/bn_cnn_served --publish models
	$(PY) -m training calibrate --model models/$$(cat models/DEFAULT) --to models
	$(PY) -m training line-reader --model models/$$(cat models/DEFAULT) --run runs/line_reader --to models

train-seed: $(VENV)/.dev  ## the reference CNN with the reference recipe
	$(PY) -m training run --arch seed --run runs/seed

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache

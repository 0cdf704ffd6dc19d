# The two commands of the README. Both set up .venv on a fresh machine (idempotent and quick when it exists).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.clumptool-installed
DEMO_OUT ?= demo-output

.PHONY: demo test

demo: $(STAMP)
	$(VENV)/bin/clumptool demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest

# Reinstall only when the dependency list changes; the package itself is installed editable.
# pip -qq prints errors only (setuptools' informational "Editable installation" note would greet every newcomer).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install -qq -e ".[dev]"
	@touch $(STAMP)

# Two entry points: `make demo` (the docs' example on the local cloud) and `make test`.
# Both create .venv with the pinned dependencies when it is missing or out of date.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3.11

.PHONY: demo test unit e2e lint bench clean

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/overcast demo

lint: $(STAMP)
	$(VENV)/bin/ruff check overcast tests bench

unit: $(STAMP)
	$(VENV)/bin/pytest tests/unit -q

e2e: $(STAMP)
	$(VENV)/bin/pytest tests/e2e -q

test: lint
	$(VENV)/bin/pytest tests -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) bench/start_latency.py

clean:
	rm -rf $(VENV)

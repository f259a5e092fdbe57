# Two entry points: `make demo` (the docs' example on the local cloud) and `make test`.
# Both create .venv with the pinned dependencies when it is missing or out of date.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3.11

.PHONY: demo test unit e2e lint bench clean browser postgres engine

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.lock
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP) engine
	$(VENV)/bin/overcast demo

lint: $(STAMP)
	$(VENV)/bin/ruff check overcast tests bench

# Real-browser tests drive Debian's chromium with Playwright (never `playwright install`).
CHROMIUM := /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

# The tests start a throwaway PostgreSQL server of their own (tests/pgserver.py) from Debian's
# package; installing it must not start the package's own cluster, hence policy-rc.d (101 = no).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
PG_INITDB := /usr/lib/postgresql/*/bin/initdb
postgres:
	@ls $(PG_INITDB) >/dev/null 2>&1 || { \
	  deny=; if [ ! -e /usr/sbin/policy-rc.d ]; then deny=1; \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	    $(SUDO) chmod 755 /usr/sbin/policy-rc.d; fi; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  rc=$$?; if [ -n "$$deny" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; }

# Local cloud instances are containers (docs/local-cloud.md): Debian's container engine, mmdebstrap
# for the stock Debian 12 image, and Debian's registry server. The local cloud starts dockerd
# itself, without a bridge: the package's own service must not start (it would create docker0
# with a private-range address), hence policy-rc.d (101 = no) during the install.
ENGINE_TOOLS := /usr/sbin/dockerd /usr/bin/mmdebstrap /usr/bin/docker-registry
engine:
	@missing=; for f in $(ENGINE_TOOLS); do test -x $$f || missing=1; done; [ -z "$$missing" ] || { \
	  deny=; if [ ! -e /usr/sbin/policy-rc.d ]; then deny=1; \
	    printf '#!/bin/sh\nexit 101\n' | $(SUDO) tee /usr/sbin/policy-rc.d >/dev/null; \
	    $(SUDO) chmod 755 /usr/sbin/policy-rc.d; fi; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    docker.io mmdebstrap docker-registry; \
	  rc=$$?; if [ -n "$$deny" ]; then $(SUDO) rm -f /usr/sbin/policy-rc.d; fi; exit $$rc; }

unit: $(STAMP) postgres
	$(VENV)/bin/pytest tests/unit -q

e2e: $(STAMP) browser postgres engine
	$(VENV)/bin/pytest tests/e2e -q

test: lint browser postgres engine
	$(VENV)/bin/pytest tests -q -p no:cacheprovider

bench: $(STAMP) engine
	$(PY) bench/start_latency.py

clean:
	rm -rf $(VENV)

# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv themselves.
PYTHON ?= python3
# The suite waits on brokers, processes and HTTP more than it computes: two workers halve it.
PYTEST_WORKERS ?= 2
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench bench-peers install install-peers clean containers containers-down

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=python3.11)")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@
	@echo 'installed. The hub command is $(BIN)/hub; run `. $(BIN)/activate` to type just `hub`.'

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/hub demo $(ARGS)

# Docker for the container tests is set up first (or one line says why not) and the daemon
# that set-up started is stopped afterwards, whatever pytest's outcome or a Ctrl-C.
test: $(STAMP)
	@scripts/ensure-chromium
	$(BIN)/ruff check .
	@trap '$(BIN)/python scripts/containers.py down' EXIT; trap 'exit 130' INT TERM; \
	  $(BIN)/python scripts/containers.py up && \
	  $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

# Docker, started and left running, with the local images (deploy/docker-compose.local.yml).
containers: $(STAMP)
	$(BIN)/python scripts/containers.py up

containers-down:
	$(BIN)/python scripts/containers.py down

# `make bench ARGS=--peers` (or `make bench-peers`) installs the peers first.
bench: $(STAMP) $(if $(findstring --peers,$(ARGS)),install-peers)
	$(BIN)/hub bench $(ARGS)

bench-peers: install-peers
	$(BIN)/hub bench --peers $(ARGS)

# The peers `hub bench --peers` measures the hub beside: eventsourcing comes with the bench
# extra (in dev, so in $(STAMP)); quixstreams, whose pins exclude the hub's pydantic, gets
# an environment of its own beside the hub's, where bench/peers.py looks for it.
QUIX_STAMP := $(VENV)/quix/.installed-$(shell cat bench/quix-requirements.txt | cksum | cut -d' ' -f1)
$(QUIX_STAMP): bench/quix-requirements.txt
	@test -x $(VENV)/quix/bin/python || $(PYTHON) -m venv $(VENV)/quix
	$(VENV)/quix/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/quix/bin/python -m pip install --quiet -r bench/quix-requirements.txt
	@rm -f $(VENV)/quix/.installed-* && touch $@

install-peers: $(STAMP) $(QUIX_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) hub-data .pytest_cache .ruff_cache

# mcp-proxy developer commands. `make install` creates .venv; the others use it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= --port 8080 -- $(BIN)/python tests/servers/sdk_server.py
# two test processes, each taking whole files (fixtures that install or start things once per
# file stay in one process): the tests mostly wait on processes and sockets; -n 0 runs serially
WORKERS ?= 2

.PHONY: install deps run test docs lint bench docker clean

$(BIN)/mcp-proxy: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint,docs]'
	touch $@

install: $(BIN)/mcp-proxy

run: install
	$(BIN)/mcp-proxy $(ARGS)

# what the tests need beyond Python packages (redis-server, nginx, npm, openssl): installed
# as root, else the command to run is printed (.ci/deps, which CI's .ci/run runs too)
deps:
	@PYTHON=$(PYTHON) VENV=$(VENV) .ci/deps

test: deps install
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

# the documentation site from docs/ into build/site; warnings (a broken link) are errors
docs: install
	$(BIN)/mkdocs build --strict --site-dir build/site

lint: install
	$(BIN)/ruff check mcp_proxy tests
	$(BIN)/hadolint Dockerfile

bench: install
	$(BIN)/python bench/run.py $(if $(PEERS),--peers)

docker:
	docker build -t mcp-proxy .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

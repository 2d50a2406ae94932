# mcp-proxy developer commands. `make install` creates .venv; the others use it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?= --port 8080 -- $(BIN)/python tests/servers/sdk_server.py
# three test processes, each taking whole files (fixtures that install or start things once per
# file stay in one process): the tests mostly wait on processes and sockets (at -n 2 a run used
# about two thirds of a 2-core machine); -n 0 runs serially
WORKERS ?= 3

.PHONY: install deps run test test-latest docs lint bench docker clean

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

# The suite on the newest release of every dependency, setup.cfg's caps ignored (the names
# alone, upgraded eagerly; mcp-proxy itself without its dependencies): an upgrade that breaks
# an internal the code relies on (pywsgi's handler, urllib3's _new_conn, Werkzeug's
# MapAdapter, requests' adapter) fails here, not in a user's bug report
LATEST ?= .venv-latest
DEPENDENCIES = $(shell $(PYTHON) -c "import configparser, re; c = configparser.ConfigParser(); \
	c.read('setup.cfg'); print(*(re.match(r'[\w.\[\]-]+', line.strip())[0] for line in ( \
	c['options']['install_requires'] + c['options.extras_require']['test']).splitlines() \
	if line.strip()))")

test-latest: deps
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install --quiet --upgrade pip
	$(LATEST)/bin/pip install --quiet --upgrade --upgrade-strategy eager $(DEPENDENCIES)
	$(LATEST)/bin/pip install --quiet --no-deps -e .
	$(LATEST)/bin/pip list 2>/dev/null | grep -iE '^(gevent|werkzeug|urllib3|requests|flask) '
	$(LATEST)/bin/python -m pytest -q -p no:cacheprovider -n $(WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check mcp_proxy tests
	$(BIN)/hadolint Dockerfile

# the table, then the same figures drawn into bench/chart.png (matplotlib, from
# bench/requirements.txt: the bench's own, not installed by `make install`); a failed run still
# draws what it measured, and make still fails
bench: install
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/run.py $(if $(PEERS),--peers); status=$$?; \
		$(BIN)/python bench/chart.py bench/results.json && exit $$status

docker:
	docker build -t mcp-proxy .

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info .pytest_cache

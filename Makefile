# Runbook Operator: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv controlplane tools browser lint unit integration test demo demo-down crds cluster-up cluster-down bench lock install-plugin docs docs-ref

venv: $(VENV)/.installed

# The project's own virtualenv, with the package (editable) and the dev tools.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# etcd, kube-apiserver, controller-manager, scheduler, kubectl and kwok, built once
# from the Go module proxy into ~/.cache/runbook-operator (a no-op when cached).
controlplane:
	bash hack/build-controlplane.sh >/dev/null

# promtool (rule checks and rule unit tests), helm (chart lint), and Prometheus,
# Alertmanager and amtool (deploy/alerting checks, alert-to-execution tests), same cache.
tools:
	bash hack/build-promtool.sh >/dev/null
	bash hack/build-helm.sh >/dev/null
	bash hack/build-alerting.sh >/dev/null

# Debian's Chromium and chromedriver for the web view's browser tests (apt; no-op if there).
browser:
	bash hack/install-browser.sh >/dev/null

lint: venv
	$(VENV)/bin/ruff check operator tests hack bench
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --config-file bench/mypy.ini bench/*.py

unit: venv
	$(PY) -m pytest tests/unit -q

integration: venv controlplane browser
	$(PY) -m pytest tests/integration -q

# The test command: lint, type checks, unit and property tests, then integration
# tests against a real local control plane that the test session starts and stops.
test: venv controlplane tools browser lint docs
	$(PY) -m pytest tests -q -p no:cacheprovider

# The documentation site (docs/, mkdocs.yml), built strictly: a broken link, a page
# missing from the nav or any other warning fails (not --quiet: it hides warnings from
# --strict). Output in build/site (ignored).
docs: venv
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir build/site

# The generated reference pages (docs/reference/: API from the CRD schemas, the kubectl
# plugin's and the operator's flags from their parsers); a unit test checks they are current.
docs-ref: venv
	$(PY) -m runbook_operator.cli.reference docs/reference

# Pin the runtime dependencies with hashes (the image and `make install-plugin` use it).
lock: venv
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile -q --generate-hashes --strip-extras --no-header \
		--output-file requirements.lock pyproject.toml
	sed -i '/^--find-links/d' requirements.lock

# The kubectl plugin (and the operator) from the lock file, into the current Python.
install-plugin:
	$(PYTHON) -m pip install --require-hashes -r requirements.lock
	$(PYTHON) -m pip install --no-deps .

crds: venv
	$(VENV)/bin/runbook-operator crds

# The incident guide's AI-provider story in about a minute (hack/demo.sh): local
# cluster, CRDs, operator with its alert receiver, a notification sink, Alertmanager
# when cached (`make tools`); an alert starts ai-service-recovery (examples/demo/),
# the circuit opens, carol approves, the run succeeds. Leaves everything running;
# `make demo-down` stops it all. RBO_CLUSTER_DIR chooses the state dir (default .cluster).
demo: venv controlplane
	PYTHON=$(PY) bash hack/demo.sh up

demo-down: venv
	PYTHON=$(PY) bash hack/demo.sh down

bench: venv controlplane
	$(PY) bench/engine.py

# Local control plane only (see hack/README.md).
cluster-up: venv
	$(PY) hack/cluster.py up

cluster-down: venv
	$(PY) hack/cluster.py down

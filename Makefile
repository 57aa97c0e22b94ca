VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real peers the tests talk to: strongSwan's pki (EST/SCEP clients) and openssl; promtool (from
# prometheus) runs the alert rules' unit tests, amtool (from prometheus-alertmanager) checks its config;
# Prometheus and Alertmanager for the live observability test, which runs its own (not the packages' services).
DEBIAN_PEERS := strongswan-pki libstrongswan-extra-plugins openssl prometheus prometheus-alertmanager

.PHONY: demo test bench bench-scaling bench-self-signed lint peers dashboards clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

peers:
	@dpkg -s $(DEBIAN_PEERS) >/dev/null 2>&1 || \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PEERS) )

demo: $(STAMP)
	$(VENV)/bin/certfleet demo

# Byte-compiled once: the tests start hundreds of Python processes, and where the environment
# sets PYTHONDONTWRITEBYTECODE each of them would otherwise compile the project's modules again.
# pytest may write its own cache of the test modules it rewrites for its asserts: each of its four
# processes collects every test file, and without the cache compiles them again on every run
# (8.3 -> 3.8 s of CPU per process from the second run in a checkout on).
test: $(STAMP) peers
	$(PY) -m compileall -q shared services tests bench
	PYTHONDONTWRITEBYTECODE= $(PY) -m pytest -q

# Not part of `make test`: each prints JSON lines (see README, Performance). Run on a quiet machine.
# The fleet runs share one invocation with the EST floor (the CA simulator enrolled straight), run
# before each fleet run and after the last: each run is judged by ratios to the floors around it and
# to the other runs, measured on the same machine at the same time.
bench: $(STAMP)
	$(PY) bench/publish.py --devices 10000
	$(PY) bench/fleet.py --enrollment est --floor --devices 5000 --devices 10000 --devices 50000
	$(PY) bench/revocation.py --revoked 100000 --scan-certificates 50000
	$(PY) bench/renewal.py --trustpoints 10000 --trustpoints 100000
	$(PY) bench/alert_fanout.py --alerts 2500
	$(PY) bench/health.py --devices 50000

# For machines with more than 2 cores: 10,000 EST enrollments with 1, 2 and 4 worker processes of 8 threads
# (each pooling 10 PostgreSQL connections: 4 x 16 threads would pool 72 of the server's default 100),
# the device simulator and the CA in 2 processes each (their --processes option), and a line with
# the throughput at each worker count. On 2 cores the extra processes share the same two cores.
bench-scaling: $(STAMP)
	$(PY) bench/fleet.py --enrollment est --devices 10000 --workers 1 --workers 2 --workers 4 --threads 8 \
		--sim-processes 2 --ca-processes 2

bench-self-signed: $(STAMP)
	$(PY) bench/fleet.py --devices 5000

# The Grafana dashboards are built in code (grafana-foundation-sdk); the JSON is committed, and
# tests/unit/deploy/test_dashboards.py fails when it differs from what the generator makes.
dashboards: $(STAMP)
	$(PY) deploy/grafana/generate.py

lint: $(STAMP)
	$(VENV)/bin/ruff check shared services tests bench deploy

clean:
	rm -rf $(VENV)

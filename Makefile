VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real peers the protocol tests talk to: strongSwan's pki (EST/SCEP clients) and openssl.
DEBIAN_PEERS := strongswan-pki libstrongswan-extra-plugins openssl

.PHONY: demo test bench lint peers clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

peers:
	@command -v pki >/dev/null && dpkg -s libstrongswan-extra-plugins >/dev/null 2>&1 || \
		( apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBIAN_PEERS) )

demo: $(STAMP)
	$(VENV)/bin/certfleet demo

test: $(STAMP) peers
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/fleet.py

lint: $(STAMP)
	$(VENV)/bin/ruff check shared services tests bench

clean:
	rm -rf $(VENV)

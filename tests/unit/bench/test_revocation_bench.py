"""bench/revocation.py, run tiny: it reports each figure it promises, from a real responder
and CRL and a revocation scan of 200 certificates (under a second; the real run is `make bench`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.support.pg import postgres_or_skip

spec = importlib.util.spec_from_file_location(
    "bench_revocation", Path(__file__).resolve().parents[3] / "bench" / "revocation.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_the_benchmark_reports_ocsp_rates_and_the_crl_size_and_time(tmp_path):
    in_process, over_http, crl = bench.run(tmp_path / "ca", revoked=50, seconds=0.05, clients=1, requests=3)
    for figure, transport in ((in_process, "in_process"), (over_http, "http")):
        assert figure["benchmark"] == "ocsp_responder" and figure["transport"] == transport
        assert figure["answers"] >= 3 and figure["answers_per_second"] > 0 and figure["revoked_entries"] == 50
    assert crl["benchmark"] == "crl"
    assert crl["revoked_entries"] == 51  # the 50 loaded, and the one revoked among the requests' certificates
    assert crl["bytes"] > 50 * 30 and crl["generation_seconds"] >= 0 and "error" not in crl


@pytest.mark.postgres
def test_the_scan_benchmark_finds_the_revoked_certificates_with_one_crl_fetch(tmp_path):
    postgres_or_skip()
    scan = bench.scan_figures(tmp_path / "scan-ca", certificates=200)
    assert "error" not in scan, scan["error"]
    assert (scan["certificates_scanned"], scan["revoked_at_ca"], scan["revoked_found"]) == (200, 2, 2)
    assert scan["newly_marked_revoked"] == 2 and scan["crl_fetches"] == 1
    assert scan["scan_seconds"] > 0 and scan["certificates_per_second"] > 0

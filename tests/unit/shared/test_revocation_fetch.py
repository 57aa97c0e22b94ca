"""Asking a CA about revocation over HTTP, as a device (or the revocation scan) does with a
trustpoint's settings: CRL and OCSP from a loopback server on 127.0.0.1 and [::1], caches that
keep thousands of checks from fetching thousands of CRLs, the order and fallback between the
two, and servers that cannot be reached."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from cryptography import x509

from shared.revocation_fetch import RevocationChecker
from tests.support.clock import ManualClock
from tests.support.procs import free_port
from tests.support.revocation_ca import RevocationServer, TestCa, ipv6_loopback, revocation_server

HOSTS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6"))]
CRL_ONLY = {"revocation_crl": True, "crl_use_distribution_point": True, "crl_urls": []}
OCSP_ONLY = {"revocation_ocsp": True}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def ca(clock) -> TestCa:
    return TestCa(clock=clock)


@pytest.fixture(params=HOSTS)
def server(request) -> Iterator[RevocationServer]:
    with revocation_server(request.param) as running:
        yield running


@pytest.fixture
def checker(clock) -> Iterator[RevocationChecker]:
    with RevocationChecker(clock=clock, timeout_seconds=2) as running:
        yield running


def test_a_crl_from_the_distribution_point_is_fetched_once_for_many_checks(ca, server, checker):
    crl_url, _ = server.serve_ca(ca)
    assert crl_url.startswith("http://[::1]:" if server.host == "::1" else "http://127.0.0.1:")
    peers = [ca.issue(f"peer{i}.example.com", crl_urls=[crl_url]) for i in range(50)]
    ca.revoke(peers[7])
    answers = [checker.check(peer, ca.cert, CRL_ONLY) for peer in peers for _ in range(20)]
    assert server.hits["/ca.crl"] == 1
    revoked = [a for a in answers if a.status == "revoked"]
    assert len(revoked) == 20 and {a.reason for a in revoked} == {"keyCompromise"}
    assert {a.status for a in answers} == {"good", "revoked"}
    assert {a.source for a in answers} == {"crl"} and {a.url for a in answers} == {crl_url}


def test_many_threads_at_once_still_fetch_the_crl_once(ca, server, checker):
    crl_url, _ = server.serve_ca(ca)
    peer = ca.issue(crl_urls=[crl_url])
    statuses: list[str] = []

    def check() -> None:
        statuses.extend(checker.check(peer, ca.cert, CRL_ONLY).status for _ in range(25))

    threads = [threading.Thread(target=check) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == ["good"] * 400 and server.hits["/ca.crl"] == 1


def test_static_crl_urls_or_the_distribution_point_as_the_settings_say(ca, server, checker):
    server.serve_ca(ca, crl_path="/dp.crl")
    server.crls["/static.crl"] = ca.crl
    peer = ca.issue(crl_urls=[server.url("/dp.crl")])
    ca.revoke(peer)
    static_only = {"revocation_crl": True, "crl_use_distribution_point": False, "crl_urls": [server.url("/static.crl")]}
    answer = checker.check(peer, ca.cert, static_only)
    assert (answer.status, answer.url) == ("revoked", server.url("/static.crl"))
    assert server.hits == {"/static.crl": 1}
    both = {**static_only, "crl_use_distribution_point": True}
    assert checker.check(peer, ca.cert, both).url == server.url("/dp.crl")  # the certificate's own first
    assert server.hits == {"/static.crl": 1, "/dp.crl": 1}
    # A certificate without a distribution point and no static URL: nothing to ask.
    bare = ca.issue("bare.example.com")
    answer = checker.check(bare, ca.cert, CRL_ONLY)
    assert (answer.status, answer.reason) == ("unknown", "no_crl_url")
    assert "has no CRL distribution point and the trustpoint no static CRL URL" in answer.detail


def test_the_next_distribution_point_answers_when_the_first_cannot(ca, server, checker):
    server.serve_ca(ca, crl_path="/good.crl")
    peer = ca.issue(crl_urls=[server.url("/missing.crl"), server.url("/good.crl")])
    answer = checker.check(peer, ca.cert, CRL_ONLY)
    assert (answer.status, answer.url) == ("good", server.url("/good.crl"))


def test_ocsp_from_the_aia_or_the_configured_url_cached_until_next_update(ca, server, checker, clock):
    _, ocsp_url = server.serve_ca(ca)
    peer = ca.issue(ocsp_urls=[ocsp_url])
    first = checker.check(peer, ca.cert, OCSP_ONLY)
    assert (first.status, first.source, first.url) == ("good", "ocsp", ocsp_url)
    assert checker.check(peer, ca.cert, OCSP_ONLY) == first
    assert server.hits["/ocsp"] == 1
    clock.advance(ca.ocsp_lifetime.total_seconds() + 1)
    assert checker.check(peer, ca.cert, OCSP_ONLY).status == "good"
    assert server.hits["/ocsp"] == 2
    # The trustpoint's OCSP URL overrides the certificate's AIA.
    server.responders["/override"] = ca.answer_ocsp
    elsewhere = ca.issue(ocsp_urls=[server.url("/nowhere")])
    answer = checker.check(elsewhere, ca.cert, {**OCSP_ONLY, "ocsp_url": server.url("/override")})
    assert (answer.status, answer.url) == ("good", server.url("/override"))
    assert server.hits["/nowhere"] == 0


@pytest.mark.parametrize("order", ["crl_first", "ocsp_first"])
def test_both_on_the_first_in_order_answers(ca, server, checker, order):
    crl_url, ocsp_url = server.serve_ca(ca)
    peer = ca.issue(crl_urls=[crl_url], ocsp_urls=[ocsp_url])
    settings = {**CRL_ONLY, **OCSP_ONLY, "revocation_order": order}
    answer = checker.check(peer, ca.cert, settings)
    assert answer.source == ("crl" if order == "crl_first" else "ocsp")
    assert server.hits == ({"/ca.crl": 1} if order == "crl_first" else {"/ocsp": 1})


@pytest.mark.parametrize("order", ["crl_first", "ocsp_first"])
def test_both_on_the_other_answers_when_the_first_cannot(ca, server, checker, order):
    crl_url, ocsp_url = server.serve_ca(ca)
    peer = ca.issue(crl_urls=[crl_url], ocsp_urls=[ocsp_url])
    ca.revoke(peer)
    broken = "/ca.crl" if order == "crl_first" else "/ocsp"
    if order == "crl_first":
        server.crls[broken] = lambda: ca.crl(this_update=ca.clock() - timedelta(hours=3),
                                             next_update=ca.clock() - timedelta(hours=1))
    else:
        server.responders[broken] = lambda _request: b"garbage"
    answer = checker.check(peer, ca.cert, {**CRL_ONLY, **OCSP_ONLY, "revocation_order": order})
    assert answer.status == "revoked"
    assert answer.source == ("ocsp" if order == "crl_first" else "crl")
    assert server.hits["/ca.crl"] == 1 and server.hits["/ocsp"] == 1


def test_a_revocation_shows_on_the_crl_after_its_next_update_and_over_ocsp_at_once(ca, server, clock):
    ca.ocsp_lifetime = None  # a responder that answers from the CA's current state
    crl_url, ocsp_url = server.serve_ca(ca)
    peer = ca.issue(crl_urls=[crl_url], ocsp_urls=[ocsp_url])
    with RevocationChecker(clock=clock) as by_crl, RevocationChecker(clock=clock) as by_ocsp:
        assert by_crl.check(peer, ca.cert, CRL_ONLY).status == "good"
        assert by_ocsp.check(peer, ca.cert, OCSP_ONLY).status == "good"
        clock.advance(60)
        ca.revoke(peer, reason=x509.ReasonFlags.superseded)
        assert by_ocsp.check(peer, ca.cert, OCSP_ONLY).status == "revoked"
        assert by_crl.check(peer, ca.cert, CRL_ONLY).status == "good"  # the CRL it holds is still current
        assert server.hits["/ca.crl"] == 1
        clock.advance(ca.crl_lifetime.total_seconds())
        answer = by_crl.check(peer, ca.cert, CRL_ONLY)
        assert (answer.status, answer.reason, answer.revoked_at) == ("revoked", "superseded", ca.revoked[
            peer.serial_number][0])
        assert server.hits["/ca.crl"] == 2


@pytest.mark.parametrize("host", HOSTS)
def test_an_unreachable_server_is_named_with_its_cause(ca, clock, host):
    literal = f"[{host}]" if ":" in host else host
    dead = f"http://{literal}:{free_port()}/ca.crl"
    peer = ca.issue(crl_urls=[dead], ocsp_urls=[dead.replace("ca.crl", "ocsp")])
    with RevocationChecker(clock=clock, failure_hold_seconds=30) as checker:
        answer = checker.check(peer, ca.cert, {**CRL_ONLY, **OCSP_ONLY})
        assert (answer.status, answer.reason, answer.source) == ("unknown", "unreachable", "crl")
        assert f"CRL server {dead} unreachable: connection refused" in answer.detail
        assert "OCSP server http://" in answer.detail and not answer.assumed_good
        lenient = checker.check(peer, ca.cert, {**CRL_ONLY, **OCSP_ONLY, "valid_if_unreachable": True})
        assert (lenient.status, lenient.assumed_good, lenient.reason) == ("good", True, "unreachable")
        assert lenient.detail.endswith("considered valid: the trustpoint's valid_if_unreachable setting is on")
        # The dead server is remembered for a while, not asked by every check.
        assert checker.fetches[dead] == 1
        clock.advance(31)
        checker.check(peer, ca.cert, CRL_ONLY)
        assert checker.fetches[dead] == 2


def test_untrusted_data_is_unknown_and_valid_if_unreachable_decides(ca, server, checker):
    other = TestCa("Another CA")
    server.crls["/wrong.crl"] = other.crl
    peer = ca.issue(crl_urls=[server.url("/wrong.crl")])
    strict = checker.check(peer, ca.cert, CRL_ONLY)
    assert (strict.status, strict.reason) == ("unknown", "crl_wrong_issuer")
    lenient = checker.check(peer, ca.cert, {**CRL_ONLY, "valid_if_unreachable": True})
    assert (lenient.status, lenient.assumed_good, lenient.reason) == ("good", True, "crl_wrong_issuer")


def test_oversized_answers_and_non_http_urls_are_refused(ca, server, clock):
    server.crls["/huge.crl"] = lambda: b"\x30" * 5000
    peer = ca.issue(crl_urls=[server.url("/huge.crl")])
    with RevocationChecker(clock=clock, max_crl_bytes=4096) as checker:
        answer = checker.check(peer, ca.cert, CRL_ONLY)
        assert (answer.status, answer.reason) == ("unknown", "too_large")
        assert "sent more than 4 KiB" in answer.detail
        ldap = ca.issue(crl_urls=["ldap://ldap.example.com/cn=CA?certificateRevocationList"])
        answer = checker.check(ldap, ca.cert, CRL_ONLY)
        assert (answer.status, answer.reason) == ("unknown", "url_not_http")


def test_revocation_checking_off_says_so(ca, checker):
    answer = checker.check(ca.issue(), ca.cert, {"revocation_crl": False, "revocation_ocsp": False})
    assert (answer.status, answer.source, answer.reason) == ("good", None, "not_checked")

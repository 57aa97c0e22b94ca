"""An enrollment object's revocation and validation settings through the API: what is kept, and
each setting that cannot work refused with its code."""

from __future__ import annotations

import pytest

from tests.support.api import GLOBAL, problem

PATH = f"/domains/{GLOBAL}/enrollment-objects"
EST = {"name": "vpn", "enrollment_type": "est", "enrollment_url": "https://ca.example.net/", "key_type": "ecdsa",
       "key_size": 256}


def test_the_revocation_tab_is_kept_as_sent(api):
    body = {**EST, "revocation_crl": True, "crl_use_distribution_point": False,
            "crl_urls": ["http://[2001:db8::7]/crl", "http://192.0.2.7/ca.crl"], "revocation_ocsp": True,
            "ocsp_url": "http://[2001:db8::7]:8080/ocsp", "revocation_order": "ocsp_first",
            "valid_if_unreachable": True, "validation_usage": ["ssl_server", "ipsec_client"],
            "skip_ca_flag_check": True, "ignore_ipsec_key_usage": True}
    made = api.ok("POST", PATH, body, status=201)
    shown = api.ok("GET", f"{PATH}/{made['id']}")
    for field in ("revocation_crl", "crl_use_distribution_point", "crl_urls", "revocation_ocsp", "ocsp_url",
                  "revocation_order", "valid_if_unreachable", "skip_ca_flag_check", "ignore_ipsec_key_usage"):
        assert shown[field] == body[field], field
    assert shown["validation_usage"] == ["ipsec_client", "ssl_server"]
    plain = api.ok("POST", PATH, {**EST, "name": "plain"}, status=201)
    assert (plain["revocation_crl"], plain["revocation_ocsp"], plain["validation_usage"]) == (
        False, False, ["ipsec_client", "ssl_client"])


@pytest.mark.parametrize(("change", "code", "says"), [
    ({"crl_urls": ["http://2001:db8::7/crl"]}, "invalid_url", "square brackets"),
    ({"ocsp_url": "http://2001:db8::7/ocsp"}, "invalid_url", "square brackets"),
    ({"crl_urls": ["https://[2001:db8::7]/crl"]}, "revocation_url_not_http", "plain http://"),
    ({"revocation_crl": True, "crl_use_distribution_point": False}, "crl_source_required", "crl_urls"),
    ({"revocation_order": "whichever"}, "invalid_revocation_order", "crl_first"),
    ({"validation_usage": ["vpn"]}, "invalid_validation_usage", "unknown: vpn"),
    ({"validation_usage": []}, "invalid_validation_usage", "one or more"),
])
def test_settings_that_cannot_work_are_refused(api, change, code, says):
    refused = problem(api.post(PATH, {**EST, **change}), 422, code)
    assert says in refused["detail"]


def test_a_self_signed_object_has_no_ca_to_ask(api):
    body = {"name": "ss", "enrollment_type": "self_signed", "key_type": "ecdsa", "key_size": 256,
            "revocation_ocsp": True}
    problem(api.post(PATH, body), 422, "field_not_applicable")

"""The checks of single values a client sends: what each accepts and how it normalises it,
and for what it refuses, the stable code and a message that names the value and the fix."""

from __future__ import annotations

import pytest

from services.controller.rules.checks import check_fingerprint, check_fqdn, check_http_url, check_ip_address
from shared.errors import ValidationError

SHA256 = "5D:1E:" + ":".join(["A0"] * 30)


def refused(check, value: str, **kw) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        check(value, **kw)
    assert repr(value.strip()) in caught.value.message, "the message names the value refused"
    return caught.value


# --- URLs -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), [
    ("https://ca.example.com/.well-known/est/", "https://ca.example.com/.well-known/est/"),
    ("  http://10.0.0.5:8080/certsrv/mscep/mscep.dll \n", "http://10.0.0.5:8080/certsrv/mscep/mscep.dll"),
    ("https://[2001:db8::5]:8443/", "https://[2001:db8::5]:8443/"),
    ("https://[fe80::1%25eth0]/", "https://[fe80::1%25eth0]/"),  # a link-local address with its zone
    ("https://[::ffff:192.0.2.1]/", "https://[::ffff:192.0.2.1]/"),
    ("https://ca_internal.corp/", "https://ca_internal.corp/"),  # underscores occur in internal names
    ("https://ca.example.com./", "https://ca.example.com./"),
    ("HTTPS://CA.Example.com/", "HTTPS://CA.Example.com/"),
    ("http://localhost:8400/api/devices/FTD-1", "http://localhost:8400/api/devices/FTD-1"),
])
def test_http_urls_are_accepted_without_surrounding_white_space(sent, kept):
    assert check_http_url(sent, field="enrollment_url") == kept


@pytest.mark.parametrize(("sent", "says"), [
    ("https://2001:db8::5/", "an IPv6 address must be enclosed in square brackets, e.g. https://[2001:db8::5]:8443/"),
    ("https://2001:db8::5:8443/", "square brackets"),
    ("https://[2001:db8::5/", "Invalid IPv6 URL"),
    ("https://[ca.example.com]/", "does not appear to be an IPv4 or IPv6 address"),
    ("https://[v1.fe]/", "'v1.fe' in brackets is not an IPv6 address"),
    ("https://ca.example.com:99999/", "the port must be a number from 0 to 65535"),
    ("https://ca.example.com:port/", "the port must be a number"),
    ("ftp://ca.example.com/", "expected http://host[:port]/path or https://"),
    ("ca.example.com", "expected http://host[:port]/path"),
    ("https:///.well-known/est", "expected http://host[:port]/path"),
    ("https://bad host/", "'bad host' is not a host name or IP address"),
    ("https://-ca.example.com/", "'-ca.example.com' is not a host name or IP address"),
    ("https://300.1.1.1/", "'300.1.1.1' is not a host name or IP address"),
    ("https://ca.example.com/cgi bin/pkiclient.exe", "it contains white space"),
])
def test_urls_that_cannot_be_used_are_refused_with_invalid_url_and_how_to_write_them(sent, says):
    error = refused(check_http_url, sent, field="enrollment_url")
    assert error.code == "invalid_url"
    assert error.message.startswith(f"enrollment_url {sent.strip()!r} is not a valid http(s) URL: ")
    assert says in error.message


def test_the_message_names_the_field_that_holds_the_url():
    assert refused(check_http_url, "ftp://x/", field="crl_urls").message.startswith("crl_urls 'ftp://x/'")


@pytest.mark.parametrize(("sent", "shown", "clean"), [
    ("https://est-user:S3cret!@ca.example.com/.well-known/est", "https://…@ca.example.com/.well-known/est",
     "https://ca.example.com/.well-known/est"),
    ("  https://est-user:S3cret!@[2001:db8::5]:8443/ ", "https://…@[2001:db8::5]:8443/",
     "https://[2001:db8::5]:8443/"),
    ("http://S3cret!@ca.example.com", "http://…@ca.example.com", "http://ca.example.com"),  # a token alone
    ("https://:S3cret!@ca.example.com/", "https://…@ca.example.com/", "https://ca.example.com/"),
    ("https://us%40er:S3cret!@@ca.example.com/?q=a@b", "https://…@ca.example.com/?q=a@b",
     "https://ca.example.com/?q=a@b"),
    ("est-user:S3cret!@ca.example.com/est", "…@ca.example.com/est", "ca.example.com/est"),  # no scheme
    ("https://est-user:S3cret!@bad host:99999/", "https://…@bad host:99999/", "https://bad host:99999/"),
])
def test_a_url_carrying_credentials_is_refused_without_repeating_them(sent, shown, clean):
    with pytest.raises(ValidationError) as caught:
        check_http_url(sent, field="enrollment_url")
    error = caught.value
    assert error.code == "url_credentials_not_allowed"
    assert "S3cret!" not in error.message and "est-user" not in error.message
    assert error.message == (
        f"enrollment_url {shown!r} carries a user name or password before the host, and a URL is stored and shown "
        f"as sent: send {clean!r} instead; an EST CA's user name and password go in the enrollment object's "
        "username and password fields (SCEP uses challenge_password)")


@pytest.mark.parametrize("field", ["management_url", "inventory_url", "ocsp_url", "crl_urls"])
def test_every_url_field_refuses_credentials_and_names_itself(field):
    with pytest.raises(ValidationError) as caught:
        check_http_url("http://admin:hunter2@fw1.example.com:8400/api", field=field)
    assert caught.value.code == "url_credentials_not_allowed"
    assert caught.value.message == (
        f"{field} 'http://…@fw1.example.com:8400/api' carries a user name or password before the host, and a URL "
        "is stored and shown as sent: send 'http://fw1.example.com:8400/api' instead")


@pytest.mark.parametrize("sent", ["https://ca.example.com/~user@team/est", "http://ca.example.com/scep?x=a@b",
                                  "https://ca.example.com/#me@here"])
def test_an_at_sign_after_the_host_is_part_of_the_path_and_kept(sent):
    assert check_http_url(sent, field="enrollment_url") == sent


# --- addresses and host names -------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), [
    ("192.0.2.10", "192.0.2.10"),
    (" 192.0.2.10 ", "192.0.2.10"),
    ("2001:DB8:0:0::0001", "2001:db8::1"),  # IPv6 in its one canonical form
    ("::ffff:192.0.2.1", "::ffff:c000:201"),
    ("", ""),
    ("   ", ""),
])
def test_ip_addresses_are_stored_in_canonical_form(sent, kept):
    assert check_ip_address(sent) == kept


@pytest.mark.parametrize("sent", ["300.1.1.1", "192.0.2", "fw1.example.com", "2001:db8::5::1", "[2001:db8::5]"])
def test_what_is_not_an_ip_address_is_refused(sent):
    error = refused(check_ip_address, sent)
    assert error.code == "invalid_ip_address"
    assert "is not an IPv4 or IPv6 address" in error.message


@pytest.mark.parametrize(("sent", "kept"), [
    ("fw1.example.com", "fw1.example.com"),
    ("  FW1.Example.com ", "FW1.Example.com"),
    ("fw1", "fw1"),
    ("fw1.example.com.", "fw1.example.com."),
    ("a" * 63 + ".example.com", "a" * 63 + ".example.com"),
    ("", ""),
])
def test_host_names_are_accepted_as_written(sent, kept):
    assert check_fqdn(sent) == kept


@pytest.mark.parametrize("sent", [
    "bad host!", "-fw1.example.com", "fw1-.example.com", "fw1..example.com", "a" * 64 + ".example.com",
    ".".join(["a" * 63] * 4) + ".com", "192.0.2.10", "300.1.1.1",
])
def test_what_is_not_a_host_name_is_refused(sent):
    error = refused(check_fqdn, sent)
    assert error.code == "invalid_fqdn"
    assert "is not a host name such as fw1.example.com" in error.message


# --- fingerprints ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), [
    (SHA256, "5d1e" + "a0" * 30),
    (" " + SHA256.replace(":", "").lower() + " ", "5d1e" + "a0" * 30),
    ("ab" * 16, "ab" * 16),  # MD5
    ("AB:" * 19 + "AB", "ab" * 20),  # SHA-1
    ("cd" * 48, "cd" * 48),  # SHA-384
    ("ef" * 64, "ef" * 64),  # SHA-512
    ("", ""),
    (" : ", ""),
])
def test_fingerprints_are_stored_lower_case_without_colons(sent, kept):
    assert check_fingerprint(sent) == kept


@pytest.mark.parametrize("sent", [
    "ab" * 31 + "a",  # 63 digits: one lost in copying
    "ab" * 33,  # no digest is 66 digits long
    "zz" * 32,
    SHA256.replace(":", "-"),
    "SHA256:" + "ab" * 32,
])
def test_what_is_not_a_hex_digest_is_refused_with_its_expected_length(sent):
    error = refused(check_fingerprint, sent)
    assert error.code == "invalid_fingerprint"
    assert "must be a hex digest (SHA-256: 64 hex digits; colons allowed)" in error.message

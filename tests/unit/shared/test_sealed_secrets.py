"""Secret options sealed to a device's endpoint credential: what the worker sends holds no secret,
the device holding the credential gets the configuration back exactly, and nothing else opens it:
another credential, another device, another trustpoint, a changed ciphertext or a changed clear field."""

from __future__ import annotations

import base64
import json

import pytest

from shared.device_auth import NONCE_BYTES
from shared.enrollment import EnrollmentParameters
from shared.errors import AuthError, ValidationError
from shared.sealed_secrets import (
    MAX_SEALED_BYTES,
    SEALED_FIELD,
    UNREADABLE,
    SealedTooLarge,
    open_configuration,
    seal,
    seal_configuration,
)

CREDENTIAL = "device-credential-0001-0123456789abcdef"
PASSWORD = "est-Password-never-in-clear-9Z"
SERIAL = "FTD-000001"


def est(**options) -> EnrollmentParameters:
    return EnrollmentParameters(name="vpn-est", enrollment_type="est", options={
        "enrollment_url": "https://ca.example.net/.well-known/est/", "username": "fw", "password": PASSWORD,
        **options})


def opened(wire: dict, *, credential: str = CREDENTIAL, serial: str = SERIAL, trustpoint: str = "vpn-est"):
    return open_configuration(wire, credential=credential, serial=serial, trustpoint=trustpoint)


def refused(wire: dict, **kwargs) -> AuthError:
    with pytest.raises(AuthError) as caught:
        opened(wire, **kwargs)
    return caught.value


def test_the_device_holding_the_credential_gets_the_configuration_back_and_nothing_secret_travels():
    params = est()
    sealed = seal_configuration(params, credential=CREDENTIAL, serial=SERIAL)
    sent = json.dumps(sealed.to_wire())
    assert PASSWORD not in sent and CREDENTIAL not in sent and "password" not in sealed.wire["options"]
    assert sealed.wire["options"]["enrollment_url"] == "https://ca.example.net/.well-known/est/"  # the rest in clear
    assert PASSWORD not in repr(sealed) and CREDENTIAL not in repr(sealed)

    configuration, nonce = opened(json.loads(sent))  # as the device parses it
    assert configuration == params.to_wire()
    assert nonce == sealed.nonce and len(nonce) == NONCE_BYTES


def test_every_seal_has_its_own_nonce():
    first, second = (seal_configuration(est(), credential=CREDENTIAL, serial=SERIAL) for _ in range(2))
    assert first.nonce != second.nonce
    assert first.wire[SEALED_FIELD]["ciphertext"] != second.wire[SEALED_FIELD]["ciphertext"]


def test_a_pkcs12_file_and_its_passphrase_are_sealed_together():
    file = base64.b64encode(b"\x30\x82" + bytes(range(256)) * 40).decode()
    params = EnrollmentParameters(name="vpn", enrollment_type="pkcs12",
                                  options={"pkcs12_base64": file, "passphrase": "p12-secret"})
    sealed = seal_configuration(params, credential=CREDENTIAL, serial=SERIAL)
    assert sealed.wire["options"] == {} and file not in json.dumps(sealed.wire)
    assert opened(sealed.wire, trustpoint="vpn")[0]["options"] == {"pkcs12_base64": file, "passphrase": "p12-secret"}


def test_nothing_but_the_credential_for_this_device_and_trustpoint_opens_it():
    wire = seal_configuration(est(), credential=CREDENTIAL, serial=SERIAL).wire
    assert refused(wire, credential="another-device-credential-000000").code == UNREADABLE
    # Replayed to another device (even one holding the same credential) or another trustpoint.
    assert refused(wire, serial="FTD-000002").code == UNREADABLE
    assert refused(wire, trustpoint="vpn-other").code == UNREADABLE
    error = refused({**wire, "name": "vpn-other"}, trustpoint="vpn-other")
    assert error.status == 401 and "could not open the sealed secret options" in error.message
    assert "nothing was applied" in error.message and CREDENTIAL not in error.message


def test_a_changed_ciphertext_nonce_or_clear_field_does_not_open():
    wire = seal_configuration(est(), credential=CREDENTIAL, serial=SERIAL).wire
    ciphertext = bytearray(base64.b64decode(wire[SEALED_FIELD]["ciphertext"]))
    ciphertext[0] ^= 1
    flipped = {**wire, SEALED_FIELD: {**wire[SEALED_FIELD], "ciphertext": base64.b64encode(ciphertext).decode()}}
    assert refused(flipped).code == UNREADABLE
    other_nonce = {**wire, SEALED_FIELD: {**wire[SEALED_FIELD], "nonce": base64.b64encode(bytes(32)).decode()}}
    assert refused(other_nonce).code == UNREADABLE
    # Pointing the device at another CA would send the opened password there: the clear fields are bound too.
    redirected = {**wire, "options": {**wire["options"], "enrollment_url": "https://evil.example/.well-known/est/"}}
    assert refused(redirected).code == UNREADABLE
    assert refused({**wire, "key_size": 4096}).code == UNREADABLE


def test_a_configuration_without_sealed_options_comes_back_as_it_is():
    plain = est(password="").to_wire()
    assert opened(plain) == (plain, None)
    assert opened(None) == (None, None)


@pytest.mark.parametrize("sealed", [
    "not an object",
    {"nonce": "AAAA"},
    {"nonce": "%%%", "ciphertext": "AAAA"},
    {"nonce": base64.b64encode(bytes(8)).decode(), "ciphertext": "AAAA"},  # a nonce too short
])
def test_a_malformed_sealed_field_is_refused_saying_what_it_must_be(sealed):
    wire = seal_configuration(est(), credential=CREDENTIAL, serial=SERIAL).wire
    with pytest.raises(ValidationError) as caught:
        opened({**wire, SEALED_FIELD: sealed})
    assert caught.value.code == "invalid_sealed_configuration" and caught.value.status == 422


def test_sealed_options_over_the_bound_are_refused_before_anything_is_decoded():
    too_large = base64.b64encode(bytes(MAX_SEALED_BYTES + 1)).decode()
    wire = {**est(password="").to_wire(), SEALED_FIELD: {"nonce": "AAAA", "ciphertext": too_large}}
    with pytest.raises(SealedTooLarge) as caught:
        opened(wire)
    assert (caught.value.status, caught.value.code) == (413, "payload_too_large")
    # The worker does not seal more than a device accepts.
    huge = EnrollmentParameters(name="vpn", enrollment_type="pkcs12", options={"pkcs12_base64": "A" * MAX_SEALED_BYTES})
    with pytest.raises(ValidationError) as sealing:
        seal_configuration(huge, credential=CREDENTIAL, serial=SERIAL)
    assert sealing.value.code == "sealed_configuration_too_large"


def test_a_secret_given_both_sealed_and_in_clear_is_refused():
    wire = seal_configuration(est(), credential=CREDENTIAL, serial=SERIAL).wire
    clashing = {**wire, "options": {**wire["options"], "password": "in-clear"}}
    assert refused(clashing).code == UNREADABLE  # added on the way: the clear fields are bound into the seal
    # Sealed that way by the credential's holder, it opens, and is refused all the same.
    rest = {key: value for key, value in clashing.items() if key != SEALED_FIELD}
    nonce = bytes(range(NONCE_BYTES))
    ciphertext = seal(CREDENTIAL, nonce, serial=SERIAL, trustpoint="vpn-est", rest=rest, secrets={"password": "x"})
    both = {**rest, SEALED_FIELD: {"nonce": base64.b64encode(nonce).decode(),
                                   "ciphertext": base64.b64encode(ciphertext).decode()}}
    with pytest.raises(ValidationError) as caught:
        opened(both)
    assert caught.value.code == "invalid_sealed_configuration" and "sealed only" in caught.value.message

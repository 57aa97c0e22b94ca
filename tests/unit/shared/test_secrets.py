"""Secrets at rest: what is sealed opens again with the same key, and with any other key
the operator is told which setting is wrong."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.secrets import SecretBox

KEY = "a long random string for tests"


@pytest.fixture(scope="module")
def box() -> SecretBox:
    return SecretBox(KEY)


@pytest.mark.parametrize(
    "plaintext",
    [b"est-password", b"", "challenge \u00e9\u00e8 \U0001f510".encode(), bytes(range(256)) * 40],
    ids=["password", "empty", "utf8", "pkcs12-sized-binary"],
)
def test_round_trip(box, plaintext):
    token = box.seal(plaintext)
    assert box.open(token) == plaintext


def test_a_new_box_with_the_same_key_opens_it(box):
    # Another process (a worker) builds its own box from the same CERTFLEET_SECRET_KEY.
    assert SecretBox(KEY).open(box.seal(b"scep-challenge")) == b"scep-challenge"


def test_sealed_token_does_not_show_the_secret(box):
    first, second = box.seal(b"hunter2hunter2"), box.seal(b"hunter2hunter2")
    assert b"hunter2" not in first
    assert first != second  # fresh IV each time: equal secrets do not look equal at rest


def test_wrong_key_is_a_configuration_error(box):
    token = box.seal(b"pkcs12 passphrase")
    with pytest.raises(ConfigurationError) as info:
        SecretBox("another key").open(token)
    assert info.value.code == "configuration_error"
    assert "CERTFLEET_SECRET_KEY" in info.value.message
    assert "pkcs12 passphrase" not in info.value.message


@pytest.mark.parametrize("token", [b"", b"not a token", b"gAAAAAB" + b"A" * 80])
def test_damaged_token_is_refused(box, token):
    with pytest.raises(ConfigurationError):
        box.open(token)


def test_tampered_token_is_refused(box):
    token = bytearray(box.seal(b"secret"))
    token[-10] = ord("A") if token[-10] != ord("A") else ord("B")
    with pytest.raises(ConfigurationError):
        box.open(bytes(token))


def test_empty_key_is_refused():
    with pytest.raises(ConfigurationError, match="CERTFLEET_SECRET_KEY must not be empty"):
        SecretBox("")

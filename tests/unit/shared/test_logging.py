"""Secrets never reach a log line: the JSON that configure_logging() really renders is
captured from stderr and searched for them."""

from __future__ import annotations

import json

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.logging import configure_logging, get_logger

SECRET = "hunter2-Zq9"


class Capture:
    """The real JSON logging, configured when the test starts logging, read from stderr."""

    def __init__(self, capsys) -> None:
        self._capsys = capsys

    def logger(self):
        # Configured here, not in the fixture: pytest swaps sys.stderr between setup and call.
        configure_logging("INFO", "json")
        return get_logger("test")

    def rendered(self) -> tuple[str, list[dict]]:
        err = self._capsys.readouterr().err
        return err, [json.loads(line) for line in err.splitlines() if line.strip()]


@pytest.fixture
def logs(capsys):
    saved = structlog.get_config()
    yield Capture(capsys)
    structlog.contextvars.clear_contextvars()
    structlog.configure(**saved)


def private_key_pem(key, fmt=serialization.PrivateFormat.PKCS8) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


@pytest.mark.parametrize(
    "key",
    ["password", "est_password", "passphrase", "pkcs12_passphrase", "challenge", "challenge_password",
     "token", "api_token", "Authorization", "secret", "private_key", "pkcs12", "api_key"],
)
def test_values_of_secret_keys_are_redacted(logs, key):
    logs.logger().info("enrollment object saved", **{key: SECRET}, device="FTD-000001")
    text, lines = logs.rendered()
    assert SECRET not in text
    assert lines[0][key] == "[REDACTED]"
    assert lines[0]["device"] == "FTD-000001"
    assert lines[0]["event"] == "enrollment object saved"
    assert lines[0]["level"] == "info"


def test_secret_keys_nested_in_mappings_and_lists(logs):
    logs.logger().info(
        "trustpoint configuration pushed",
        options={"url": "https://ca.example.net/.well-known/est", "username": "fw", "password": SECRET},
        challenges=[SECRET, SECRET + "x"],
    )
    text, [line] = logs.rendered()
    assert SECRET not in text
    assert line["options"] == {"url": "https://ca.example.net/.well-known/est", "username": "fw",
                               "password": "[REDACTED]"}
    assert line["challenges"] == "[REDACTED]"


def test_secrets_bound_to_the_context_are_redacted(logs):
    structlog.contextvars.bind_contextvars(job_id="42", scep_challenge=SECRET)
    logs.logger().info("claimed")
    text, [line] = logs.rendered()
    assert SECRET not in text
    assert line["job_id"] == "42"


@pytest.mark.parametrize(
    "make_pem",
    [
        lambda: private_key_pem(ec.generate_private_key(ec.SECP256R1())),
        lambda: private_key_pem(ec.generate_private_key(ec.SECP256R1()),
                                serialization.PrivateFormat.TraditionalOpenSSL),
        lambda: private_key_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024),
                                serialization.PrivateFormat.TraditionalOpenSSL),
        lambda: ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw")).decode(),
    ],
    ids=["pkcs8", "ec-traditional", "rsa-traditional", "encrypted"],
)
def test_pem_private_keys_inside_text_are_redacted(logs, make_pem):
    pem = make_pem().strip()
    body = pem.splitlines()[1]
    log = logs.logger()
    log.info(f"device answered: {pem} and more")
    log.warning("unexpected payload", payload="prefix " + pem, raw=pem.encode())
    text, lines = logs.rendered()
    assert body not in text
    assert "PRIVATE KEY-----" not in text
    assert lines[0]["event"] == "device answered: [REDACTED PRIVATE KEY] and more"
    assert lines[1]["payload"] == "prefix [REDACTED PRIVATE KEY]"
    assert "[REDACTED PRIVATE KEY]" in lines[1]["raw"]


def test_certificates_are_public_and_stay(logs):
    certificate = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----"
    logs.logger().info("installed", pem=certificate)
    _, [line] = logs.rendered()
    assert line["pem"] == certificate


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("sent Authorization: Bearer eyJhbGciOi.eyJzdWIi.SflKxwRJ-w_",
         "sent Authorization: Bearer [REDACTED]"),
        ("retry with bearer abc123~+/=", "retry with bearer [REDACTED]"),
        (f"EST server https://admin:{SECRET}@ca.example.net/.well-known/est refused",
         "EST server https://admin:[REDACTED]@ca.example.net/.well-known/est refused"),
        (f"broker redis://:{SECRET}@redis:6379/0 unreachable",
         "broker redis://:[REDACTED]@redis:6379/0 unreachable"),
        (f"postgresql://certfleet:{SECRET}@db:5432/certfleet",
         "postgresql://certfleet:[REDACTED]@db:5432/certfleet"),
    ],
)
def test_bearer_tokens_and_url_credentials_inside_text(logs, text, shown):
    logs.logger().error("request failed", detail=text)
    rendered, [line] = logs.rendered()
    assert line["detail"] == shown
    assert SECRET not in rendered and "eyJhbGciOi" not in rendered


def test_urls_without_credentials_are_untouched(logs):
    url = "https://[2001:db8::5]:8443/.well-known/est/simpleenroll"
    logs.logger().info("enrolling", url=url)
    _, [line] = logs.rendered()
    assert line["url"] == url


def test_exception_text_is_redacted(logs):
    try:
        raise ConnectionError(f"cannot reach https://est:{SECRET}@ca.example.net/")
    except ConnectionError:
        logs.logger().exception("exchange failed")
    text, [line] = logs.rendered()
    assert SECRET not in text
    assert "ConnectionError" in line["exception"]
    assert "https://est:[REDACTED]@ca.example.net/" in line["exception"]


def test_level_filtering(logs):
    log = logs.logger()
    log.debug("noise")
    log.info("kept")
    _, lines = logs.rendered()
    assert [line["event"] for line in lines] == ["kept"]
    assert lines[0]["timestamp"].endswith("Z")

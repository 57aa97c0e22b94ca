"""Talking to a device's management API.

:class:`DeviceClient` is what the workers' exchanges (and the controller's synchronous
export) need from a device; :class:`HttpDeviceClient` speaks :mod:`shared.device_api` over
HTTP. This module is the one place that turns HTTP answers into errors, so an adapter for
real devices can replace it without touching the actors or the API:

- no answer (timeout), refused or reset connections, 5xx and 429 -> :class:`DeviceTransientError`
  (codes ``device_timeout``, ``device_unreachable``, ``device_error``), carrying the wait a
  Retry-After asks for (:mod:`shared.protocols.retry_after`);
- 4xx -> :class:`~shared.errors.PermanentError` carrying the device's own code and message;
- an answer that does not parse -> ``PermanentError`` with code ``device_bad_response``.

A trustpoint configuration carrying a secret goes out only sealed (:class:`SealedConfiguration`,
made by the worker's endpoint gate); one with a secret in clear is refused before it is sent.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from datetime import datetime
from functools import cache
from typing import Any, Literal, Protocol, TypeVar
from urllib.parse import quote

from pydantic import BaseModel
from pydantic import ValidationError as WireError

from shared import device_http
from shared.clock import utcnow
from shared.device_api import (
    CaBundleUpload,
    DeviceCaBundle,
    ErrorBody,
    ExportedFile,
    ExportRequest,
    IdentityCertificateImport,
    KeyringState,
    PeerValidation,
    PeerValidationRequest,
    TrustpointState,
)
from shared.enrollment import EnrollmentParameters
from shared.errors import PermanentError, TransientError
from shared.protocols.retry_after import parse_retry_after
from shared.sealed_secrets import SealedConfiguration, carries_secret
from shared.settings import Settings

Model = TypeVar("Model", bound=BaseModel)

#: The 404 code that means "the device has no such trustpoint", not "no such device" or
#: "no such endpoint" (a management URL with a wrong path must not look like a lost trustpoint).
TRUSTPOINT_MISSING_CODES = frozenset({"trustpoint_not_found"})
#: Transient codes, with how a message says it: "device FTD-000042 unreachable: …".
TRANSIENT_CODES = {
    "device_unreachable": "unreachable",
    "device_timeout": "did not answer",
    "device_error": "",
}


#: A trustpoint configuration as a device client sends it.
Configuration = EnrollmentParameters | SealedConfiguration


class DeviceAddress(Protocol):
    """Whatever says where a device is: ``shared.models.Device`` does."""

    serial: str
    management_url: str


class DeviceClient(Protocol):
    def configure_trustpoint(self, device: DeviceAddress, params: Configuration) -> TrustpointState: ...

    def enroll(
        self, device: DeviceAddress, name: str, mode: Literal["enroll", "re_enroll"] = "enroll", *,
        configuration: Configuration | None = None,
    ) -> TrustpointState: ...

    def get_trustpoint(self, device: DeviceAddress, name: str) -> TrustpointState | None: ...

    def delete_trustpoint(self, device: DeviceAddress, name: str) -> None: ...

    def get_keyring(self, device: DeviceAddress) -> KeyringState: ...

    def regenerate_keyring(self, device: DeviceAddress) -> KeyringState: ...

    def install_identity_certificate(
        self, device: DeviceAddress, name: str, certificate_pem: str, ca_certificate_pem: str | None = None
    ) -> TrustpointState: ...

    def export_trustpoint(
        self, device: DeviceAddress, name: str, fmt: Literal["pkcs12", "pem"], passphrase: str | None = None
    ) -> ExportedFile: ...

    def validate_peer(
        self, device: DeviceAddress, trustpoint_name: str, certificate_pem: str, chain_pem: str | None = None,
        usage: Literal["ipsec_client", "ssl_client", "ssl_server"] | None = None,
    ) -> PeerValidation: ...

    def get_ca_bundle(self, device: DeviceAddress) -> DeviceCaBundle: ...

    def put_ca_bundle(self, device: DeviceAddress, version: str, pem: str) -> DeviceCaBundle: ...


class DeviceTransientError(TransientError):
    """A device that did not answer usefully this time; the parts are kept so the final
    message can say how many attempts were made."""

    def __init__(
        self, *, code: str, serial: str, url: str, what: str, reason: str, retry_after: float | None = None
    ) -> None:
        self.serial, self.url, self.what, self.reason = serial, url, what, reason
        super().__init__(self._text(""), code=code, retry_after=retry_after)

    def _text(self, after: str) -> str:
        return f"device {self.serial} {self.what}{after}: {self.reason} ({self.url})"

    def after_attempts(self, attempts: int) -> str:
        """E.g. "device FTD-000042 unreachable after 5 attempts: connection refused (http://…)"."""
        return self._text(f" after {attempts} attempt{'s' if attempts != 1 else ''}")


@cache
def _default_tls() -> ssl.SSLContext:
    """The system's trust store, loaded once per process: loading it costs tens of milliseconds,
    and every device client of a process verifies HTTPS the same way."""
    return ssl.create_default_context()


class HttpDeviceClient:
    """Kept-alive connections to every device a worker process talks to, shared by its threads
    (:mod:`shared.device_http`); a worker makes one to three device requests per job.

    ``clock`` says when an answer arrived: a Retry-After given as a date counts from then.
    """

    def __init__(
        self,
        *,
        timeout_seconds: float,
        max_connections: int = 64,
        clock: Callable[[], datetime] = utcnow,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: how HTTPS devices are verified (default: the system's trust store)."""
        self.timeout_seconds, self.clock = timeout_seconds, clock
        # Never retried here: a job's retry is the worker's decision, with its backoff.
        self._http = device_http.DeviceHttp(timeout_seconds=timeout_seconds, tls=tls or _default_tls(),
                                            idle_per_endpoint=max_connections)

    @classmethod
    def from_settings(cls, settings: Settings, *, max_connections: int = 64) -> HttpDeviceClient:
        return cls(timeout_seconds=settings.device_timeout_seconds, max_connections=max_connections)

    def close(self) -> None:
        self._http.close()

    # --- the device-management API ---------------------------------------------------------

    def configure_trustpoint(self, device: DeviceAddress, params: Configuration) -> TrustpointState:
        path = f"/trustpoints/{quote(params.name, safe='')}"
        return self._call(device, "PUT", path, TrustpointState, body=_wire(device, params))

    def enroll(
        self, device: DeviceAddress, name: str, mode: Literal["enroll", "re_enroll"] = "enroll", *,
        configuration: Configuration | None = None,
    ) -> TrustpointState:
        """Have the device enroll the trustpoint; with ``configuration``, it applies that first, in
        the same request (one round trip fewer than configuring, then enrolling)."""
        path = f"/trustpoints/{quote(name, safe='')}/enroll"
        body: dict[str, Any] = {"mode": mode}
        if configuration is not None:
            body["configuration"] = _wire(device, configuration)
        return self._call(device, "POST", path, TrustpointState, body=body)

    def get_trustpoint(self, device: DeviceAddress, name: str) -> TrustpointState | None:
        path = f"/trustpoints/{quote(name, safe='')}"
        return self._call(device, "GET", path, TrustpointState, missing_ok=True)

    def delete_trustpoint(self, device: DeviceAddress, name: str) -> None:
        # The API answers 204 also when the trustpoint is already gone; a device answering 404
        # trustpoint_not_found instead means the same.
        self._call(device, "DELETE", f"/trustpoints/{quote(name, safe='')}", None, missing_ok=True)

    def get_keyring(self, device: DeviceAddress) -> KeyringState:
        return self._call(device, "GET", "/keyring/default", KeyringState)

    def regenerate_keyring(self, device: DeviceAddress) -> KeyringState:
        """A new key pair and certificate for the default keyring (the device's ``system support
        regenerate-security-keyring default``); the keyring as it is afterwards."""
        return self._call(device, "POST", "/keyring/default/regenerate", KeyringState)

    def install_identity_certificate(
        self, device: DeviceAddress, name: str, certificate_pem: str, ca_certificate_pem: str | None = None
    ) -> TrustpointState:
        path = f"/trustpoints/{quote(name, safe='')}/identity-certificate"
        body = IdentityCertificateImport(certificate_pem=certificate_pem,
                                         ca_certificate_pem=ca_certificate_pem)
        return self._call(device, "POST", path, TrustpointState, body=body.model_dump())

    def export_trustpoint(
        self, device: DeviceAddress, name: str, fmt: Literal["pkcs12", "pem"], passphrase: str | None = None
    ) -> ExportedFile:
        # The passphrase travels in this request body only: never in a URL, never logged.
        path = f"/trustpoints/{quote(name, safe='')}/export"
        body = ExportRequest(format=fmt, passphrase=passphrase).model_dump()
        return self._call(device, "POST", path, ExportedFile, body=body)

    def validate_peer(
        self, device: DeviceAddress, trustpoint_name: str, certificate_pem: str, chain_pem: str | None = None,
        usage: Literal["ipsec_client", "ssl_client", "ssl_server"] | None = None,
    ) -> PeerValidation:
        """The device's verdict on a peer certificate, validated with the trustpoint's CA."""
        path = f"/trustpoints/{quote(trustpoint_name, safe='')}/validate"
        body = PeerValidationRequest(certificate_pem=certificate_pem, chain_pem=chain_pem, usage=usage)
        return self._call(device, "POST", path, PeerValidation, body=body.model_dump())

    def get_ca_bundle(self, device: DeviceAddress) -> DeviceCaBundle:
        return self._call(device, "GET", "/ca-bundle", DeviceCaBundle)

    def put_ca_bundle(self, device: DeviceAddress, version: str, pem: str) -> DeviceCaBundle:
        body = CaBundleUpload(version=version, pem=pem).model_dump()
        return self._call(device, "PUT", "/ca-bundle", DeviceCaBundle, body=body)

    # --- transport and error mapping -------------------------------------------------------

    def _call(
        self,
        device: DeviceAddress,
        method: str,
        path: str,
        model: type[Model] | None,
        *,
        body: dict[str, Any] | None = None,
        missing_ok: bool = False,
    ) -> Any:
        base = device.management_url.rstrip("/")
        headers = None if body is None else {"Content-Type": "application/json"}
        try:
            response = self._http.request(method, base, path, body=None if body is None else json.dumps(body).encode(),
                                          headers=headers)
        except device_http.Unreachable as exc:
            raise DeviceTransientError(
                code="device_unreachable", serial=device.serial, url=base, what="unreachable", reason=exc.reason,
            ) from None
        except device_http.NoAnswer:
            raise DeviceTransientError(
                code="device_timeout", serial=device.serial, url=base, what="did not answer",
                reason=f"no answer within {self.timeout_seconds:g} s",
            ) from None
        except device_http.BadUrl as exc:
            raise PermanentError(
                f"device {device.serial} has an unusable management URL {base!r}: {exc.problem}; correct "
                "the device's management URL",
                code="invalid_management_url",
            ) from None
        except device_http.AnswerTooLarge as exc:
            raise PermanentError(
                f"device {device.serial} answered {method} {path} with {exc.what}; certfleet reads no more",
                code="device_bad_response",
            ) from None

        status = response.status
        if status >= 500 or status == 429:
            error = _error_body(response)
            # A device manager in front of the device may say why it failed: it could not reach it.
            code = error.code if error and error.code in TRANSIENT_CODES else "device_error"
            raise DeviceTransientError(
                code=code, serial=device.serial, url=base,
                what=TRANSIENT_CODES.get(code) or f"answered {status} {response.reason or ''}".rstrip(),
                reason=error.message if error else "no explanation given",
                # Seconds or an HTTP date; None when unreadable: the worker's backoff decides.
                retry_after=parse_retry_after(response.headers.get("retry-after"), now=self.clock()),
            )
        if status >= 400:
            error = _error_body(response)
            if status == 404 and missing_ok and error is not None and error.code in TRUSTPOINT_MISSING_CODES:
                return None
            if error is None:
                raise PermanentError(
                    f"device {device.serial} refused {method} {path}: {status} {response.reason or ''}".rstrip(),
                    code=f"device_http_{status}",
                )
            raise PermanentError(f"device {device.serial}: {error.message}", code=error.code)
        if model is None:
            return None
        try:
            return model.model_validate_json(response.body)
        except WireError as exc:
            raise PermanentError(
                f"device {device.serial} sent an answer to {method} {path} that does not follow the "
                f"device-management API ({exc.error_count()} problems, first: {exc.errors()[0]['msg']})",
                code="device_bad_response",
            ) from None


def _wire(device: DeviceAddress, configuration: Configuration) -> dict[str, Any]:
    """The configuration's wire form; a secret goes only sealed to the device's credential."""
    if isinstance(configuration, EnrollmentParameters) and carries_secret(configuration):
        raise PermanentError(
            f"certfleet refused to send trustpoint {configuration.name}'s secret options to device "
            f"{device.serial} in clear; secrets go sealed to the device's endpoint credential (the worker's "
            "endpoint gate seals them): nothing was sent",
            code="secret_not_sealed")
    return configuration.to_wire()


def _error_body(response: device_http.Answer) -> ErrorBody | None:
    try:
        return ErrorBody.model_validate_json(response.body)
    except WireError:
        return None

"""The last check before a secret leaves certfleet: is the device's endpoint trusted, and is the
secret readable by that device only?

A trustpoint configuration that carries a secret (an EST password, a SCEP challenge, a PKCS#12 file
and its passphrase) goes to a device only when, at that moment,

1. its management endpoint is trusted (:func:`shared.endpoint_trust.trust_basis`: an admin approved
   the device at its current URL, or the URL matches the allow-list as it is now), else the job fails
   with ``device_endpoint_untrusted`` and nothing is sent;
2. certfleet holds the device's endpoint credential, else ``device_endpoint_unauthenticated``.

The secret options then go sealed to that credential (:mod:`shared.sealed_secrets`), in the very
request that applies them: an endpoint without the credential cannot read them. The device's answer
must carry its proof for the seal's nonce (:mod:`shared.device_auth`, compared in constant time);
a device that could not open them (401 ``sealed_configuration_unreadable``), or an answer without
a valid proof, fails the job with ``device_endpoint_unauthenticated`` before anything it said is
recorded.

All are permanent failures: a person must approve, allow or provision something first. A
configuration without a secret (self-signed, manual) needs none of this: nothing secret is sent,
and what such a device answers is only its own certificates. Called where the worker resolves a
trustpoint's configuration, whatever resolved its secrets; the exchange then talks to the device
through the client it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sqlmodel import select

from services.worker.context import WorkerContext
from services.worker.steps import StepLog
from shared.db import session_scope
from shared.device_api import TrustpointState
from shared.device_auth import proof_matches
from shared.device_client import Configuration, DeviceAddress, DeviceClient
from shared.endpoint_trust import EndpointRule, TrustBasis, trust_basis
from shared.enrollment import EnrollmentParameters
from shared.errors import PermanentError
from shared.models import Device, ManagementEndpoint
from shared.sealed_secrets import UNREADABLE, SealedConfiguration, carries_secret, seal_configuration

UNTRUSTED = "device_endpoint_untrusted"
UNAUTHENTICATED = "device_endpoint_unauthenticated"


def allow_list(ctx: WorkerContext) -> list[EndpointRule]:
    """The allow-list as it is now: an entry removed a moment ago no longer counts."""
    with session_scope(ctx.engine) as session:
        rows = session.exec(select(ManagementEndpoint.scheme, ManagementEndpoint.host, ManagementEndpoint.port)).all()
    return [EndpointRule(scheme=scheme, host=host, port=port) for scheme, host, port in rows]


def _trust_path(device: Device) -> str:
    return f"/api/v1/domains/{device.domain_id}/devices/{device.id}/trust"


def untrusted(device: Device) -> PermanentError:
    return PermanentError(
        f"device {device.serial}'s management endpoint {device.management_url} is not trusted with secrets: no "
        "admin registered or approved the device at this URL, and it matches no allowed management endpoint; "
        f"nothing secret was sent. An admin approves the device (POST {_trust_path(device)}, or certfleet device "
        "trust) or allows its endpoint (certfleet endpoints allow), then enroll again",
        code=UNTRUSTED)


def unauthenticated(device: Device, why: str, *, sealed: bool = False) -> PermanentError:
    sent = ("its secrets went sealed to the credential certfleet holds, so nothing readable was sent" if sealed
            else "nothing secret was sent")
    return PermanentError(
        f"device {device.serial} at {device.management_url} did not prove it holds its endpoint credential: {why}; "
        f"{sent}. Check that this URL reaches the registered device, and have an admin set the "
        f"credential the device holds (POST {_trust_path(device)} with \"credential\", or an admin's inventory "
        "import), then enroll again",
        code=UNAUTHENTICATED)


def ensure_may_receive_secrets(ctx: WorkerContext, device: Device, params: EnrollmentParameters, *,
                               steps: StepLog) -> DeviceClient:
    """The device client to send ``params`` to ``device`` with: ``ctx.devices`` itself when they carry
    no secret, else one sealing them to the device's credential and checking its proof. Raises a
    PermanentError saying why not and what to do when they may not go at all; nothing is sent here."""
    if not carries_secret(params):
        return ctx.devices
    basis = trust_basis(device, ())
    if basis is None:
        basis = trust_basis(device, allow_list(ctx))
    if basis is None:
        raise untrusted(device)
    if device.endpoint_credential_blob is None:
        raise unauthenticated(device, "certfleet holds no credential for it")
    trusted = "approved by an admin" if basis is TrustBasis.APPROVED else "on the allow-list"
    return SealingClient(ctx.devices, device, ctx.secrets.open(device.endpoint_credential_blob).decode(),
                         steps=steps, trusted=trusted)


class SealingClient:
    """A device client for one device that may receive secrets: each configuration it sends has its
    secret options sealed to the device's credential under a fresh nonce, and each answer to one
    must carry the device's proof for that nonce. Every other request goes through as it is."""

    def __init__(self, devices: DeviceClient, device: Device, credential: str, *, steps: StepLog,
                 trusted: str) -> None:
        self._devices, self._device, self._steps, self._trusted = devices, device, steps, trusted
        self._credential = credential  # never logged, never in repr

    def __repr__(self) -> str:
        return f"SealingClient(device={self._device.serial!r})"

    def __getattr__(self, name: str) -> Any:
        return getattr(self._devices, name)

    def configure_trustpoint(self, device: DeviceAddress, params: Configuration) -> TrustpointState:
        sealed = self._seal(device, params)
        return self._proved(sealed, lambda: self._devices.configure_trustpoint(device, sealed))

    def enroll(
        self, device: DeviceAddress, name: str, mode: Literal["enroll", "re_enroll"] = "enroll", *,
        configuration: Configuration | None = None,
    ) -> TrustpointState:
        if configuration is None:
            return self._devices.enroll(device, name, mode)
        sealed = self._seal(device, configuration)
        return self._proved(sealed, lambda: self._devices.enroll(device, name, mode, configuration=sealed))

    def _seal(self, device: DeviceAddress, params: Configuration) -> SealedConfiguration:
        if device.serial != self._device.serial or not isinstance(params, EnrollmentParameters):
            raise ValueError(f"a sealing client seals configurations for device {self._device.serial} only")
        return seal_configuration(params, credential=self._credential, serial=device.serial)

    def _proved(self, sealed: SealedConfiguration, send: Callable[[], TrustpointState]) -> TrustpointState:
        """The device's answer to ``sealed``, once it proved it opened it with the credential.
        Transport failures stay transient, as for any device request."""
        device = self._device
        try:
            state = send()
        except PermanentError as refused:
            if refused.code == UNREADABLE:
                raise unauthenticated(device, "it could not open the sealed secrets with the credential it holds, "
                                              "which is not the one certfleet holds", sealed=True) from None
            raise
        if state.proof is None:
            raise unauthenticated(device, "its answer carries no proof", sealed=True)
        if not proof_matches(self._credential, sealed.nonce, device.serial, state.proof):
            raise unauthenticated(device, "the proof in its answer does not match the credential", sealed=True)
        self._steps.add("endpoint_authenticated", f"device {device.serial} proved it holds its endpoint credential "
                                                  f"(endpoint {self._trusted})")
        return state

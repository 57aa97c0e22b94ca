"""The last check before a secret leaves certfleet: is the device's endpoint trusted, and does it
prove it is that device?

A trustpoint configuration that carries a secret (an EST password, a SCEP challenge, a PKCS#12 file
and its passphrase) goes to a device only when, at that moment,

1. its management endpoint is trusted (:func:`shared.endpoint_trust.trust_basis`: an admin approved
   the device at its current URL, or the URL matches the allow-list as it is now), else the job fails
   with ``device_endpoint_untrusted``;
2. the endpoint proves it holds the device's credential (:mod:`shared.device_auth`: a fresh nonce,
   an HMAC answer compared in constant time), else ``device_endpoint_unauthenticated``.

Both are permanent failures: a person must approve, allow or provision something first. A
configuration without a secret (self-signed, manual) needs neither: nothing secret is sent, and
what such a device answers is only its own certificates. Called where the worker resolves a
trustpoint's configuration, whatever resolved its secrets.
"""

from __future__ import annotations

from sqlmodel import select

from services.worker.context import WorkerContext
from services.worker.steps import StepLog
from shared.db import session_scope
from shared.device_auth import new_nonce, proof_matches
from shared.endpoint_trust import EndpointRule, TrustBasis, trust_basis
from shared.enrollment import EnrollmentParameters
from shared.errors import PermanentError
from shared.models import Device, ManagementEndpoint

#: The configuration options that hold secrets (see services.worker.parameters).
SECRET_OPTIONS = frozenset({"password", "challenge", "pkcs12_base64", "passphrase"})
UNTRUSTED = "device_endpoint_untrusted"
UNAUTHENTICATED = "device_endpoint_unauthenticated"


def carries_secret(params: EnrollmentParameters) -> bool:
    return not SECRET_OPTIONS.isdisjoint(params.options)


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


def unauthenticated(device: Device, why: str) -> PermanentError:
    return PermanentError(
        f"device {device.serial} at {device.management_url} did not prove it holds its endpoint credential: {why}; "
        f"nothing secret was sent. Check that this URL reaches the registered device, and have an admin set the "
        f"credential the device holds (POST {_trust_path(device)} with \"credential\", or an admin's inventory "
        "import), then enroll again",
        code=UNAUTHENTICATED)


def ensure_may_receive_secrets(ctx: WorkerContext, device: Device, params: EnrollmentParameters, *,
                               steps: StepLog) -> None:
    """Return when ``params`` may go to ``device``; raise a PermanentError saying why not and what to do.
    Device transport failures while authenticating are transient, as for any device request."""
    if not carries_secret(params):
        return
    basis = trust_basis(device, ())
    if basis is None:
        basis = trust_basis(device, allow_list(ctx))
    if basis is None:
        raise untrusted(device)
    if device.endpoint_credential_blob is None:
        raise unauthenticated(device, "certfleet holds no credential for it")
    credential = ctx.secrets.open(device.endpoint_credential_blob).decode()
    nonce = new_nonce()
    try:
        answer = ctx.devices.authenticate(device, nonce)
    except PermanentError as refused:  # a 4xx: no such endpoint, no credential on the device, …
        raise unauthenticated(device, f"it refused the challenge ({refused.code}: {refused.message})") from None
    if not proof_matches(credential, nonce, device.serial, answer):
        raise unauthenticated(device, "its answer to the challenge does not match the credential")
    trusted = "approved by an admin" if basis is TrustBasis.APPROVED else "on the allow-list"
    steps.add("endpoint_authenticated", f"device {device.serial} proved it holds its endpoint credential "
                                        f"(endpoint {trusted})")

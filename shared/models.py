"""SQLModel tables: the database is the source of truth.

Ids are UUIDs, like the management center's object ids. Timestamps are timezone-aware UTC.
Table models never leave the controller as they are: the API answers with ``*Public``
models that hold no secrets.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, LargeBinary, UniqueConstraint, text
from sqlalchemy.types import TypeDecorator
from sqlmodel import AutoString, Field, SQLModel

from shared.clock import utcnow
from shared.domains import GLOBAL_DOMAIN_ID, GLOBAL_DOMAIN_NAME  # noqa: F401  where most code looks for them
from shared.enums import EnrollmentType, JobReason, JobState, KeyType
from shared.states import Status


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always read back timezone-aware.

    SQLite keeps no offset (it would store an aware time's wall clock and return it naive),
    so values are converted to UTC on the way in and tagged UTC on the way out.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # naive: taken as UTC, like everything certfleet stores
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    kwargs: dict[str, Any] = {"sa_type": UTCDateTime, "nullable": nullable, "index": index}
    if not nullable:
        kwargs["default_factory"] = utcnow
    else:
        kwargs["default"] = None
    return Field(**kwargs)


class Domain(SQLModel, table=True):
    """A management domain. ``Global`` is the root; children link to their parent."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    name: str = Field(max_length=128)
    parent_id: uuid.UUID | None = Field(default=None, foreign_key="domain.id", index=True)
    #: Regenerate expired default keyrings on this domain's devices without an operator
    #: (every regeneration is a job with reason ``policy``). None: as the parent domain says
    #: (off at Global unless set).
    auto_regenerate_keyring: bool | None = None
    created_at: datetime = _ts()
    # A deletion under way (see services/controller/domains/deletion.py): set while the domain's
    # devices lose their trustpoints; nothing new is made in the domain meanwhile. The row goes
    # when the deletion completes.
    deletion_requested_at: datetime | None = _ts(nullable=True)
    deletion_requested_by: str = Field(default="", max_length=255)
    #: Where the devices go. No foreign key: should that domain be deleted first, they go to the parent.
    deletion_target_id: uuid.UUID | None = None
    #: The batch of delete jobs of the latest attempt (a retry starts a new one).
    deletion_batch_id: uuid.UUID | None = None

    __table_args__ = (UniqueConstraint("parent_id", "name"),)


class Device(SQLModel, table=True):
    """A managed device, reached through its device-management API."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    domain_id: uuid.UUID = Field(foreign_key="domain.id", index=True)
    name: str = Field(max_length=128, index=True)
    model: str = Field(default="", max_length=64)
    serial: str = Field(max_length=64, unique=True)
    ip_address: str = Field(default="", max_length=64)
    fqdn: str = Field(default="", max_length=255)
    #: Base URL of this device's management API, e.g. http://127.0.0.1:8400/api/devices/FTD-000001
    management_url: str = Field(max_length=512)
    weak_crypto: bool = False
    #: The version of certfleet's CA bundle the device last confirmed it holds ("" for none).
    bundle_version: str = Field(default="", max_length=32, index=True)
    # Health, as the last health check (or refresh, or keyring regeneration) read it from the device.
    #: Whether the default keyring's certificate is valid now; None until first read.
    keyring_valid: bool | None = Field(default=None, index=True)
    #: Why it is not valid ("expired", "not yet valid"), else None.
    keyring_reason: str | None = Field(default=None, max_length=64)
    keyring_not_after: datetime | None = _ts(nullable=True)
    health_checked_at: datetime | None = _ts(nullable=True)
    #: The last health read's failure (e.g. "device_unreachable: …"); None when it succeeded.
    health_error: str | None = Field(default=None, max_length=512)
    # Trust in the management endpoint (see shared.endpoint_trust): an admin's approval holds for the
    # management URL it was given for; None when no admin vouched for the device.
    endpoint_approved_url: str | None = Field(default=None, max_length=512)
    endpoint_approved_by: str | None = Field(default=None, max_length=255)
    endpoint_approved_at: datetime | None = _ts(nullable=True)
    #: The credential the device holds, which its secrets are sealed to (shared.sealed_secrets),
    #: stored sealed: never returned, never on a queue.
    endpoint_credential_blob: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = _ts()


class ManagementEndpoint(SQLModel, table=True):
    """An entry of the installation's allow-list of device management endpoints: devices whose
    management URL matches one are trusted with secrets (after authenticating). ``host`` is a DNS
    name or an IP network in CIDR form; ``port`` 0 matches any port."""

    __tablename__ = "management_endpoint"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    scheme: str = Field(max_length=8)
    host: str = Field(max_length=253)
    port: int = 0
    description: str = Field(default="", max_length=255)
    created_by: str = Field(default="", max_length=255)
    created_at: datetime = _ts()

    __table_args__ = (UniqueConstraint("scheme", "host", "port"),)


class EnrollmentObjectFields(SQLModel):
    """What an operator sets on a certificate enrollment object, for every enrollment type
    (fields a type does not use stay at their defaults).

    The one definition of these fields, their types and limits: the table below and the API's
    request and answer models all inherit it, so a value the API accepts always fits its column.
    Enrollment and key types are stored as their text values.
    """

    name: str = Field(min_length=1, max_length=64)
    description: str = Field(default="", max_length=1024)
    enrollment_type: EnrollmentType = Field(sa_type=AutoString(length=16))
    # Key
    key_type: KeyType = Field(default=KeyType.RSA, sa_type=AutoString(length=8))
    key_size: int = 2048
    # Certificate parameters
    common_name: str = Field(default="", max_length=64)
    organization: str = Field(default="", max_length=64)
    organizational_unit: str = Field(default="", max_length=64)
    locality: str = Field(default="", max_length=128)
    state: str = Field(default="", max_length=128)
    country: str = Field(default="", max_length=2)
    email: str = Field(default="", max_length=128)
    include_fqdn: bool = False
    include_device_ip: bool = False
    include_serial_number: bool = False
    validity_days: int = 365
    # EST / SCEP
    enrollment_url: str = Field(default="", max_length=512)
    username: str = Field(default="", max_length=128)
    #: The CA certificate's digest in hex. Room for SHA-512 written with colons (191 characters);
    #: stored without colons.
    fingerprint: str = Field(default="", max_length=200)
    ignore_server_validation: bool = False
    retry_period_minutes: int = 1
    retry_count: int = 10
    #: The CA endpoint's limits across every worker: enrollments at once, and started per second;
    #: shared by every object naming the same CA endpoint. None: the settings'
    #: CERTFLEET_CA_CONCURRENCY and CERTFLEET_CA_RATE_PER_SECOND.
    ca_concurrency_limit: int | None = Field(default=None, ge=1, le=10_000)
    ca_rate_limit: float | None = Field(default=None, gt=0, le=100_000)
    # Manual
    ca_certificate_pem: str = Field(default="", max_length=65536)
    ca_only: bool = False
    # Revocation checking (OCSP / CRL URLs; IPv6 literals in brackets)
    ocsp_url: str = Field(default="", max_length=512)
    crl_urls: list[str] = Field(default_factory=list, max_length=16, sa_type=JSON, nullable=False)
    # Revocation checking, as the device applies it to peers' certificates (and certfleet to
    # the installed identity certificates): CRL (from the certificate's distribution points and/or
    # the static crl_urls), OCSP (ocsp_url overrides the certificate's AIA), which first, and
    # whether a certificate counts as valid when no revocation information can be had.
    revocation_crl: bool = False
    crl_use_distribution_point: bool = True
    revocation_ocsp: bool = False
    #: "crl_first" or "ocsp_first", when both are on: the other answers when the first cannot.
    revocation_order: str = Field(default="crl_first", max_length=16)
    valid_if_unreachable: bool = False
    #: What peers a trustpoint's CA may validate: any of "ipsec_client", "ssl_client", "ssl_server".
    validation_usage: list[str] = Field(default_factory=lambda: ["ipsec_client", "ssl_client"], max_length=3,
                                        sa_type=JSON, nullable=False)
    #: Accept a CA certificate without the CA flag in its basic constraints.
    skip_ca_flag_check: bool = False
    #: Accept an identity certificate whose IPsec extended key usage is "IKE intermediate".
    ignore_ipsec_key_usage: bool = False
    # Renewal: certfleet re-enrolls EST, SCEP and self-signed trustpoints before their identity
    # certificate expires; manual and PKCS12 ones get a renewal-due warning instead.
    auto_renew: bool = True
    #: The renewal window as a share of the certificate's lifetime before it ends (default 1/3),
    #: or as days before it ends; at most one of the two is set.
    renew_before_fraction: float | None = Field(default=None, gt=0, lt=1)
    renew_before_days: int | None = Field(default=None, ge=1, le=36_500)
    #: Whether descendant domains may override some of these values for their own trustpoints
    #: (see :class:`EnrollmentOverride`).
    allow_overrides: bool = False


class EnrollmentObject(EnrollmentObjectFields, table=True):
    """A certificate enrollment object: how a trustpoint of its name gets its certificates.

    One table for every enrollment type; the fields a type does not use stay empty.
    Secrets (EST password, SCEP challenge, PKCS#12 file and passphrase) are stored
    encrypted in ``secret_blob`` and ``pkcs12_blob`` (see :mod:`shared.secrets`).
    """

    __tablename__ = "enrollment_object"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    domain_id: uuid.UUID = Field(foreign_key="domain.id", index=True)
    # Encrypted secrets: never returned by the API, never put on a queue.
    secret_blob: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    pkcs12_blob: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    pkcs12_filename: str = Field(default="", max_length=255)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()

    __table_args__ = (UniqueConstraint("domain_id", "name"),)


class EnrollmentOverride(SQLModel, table=True):
    """A descendant domain's own values for some fields of an enrollment object that allows
    overrides: trustpoints of that domain (and of its descendants, unless a nearer override
    applies) are deployed with them. Which fields may be overridden, and how the values merge,
    is :mod:`shared.enrollment_overrides`; the values are checked like the object's own.

    ``secret_blob`` is the override's own EST password or SCEP challenge, sealed like the object's
    (never returned). Deleted with its object or its domain.
    """

    __tablename__ = "enrollment_override"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    enrollment_object_id: uuid.UUID = Field(foreign_key="enrollment_object.id", ondelete="CASCADE", index=True)
    domain_id: uuid.UUID = Field(foreign_key="domain.id", ondelete="CASCADE", index=True)
    #: Overridden field -> value, only the overridden ones.
    values: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    secret_blob: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    created_at: datetime = _ts()
    updated_at: datetime = _ts()

    __table_args__ = (UniqueConstraint("enrollment_object_id", "domain_id"),)


class Trustpoint(SQLModel, table=True):
    """A (device, name) pair: an enrollment object installed on a device."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    device_id: uuid.UUID = Field(foreign_key="device.id", index=True)
    domain_id: uuid.UUID = Field(foreign_key="domain.id", index=True)
    enrollment_object_id: uuid.UUID = Field(foreign_key="enrollment_object.id", index=True)
    name: str = Field(max_length=255)
    enrollment_type: str = Field(max_length=16)
    ca_status: str = Field(default=Status.IN_PROGRESS.value, max_length=16)
    identity_status: str = Field(default=Status.IN_PROGRESS.value, max_length=16)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=2048)
    #: The CSR the device made, while an operator must get it signed (manual enrollment).
    csr_pem: str | None = None
    #: An identity certificate (and CA certificates) an operator imported, checked and waiting
    #: for its install job to put it on the device; cleared when installed.
    pending_identity_pem: str | None = None
    pending_ca_pem: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    status_changed_at: datetime | None = _ts(nullable=True)
    #: When the identity certificate is due for renewal: its renewal window's start plus a
    #: per-trustpoint jitter. Empty while a renewal job is out, and when there is nothing to renew.
    renewal_due_at: datetime | None = _ts(nullable=True)
    #: Renewal attempts that failed since the last success (their backoff grows with it).
    renewal_failures: int = 0
    last_renewal_at: datetime | None = _ts(nullable=True)
    renewal_error_code: str | None = Field(default=None, max_length=64)
    renewal_error_message: str | None = Field(default=None, max_length=2048)
    #: When the CA revoked the installed identity certificate, and why (RFC 5280 reason name),
    #: as the revocation scan found it.
    revoked_at: datetime | None = _ts(nullable=True)
    revocation_reason: str | None = Field(default=None, max_length=32)

    __table_args__ = (
        UniqueConstraint("device_id", "name"),
        Index("ix_trustpoint_statuses", "ca_status", "identity_status"),
        # The renewal pass reads the due trustpoints of the methods certfleet renews, oldest first.
        Index("ix_trustpoint_renewal", "enrollment_type", "renewal_due_at"),
        # The alert pass reads the few trustpoints whose renewal failed.
        Index("ix_trustpoint_renewal_failed", "renewal_failures", sqlite_where=text("renewal_failures > 0"),
              postgresql_where=text("renewal_failures > 0")),
    )


class Certificate(SQLModel, table=True):
    """A certificate installed in a trustpoint, with the fields the operator views."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    trustpoint_id: uuid.UUID = Field(foreign_key="trustpoint.id", index=True)
    #: The job that installed it: one job can install at most one certificate per slot.
    job_id: uuid.UUID | None = None
    role: str = Field(max_length=16)  # identity | ca
    #: 0 for the identity certificate and the issuing CA; counts up towards the root.
    chain_position: int = 0
    pem: str
    subject: str = Field(max_length=1024)
    issuer: str = Field(max_length=1024)
    serial_number: str = Field(max_length=64)
    not_before: datetime = _ts()
    not_after: datetime = _ts(index=True)
    key_algorithm: str = Field(max_length=32)
    key_size: int
    signature_algorithm: str = Field(max_length=64)
    fingerprint_sha256: str = Field(max_length=64)
    created_at: datetime = _ts()

    __table_args__ = (UniqueConstraint("trustpoint_id", "role", "chain_position"),)


class Job(SQLModel, table=True):
    """One unit of work on one trustpoint; claimed by a worker with a conditional update."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    # No foreign keys: a job is also the record of what happened to a trustpoint or
    # device that has since been deleted.
    kind: str = Field(max_length=32)
    trustpoint_id: uuid.UUID | None = Field(default=None, index=True)
    device_id: uuid.UUID = Field(index=True)
    domain_id: uuid.UUID
    #: The trustpoint's name, kept so a delete job still says what it deleted.
    trustpoint_name: str = Field(max_length=255)
    state: str = Field(default=JobState.QUEUED.value, max_length=16, index=True)
    attempts: int = 0
    max_attempts: int = 5
    #: Times the job waited for its CA (busy or down) without spending an attempt.
    ca_waits: int = 0
    #: Until when the current holder owns the job; after that the reconciler re-publishes it.
    lease_expires_at: datetime | None = _ts(nullable=True, index=True)
    #: When a transient failure's retry is due (the message is delayed until then).
    next_attempt_at: datetime | None = _ts(nullable=True)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=2048)
    #: [{"at": iso time, "step": name, "detail": text}, …]
    steps: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    batch_id: uuid.UUID | None = Field(default=None, index=True)
    #: Why the job exists: an operator's request, a bulk action, or the scheduler's renewal.
    reason: str = Field(default=JobReason.OPERATOR.value, max_length=16)
    created_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)


class Batch(SQLModel, table=True):
    """A bulk operation: one enrollment object installed on a selection of devices (``enroll``),
    or one trustpoint action (re-enroll, refresh, delete) over a selection of trustpoints.

    Its progress is never stored here: counts are derived from its jobs, so they stay right
    whatever the broker did.
    """

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    domain_id: uuid.UUID = Field(foreign_key="domain.id", index=True)
    #: ``enroll`` for a bulk enrollment, else the trustpoint action (a JobKind value).
    action: str = Field(default="enroll", max_length=32)
    #: The enrollment object installed, or the one whose trustpoints an action selects; none for
    #: a CA-bundle push (``bundle_update``), which is about devices.
    enrollment_object_id: uuid.UUID | None = Field(default=None, foreign_key="enrollment_object.id")
    trustpoint_name: str = Field(default="", max_length=255)
    #: The selection as the operator gave it.
    selection: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: Devices (enroll) or trustpoints (actions) selected, and those skipped: devices that
    #: already had the trustpoint, trustpoints busy with an unfinished job.
    selected: int = 0
    skipped: int = 0
    requested_by: str = Field(default="", max_length=255)
    created_at: datetime = _ts()


class AuditEntry(SQLModel, table=True):
    """One change asked of certfleet, whether it was made or refused: when, who (an API token, or
    an operator on the controller's host), the domain it was addressed to, what (a stable action
    name, the route and the ids in its path) and how it ended.

    Never a request body or query string, so never a secret. No foreign keys: the record
    outlives the token, device and domain it names.
    """

    __tablename__ = "audit_entry"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    at: datetime = _ts()
    #: Where the entry is filed (who may read it): the domain the action was addressed to.
    domain_id: uuid.UUID
    #: "api" (an API token) or "cli" (a command on the database directly).
    channel: str = Field(max_length=8)
    #: The API token's id, name, role and home domain; empty when the token was not accepted.
    token_id: uuid.UUID | None = None
    token_name: str = Field(default="", max_length=128)
    role: str = Field(default="", max_length=16)
    home_domain_id: uuid.UUID | None = None
    #: For a command run on the controller's host: the operating-system user and host.
    operator: str = Field(default="", max_length=255)
    #: The route's name (``update_device``) or the command's (``token_revoke``).
    action: str = Field(max_length=64)
    method: str = Field(default="", max_length=8)
    #: The route's path template, e.g. /api/v1/domains/{domain_id}/devices/{device_id}.
    path: str = Field(default="", max_length=255)
    #: The path's parameters (ids and names), as sent.
    targets: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: The device the action was about, and its most specific other id (an object, job, token…, or
    #: the id of what it created).
    device_id: uuid.UUID | None = None
    target_id: uuid.UUID | None = None
    #: What a route adds that its path does not say (an export's format); never a secret.
    details: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: The HTTP status answered (None for a command), "ok" or "failed", and the problem's code.
    status: int | None = None
    outcome: str = Field(max_length=8)
    error_code: str | None = Field(default=None, max_length=64)

    __table_args__ = (
        # A domain's log, newest first; the whole installation's (and the retention pass) by time.
        Index("ix_audit_entry_domain_at", "domain_id", "at"),
        Index("ix_audit_entry_at", "at"),
        Index("ix_audit_entry_device_id", "device_id"),
        Index("ix_audit_entry_target_id", "target_id"),
    )


class Schedule(SQLModel, table=True):
    """A recurring run of the scheduler: when it runs next, and how its last run went.

    Kept in the database so a restart neither loses nor repeats a run: a run is claimed by moving
    ``next_run_at`` on in the same conditional update that marks it started.
    """

    name: str = Field(primary_key=True, max_length=64)
    #: A cron expression (minute hour day month weekday), or empty for ``interval_seconds``.
    cron: str = Field(default="", max_length=128)
    interval_seconds: int | None = None
    enabled: bool = True
    next_run_at: datetime = _ts(index=True)
    #: The run under way: its id and start, cleared when it ends. A run whose leader died keeps
    #: them until the next leader records it as interrupted (it is not run again).
    run_id: uuid.UUID | None = None
    run_started_at: datetime | None = _ts(nullable=True)
    last_run_at: datetime | None = _ts(nullable=True)
    last_finished_at: datetime | None = _ts(nullable=True)
    #: succeeded | failed | interrupted
    last_outcome: str = Field(default="", max_length=16)
    last_detail: str = Field(default="", max_length=2048)


class LeaderLease(SQLModel, table=True):
    """Who leads a role (the scheduler) among several controllers, and until when.

    Taken and renewed with conditional updates. ``token`` grows with every change of holder: a
    leader's writes check it, so a leader that stalled past its lease cannot write after another
    took over (a fencing token).
    """

    __tablename__ = "leader_lease"

    name: str = Field(primary_key=True, max_length=64)
    holder: str = Field(default="", max_length=128)
    token: int = 0
    expires_at: datetime = _ts()


class CaBundleState(SQLModel, table=True):
    """certfleet's own CA bundle: the CA certificates it trusts for the TLS servers it connects to,
    and pushes to every device. One row, replaced in one transaction (a failed update leaves the
    old bundle whole)."""

    __tablename__ = "ca_bundle"

    name: str = Field(default="certfleet", primary_key=True, max_length=32)
    version: str = Field(default="", max_length=32)
    sha256: str = Field(default="", max_length=64)
    pem: str = ""
    certificates: int = 0
    #: The bundle source it came from, and when that source published it.
    source_url: str = Field(default="", max_length=512)
    published_at: datetime | None = _ts(nullable=True)
    #: When it was installed here ("CA bundle was last modified …").
    last_modified: datetime | None = _ts(nullable=True)


class CaBundleUpdate(SQLModel, table=True):
    """One CA-bundle test or update and its outcome: who asked (or which schedule), the versions,
    whether it was forced, and the servers that failed their connection check."""

    __tablename__ = "ca_bundle_update"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    #: test | run-now | schedule
    action: str = Field(max_length=16)
    requested_by: str = Field(default="", max_length=255)
    #: updated | up_to_date | failed_checks | forced | invalid | unreachable | checks_passed
    outcome: str = Field(max_length=16)
    forced: bool = False
    old_version: str = Field(default="", max_length=32)
    new_version: str = Field(default="", max_length=32)
    #: [{"server": "host:port", "reason": "…"}, …]
    failed_servers: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    detail: str = Field(default="", max_length=2048)
    batch_id: uuid.UUID | None = None
    created_at: datetime = _ts(index=True)


class Alert(SQLModel, table=True):
    """A condition someone should react to: a device's F0853 (expired default keyring) or one of
    certfleet's own codes (see :class:`shared.enums.AlertCode`).

    At most one alert per condition is open (active or acknowledged): ``condition_key`` names the
    condition (code, device, trustpoint, resource) while the alert is open, and is emptied (NULL)
    when it clears, so a unique index allows one open alert per condition and any number of
    cleared ones. No foreign keys: a cleared alert outlives the device it named.
    """

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    code: str = Field(max_length=32, index=True)
    severity: str = Field(max_length=16)
    description: str = Field(max_length=1024)
    domain_id: uuid.UUID = Field(index=True)
    device_id: uuid.UUID | None = Field(default=None, index=True)
    device_name: str = Field(default="", max_length=128)
    trustpoint_id: uuid.UUID | None = None
    trustpoint_name: str = Field(default="", max_length=255)
    #: What the alert is about when it is no device or trustpoint, e.g. a CA endpoint.
    resource: str = Field(default="", max_length=512)
    condition_key: str | None = Field(default=None, max_length=700, unique=True)
    state: str = Field(max_length=16, index=True)
    first_seen: datetime = _ts()
    last_seen: datetime = _ts()
    acknowledged_by: str = Field(default="", max_length=255)
    acknowledged_at: datetime | None = _ts(nullable=True)
    cleared_at: datetime | None = _ts(nullable=True)


class AlertEvent(SQLModel, table=True):
    """An alert's change (raised, updated, acknowledged, cleared) as a CloudEvent, written in the
    transaction that changed the alert (an outbox): the relay copies it to the Redis stream and
    to the webhooks that want it, so a crash between the change and its delivery loses nothing."""

    __tablename__ = "alert_event"

    #: Order of the changes; the relay moves events on in this order.
    seq: int | None = Field(default=None, primary_key=True)
    #: The CloudEvent's id: consumers drop a repeated delivery by it.
    id: uuid.UUID = Field(default_factory=uuid.uuid4, unique=True)
    alert_id: uuid.UUID = Field(index=True)
    domain_id: uuid.UUID
    code: str = Field(max_length=32)
    severity: str = Field(max_length=16)
    #: The CloudEvent's type, e.g. io.certfleet.alert.raised.
    type: str = Field(max_length=64)
    time: datetime = _ts()
    #: The whole CloudEvent (JSON), as consumers get it.
    cloudevent: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    #: When the relay put it on the stream and queued its webhook deliveries; None until then.
    relayed_at: datetime | None = _ts(nullable=True, index=True)


class Webhook(SQLModel, table=True):
    """A domain's webhook: alert events of the domain's subtree POSTed to a URL, signed with
    HMAC-SHA256 using a secret that is stored encrypted and never returned."""

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    domain_id: uuid.UUID = Field(foreign_key="domain.id", index=True)
    name: str = Field(default="", max_length=128)
    url: str = Field(max_length=512)
    #: Alert codes to send; empty for every code.
    codes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    #: Severities to send; empty for every severity.
    severities: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    secret_blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    enabled: bool = True
    created_by: str = Field(default="", max_length=255)
    created_at: datetime = _ts()


class WebhookDelivery(SQLModel, table=True):
    """One alert event for one webhook: its attempts and where it stands (the delivery log)."""

    __tablename__ = "webhook_delivery"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    webhook_id: uuid.UUID = Field(index=True)
    event_id: uuid.UUID
    event_seq: int
    event_type: str = Field(max_length=64)
    alert_id: uuid.UUID
    state: str = Field(default="pending", max_length=16)
    attempts: int = 0
    next_attempt_at: datetime = _ts()
    #: The receiver's last HTTP status (None: no answer), and the last failure in words.
    last_status: int | None = None
    last_error: str = Field(default="", max_length=512)
    created_at: datetime = _ts()
    delivered_at: datetime | None = _ts(nullable=True)

    __table_args__ = (
        UniqueConstraint("webhook_id", "event_id"),
        # The relay reads the pending deliveries that are due.
        Index("ix_webhook_delivery_due", "state", "next_attempt_at"),
    )


class ApiToken(SQLModel, table=True):
    """An API bearer token, stored as its SHA-256 hash.

    It acts in its home domain and the domains below it, with its role, until it expires or is
    revoked. Rows are kept after revocation, so the token list says who revoked what when."""

    __tablename__ = "api_token"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=16)
    name: str = Field(default="", max_length=128)
    domain_id: uuid.UUID = Field(default=GLOBAL_DOMAIN_ID, foreign_key="domain.id", index=True)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    revoked_at: datetime | None = _ts(nullable=True)
    #: When the token was last accepted, to the minute (it is written at most once a minute).
    last_used_at: datetime | None = _ts(nullable=True)

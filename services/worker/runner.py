"""Running one job: claim it, talk to the device, record the outcome.

The sequence for every kind:

1. claim the job (one conditional UPDATE) and load its trustpoint, device and enrollment
   object (for a CA-bundle push, which is about a device alone: the device and certfleet's
   current CA bundle; for a keyring regeneration, the device), in one transaction committed at once;
2. run the exchange for the job's kind with the device; no database connection is held
   meanwhile (a configuration carrying a secret goes only to a trusted endpoint, sealed to the
   device's credential, and the device's answer must prove it holds it: :mod:`.endpoint_gate`);
3. in one transaction fenced by the claim's attempt number: record the outcome on the job
   and the trustpoint (certificates, statuses) or the device (its CA bundle version, its
   default keyring), then commit.

A refresh also reads the device's default keyring and records it as a health check does
(:mod:`.health`); a keyring that cannot be read is recorded as such and does not fail the refresh.

A transient error below the job's attempt limit puts the job back to queued and
re-publishes its message with a backoff delay; at the limit, or on a permanent error, the
job fails with a code and a message a person can act on. Any other exception releases
the claim and propagates, so Dramatiq's own retry can claim the job again.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

import dramatiq
from sqlmodel import Session, select

from services.worker import exchanges, health, job_metrics, jobstore, persist, renewal_state
from services.worker.ca_waiting import CaWait, PermitCarry, park_delay_ms, through_ca_gate
from services.worker.context import WorkerContext
from services.worker.endpoint_gate import ensure_may_receive_secrets
from services.worker.exchanges import DeviceReport
from services.worker.jobstore import ClaimedJob
from services.worker.parameters import check_secret_present, trustpoint_configuration
from services.worker.persist import LockedTrustpoint
from services.worker.steps import StepLog
from shared import object_reach
from shared.db import session_scope
from shared.device_client import DeviceTransientError
from shared.enrollment_overrides import overridden_fields
from shared.enums import CertificateRole, JobKind
from shared.errors import (
    CertfleetError,
    ConfigurationError,
    PermanentError,
    TransientError,
    ValidationError,
)
from shared.events import JOBS_QUEUE, publish_job
from shared.logging import get_logger
from shared.models import CaBundleState, Device, EnrollmentObject, EnrollmentOverride, Job, Trustpoint
from shared.override_lookup import applied_in
from shared.states import Status


def log():
    # A logger per use follows the logging configuration in force: structlog would pin a
    # module-level logger to the configuration of its first use.
    return get_logger(__name__)


#: The row of certfleet's own CA bundle, the one a CA-bundle push gives every device.
CA_BUNDLE_NAME = "certfleet"
#: Kinds whose permanent failure is also the trustpoint's (a delete, an import, a CA-bundle push
#: and a keyring regeneration leave the trustpoint's certificates as they were).
MARKS_TRUSTPOINT = frozenset({JobKind.ENROLL, JobKind.RE_ENROLL, JobKind.REFRESH})

#: Kinds that send the enrollment object's values (and secrets) to the device: each checks first that
#: the device's domain may still use the object.
DEPLOYS_OBJECT = frozenset({JobKind.ENROLL, JobKind.RE_ENROLL, JobKind.INSTALL_IDENTITY})

Result = Literal["succeeded", "failed", "retry_scheduled", "waiting_for_ca", "skipped"]


@dataclass(frozen=True, kw_only=True)
class JobOutcome:
    job_id: uuid.UUID | None
    result: Result
    kind: JobKind | None = None
    attempt: int = 0
    code: str | None = None
    delay_ms: int | None = None


@dataclass(frozen=True, kw_only=True)
class Subject:
    """The rows a job is about, as loaded after the claim. Any may be gone."""

    trustpoint: Trustpoint | None
    device: Device | None
    #: As the trustpoint's domain gets it: with the values (and secret) of the override that applies.
    enrollment_object: EnrollmentObject | None
    #: The override applied, if any (its domain and fields, for the job's steps and errors).
    override: EnrollmentOverride | None = None
    #: certfleet's CA bundle, for a CA-bundle push (None: there is none yet).
    bundle: CaBundleState | None = None
    #: Why the enrollment object may not be deployed to the device (its domain may not use it
    #: since the device moved), for the kinds that deploy it; None when it may.
    not_usable: str | None = None


def run_job(
    ctx: WorkerContext,
    job_id: str | uuid.UUID,
    *,
    broker: dramatiq.Broker | None = None,
    queue: str = JOBS_QUEUE,
    expected_kind: JobKind | None = None,
) -> JobOutcome:
    """Run the job once. ``broker`` and ``queue`` are where a retry is re-published
    (no broker: the retry is only recorded, for tests that drive the runner directly)."""
    try:
        job_id = job_id if isinstance(job_id, uuid.UUID) else uuid.UUID(str(job_id))
    except ValueError:
        log().error("message does not carry a job id; dropped", job_id=str(job_id)[:64])
        return JobOutcome(job_id=None, result="skipped")
    with session_scope(ctx.engine) as session:
        held = prefetch(session, job_id)  # noqa: F841  (the session keeps only weak references)
        claimed = jobstore.take_claim(
            session, job_id, now=ctx.clock(), lease_seconds=ctx.settings.job_lease_seconds, holder=ctx.holder
        )
        if claimed is None:
            return JobOutcome(job_id=job_id, result="skipped")
        # Read in the claim's own transaction: one database round trip per job fewer.
        subject = load_subject(session, claimed)
        session.commit()
    if expected_kind is not None and expected_kind is not claimed.kind:
        log().warning("message names another kind than the job; the job's kind wins", job_id=str(job_id),
                      message_kind=expected_kind.value, job_kind=claimed.kind.value)
    run = _JobRun(ctx, claimed, subject, broker=broker, queue=queue)
    try:
        return run.execute()
    except BaseException as exc:  # a dropped database connection, the time limit, a bug
        run.release(exc)
        raise


def prefetch(session: Session, job_id: uuid.UUID) -> object:
    """Read the job with its trustpoint, device and enrollment object in one query, into the
    session: the claim and :func:`load_subject` then find them there instead of asking again, as
    long as the caller holds the row returned (the session's identity map holds rows weakly)."""
    return session.exec(
        select(Job, Trustpoint, Device, EnrollmentObject)
        .outerjoin(Trustpoint, Trustpoint.id == Job.trustpoint_id)  # type: ignore[arg-type]
        .outerjoin(Device, Device.id == Job.device_id)  # type: ignore[arg-type]
        .outerjoin(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)  # type: ignore[arg-type]
        .where(Job.id == job_id)
    ).first()


def prefetch_many(session: Session, job_ids: list[uuid.UUID]) -> list[object]:
    """:func:`prefetch` for the jobs of a batch, in one query."""
    if not job_ids:
        return []
    return list(session.exec(
        select(Job, Trustpoint, Device, EnrollmentObject)
        .outerjoin(Trustpoint, Trustpoint.id == Job.trustpoint_id)  # type: ignore[arg-type]
        .outerjoin(Device, Device.id == Job.device_id)  # type: ignore[arg-type]
        .outerjoin(EnrollmentObject, EnrollmentObject.id == Trustpoint.enrollment_object_id)  # type: ignore[arg-type]
        .where(Job.id.in_(job_ids))  # type: ignore[attr-defined]
    ).all())


def load_subject(session: Session, claimed: ClaimedJob) -> Subject:
    """The job's trustpoint with its device and enrollment object (found in the session when
    :func:`prefetch` read them); for a CA-bundle push, the device and the current bundle; for a
    keyring regeneration, the device."""
    if claimed.kind is JobKind.BUNDLE_UPDATE:
        return Subject(trustpoint=None, device=session.get(Device, claimed.device_id), enrollment_object=None,
                       bundle=session.get(CaBundleState, CA_BUNDLE_NAME))
    if claimed.kind is JobKind.REGENERATE_KEYRING:
        return Subject(trustpoint=None, device=session.get(Device, claimed.device_id), enrollment_object=None)
    if claimed.trustpoint_id is not None:
        trustpoint = session.get(Trustpoint, claimed.trustpoint_id)
        device = session.get(Device, trustpoint.device_id) if trustpoint is not None else None
        obj = session.get(EnrollmentObject, trustpoint.enrollment_object_id) if trustpoint is not None else None
        if trustpoint is not None and device is not None and obj is not None:
            not_usable = None
            if claimed.kind in DEPLOYS_OBJECT:
                not_usable = object_reach.refusal(
                    session, trustpoint=trustpoint.name, device=device.name, object_name=obj.name,
                    object_domain_id=obj.domain_id, domain_id=trustpoint.domain_id)
            # Every job of the trustpoint (enroll and re-enroll from an operator, a bulk action or the
            # renewal pass, an import) sees the object as the trustpoint's domain gets it.
            applied = applied_in(session, obj, trustpoint.domain_id)
            return Subject(trustpoint=trustpoint, device=device, enrollment_object=applied.obj,
                           override=applied.override, not_usable=not_usable)
    return Subject(trustpoint=None, device=session.get(Device, claimed.device_id), enrollment_object=None)


@dataclass(frozen=True, kw_only=True)
class Finish:
    """A job that succeeded, waiting for its outcome to be committed."""

    run: _JobRun
    #: Writes the outcome, given the job's trustpoint locked (None: the job has none, or it is gone).
    record: Callable[[Session, LockedTrustpoint | None], None]
    #: The trustpoint to lock for ``record``; None when ``record`` needs none.
    trustpoint_id: uuid.UUID | None
    enrollment: str | None
    steps: list
    #: Called with the final outcome once committed (or lost).
    then: Callable[[JobOutcome], None] | None = None


def commit_finishes(ctx: WorkerContext, finishes: list[Finish]) -> list[JobOutcome]:
    """Commit successes in one transaction: every job's fence first, in id order (a job another
    holder took over records nothing), then the trustpoints of the jobs still held, locked in id
    order with one statement, then each job's record. Job rows before trustpoints, each in id order,
    as every writer takes them, so two batches never wait on each other in a cycle."""
    ordered = sorted(finishes, key=lambda f: f.run.claimed.id)
    with session_scope(ctx.engine) as session:
        now = ctx.clock()
        fenced = jobstore.finish_jobs(session, [(f.run.claimed, f.steps) for f in ordered], now=now)
        held = [finish for finish, kept in zip(ordered, fenced, strict=True) if kept]
        locked = persist.lock_trustpoints(session, [f.trustpoint_id for f in held if f.trustpoint_id is not None])
        # Their certificates read and written a statement each for the whole batch.
        book = persist.CertificateBook.open_for(session, list(locked)) if len(held) > 1 else None
        for finish in held:
            finish.record(session, locked.get(finish.trustpoint_id) if finish.trustpoint_id is not None else None)
        if book is not None:
            book.write(session)
        session.commit()
    kept = {id(f) for f in held}
    return [f.run.finished(f, held=id(f) in kept) for f in finishes]


def gave_up_message(error: TransientError, attempts: int) -> str:
    if isinstance(error, DeviceTransientError):
        return error.after_attempts(attempts)
    return f"{error.message} (gave up after {_attempts(attempts)})"


def _attempts(count: int) -> str:
    return f"{count} attempt{'s' if count != 1 else ''}"


class _JobRun:
    """One attempt at one claimed job."""

    def __init__(self, ctx: WorkerContext, claimed: ClaimedJob, subject: Subject, *,
                 broker: dramatiq.Broker | None, queue: str, finishing: list[Finish] | None = None,
                 permits: PermitCarry | None = None) -> None:
        self.ctx, self.claimed = ctx, claimed
        self.broker, self.queue = broker, queue
        #: Where a batch collects its successes, committed together (None: each commits at once).
        self.finishing = finishing
        #: A batch's CA permit carried from one enrollment to the next (None: given back at once).
        self.permits = permits
        #: Why the job waited for its CA, when it did (a batch parks its other jobs of that CA too).
        self.parked: CaWait | None = None
        self.kind = claimed.kind
        self.steps = StepLog(ctx.clock)
        self.started = time.perf_counter()
        self.subject = subject
        self.method: str | None = None

    def execute(self) -> JobOutcome:
        if self.subject.trustpoint is not None:
            self.method = self.subject.trustpoint.enrollment_type
        try:
            if self.claimed.attempts > self.claimed.max_attempts:
                # Earlier holders stopped without recording an outcome (killed, or an unexpected error).
                raise PermanentError(
                    f"gave up after {_attempts(self.claimed.max_attempts)}: the workers running this job "
                    "stopped before finishing it (see their logs); start the operation again",
                    code="attempts_exhausted",
                )
            if self.kind in (JobKind.ENROLL, JobKind.RE_ENROLL):
                return self._enroll()
            if self.kind is JobKind.REFRESH:
                return self._refresh()
            if self.kind is JobKind.INSTALL_IDENTITY:
                return self._install_identity()
            if self.kind is JobKind.BUNDLE_UPDATE:
                return self._push_bundle()
            if self.kind is JobKind.REGENERATE_KEYRING:
                return self._regenerate_keyring()
            if self.kind is JobKind.DELETE:
                return self._delete()
            raise PermanentError(f"this worker cannot run a {self.kind.value} job; upgrade the workers",
                                 code="unknown_job_kind")
        except CaWait as wait:
            return self._park(wait)
        except TransientError as exc:
            return self._transient(exc)
        except (PermanentError, ValidationError, ConfigurationError) as exc:
            # ConfigurationError: a stored secret this worker cannot open (another secret key).
            # A refused import leaves the trustpoint waiting for a good certificate: the job says why.
            return self._fail(exc.code, exc.message, report=getattr(exc, "report", None),
                              mark_trustpoint=self.kind in MARKS_TRUSTPOINT)

    # --- the kinds -----------------------------------------------------------------------------

    def _require(self) -> tuple[Trustpoint, Device, EnrollmentObject]:
        s, name = self.subject, self.claimed.trustpoint_name
        if s.device is None:
            raise PermanentError(f"the device of trustpoint {name} was removed before the job ran",
                                 code="device_gone")
        if s.trustpoint is None or s.enrollment_object is None:
            raise PermanentError(
                f"trustpoint {name} of device {s.device.serial} was deleted before the job ran",
                code="trustpoint_gone",
            )
        return s.trustpoint, s.device, s.enrollment_object

    def _require_deployable(self) -> tuple[Trustpoint, Device, EnrollmentObject]:
        """As :meth:`_require`, and the device's domain may still use the object (a job queued before
        the device moved finds out here, before anything is sent)."""
        found = self._require()
        if self.subject.not_usable is not None:
            raise PermanentError(self.subject.not_usable, code=object_reach.CODE)
        return found

    def _note_override(self) -> None:
        override = self.subject.override
        if override is not None:
            self.steps.add("override", f"values of domain {override.domain_id}'s override: "
                                       + ", ".join(overridden_fields(override.values)))

    def _enroll(self) -> JobOutcome:
        trustpoint, device, obj = self._require_deployable()
        self._note_override()
        check_secret_present(obj, renewal=self.kind is JobKind.RE_ENROLL, override=self.subject.override)
        params = trustpoint_configuration(obj, device, name=trustpoint.name, secrets=self.ctx.secrets)
        devices = ensure_may_receive_secrets(self.ctx, device, params, steps=self.steps)
        mode = "re_enroll" if self.kind is JobKind.RE_ENROLL else "enroll"
        with through_ca_gate(self.ctx.ca_gate, obj, self.ctx.settings, rng=self.ctx.rng, wall_clock=self.ctx.clock,
                             carry=self.permits):
            report = exchanges.enroll(devices, device, params, mode=mode, steps=self.steps)
        self.steps.add("installed", _installed(report))

        def write(session: Session, locked: LockedTrustpoint) -> persist.InstalledIdentity | None:
            return persist.apply_report(session, locked, report, job_id=self.claimed.id, now=self.ctx.clock())

        enrollment = "pending" if Status.PENDING in (report.ca, report.identity) else "succeeded"
        return self._succeed(write, enrollment=enrollment)

    def _refresh(self) -> JobOutcome:
        trustpoint, device, _ = self._require()
        report = exchanges.refresh(self.ctx.devices, device, trustpoint.name, steps=self.steps)
        self.steps.add("synced", "trustpoint marked missing" if report is None else _installed(report))
        # The device is at hand: its health is read too. A failed read is recorded, not raised.
        keyring = health.read_keyring(self.ctx.devices, device, device.id)
        self.steps.add("keyring", f"device {device.serial}: {keyring.describe()}")
        invalid = health.invalid_keyrings([(device, keyring)])
        policy_jobs: list[uuid.UUID] = []

        def write(session: Session, locked: LockedTrustpoint) -> persist.InstalledIdentity | None:
            now = self.ctx.clock()
            identity = None
            if report is None:
                persist.mark_missing(session, locked, serial=device.serial, now=now)
            else:
                identity = persist.apply_report(session, locked, report, job_id=self.claimed.id, now=now)
            health.record_readings(session, [keyring], now=now)
            policy_jobs.extend(health.regenerate_by_policy(session, invalid, settings=self.ctx.settings, now=now))
            return identity

        def publish(outcome: JobOutcome) -> None:
            health.publish_policy_jobs(self.broker, policy_jobs if outcome.result == "succeeded" else [])

        return self._succeed(write, then=publish)

    def _install_identity(self) -> JobOutcome:
        trustpoint, device, obj = self._require_deployable()
        if not trustpoint.pending_identity_pem:
            raise PermanentError(
                f"trustpoint {trustpoint.name} of device {device.serial} has no imported identity "
                "certificate waiting to be installed; import it again",
                code="nothing_to_install",
            )
        params = trustpoint_configuration(obj, device, name=trustpoint.name, secrets=self.ctx.secrets)
        devices = ensure_may_receive_secrets(self.ctx, device, params, steps=self.steps)
        report = exchanges.install_identity(
            devices, device, params, certificate_pem=trustpoint.pending_identity_pem,
            ca_certificate_pem=trustpoint.pending_ca_pem, steps=self.steps,
        )
        self.steps.add("installed", _installed(report))

        def write(session: Session, locked: LockedTrustpoint) -> persist.InstalledIdentity | None:
            persist.clear_imported(locked)
            return persist.apply_report(session, locked, report, job_id=self.claimed.id, now=self.ctx.clock())

        return self._succeed(write)

    def _delete(self) -> JobOutcome:
        device, name = self.subject.device, self.claimed.trustpoint_name
        if device is None:
            self.steps.add("deleted_on_device",
                           f"the device of trustpoint {name} is no longer registered; nothing to remove")
        else:
            exchanges.delete(self.ctx.devices, device, name, steps=self.steps)
        self.steps.add("deleted", f"removed trustpoint {name} and its certificates")
        def write(session: Session, locked: LockedTrustpoint) -> None:
            persist.remove_trustpoint(session, locked)

        return self._succeed(write)

    def _push_bundle(self) -> JobOutcome:
        device, bundle = self.subject.device, self.subject.bundle
        if device is None:
            raise PermanentError("the device was removed before certfleet's CA bundle was pushed to it",
                                 code="device_gone")
        if bundle is None or not bundle.version or not bundle.pem:
            raise PermanentError(
                f"certfleet has no CA bundle to push to device {device.serial}; install one first "
                "(certfleet cert-update run-now), then push it again",
                code="no_ca_bundle",
            )
        version = bundle.version
        exchanges.push_ca_bundle(self.ctx.devices, device, version=version, pem=bundle.pem, steps=self.steps)
        return self._commit_success(lambda session, _: persist.record_bundle_version(session, device.id, version))

    def _regenerate_keyring(self) -> JobOutcome:
        device = self.subject.device
        if device is None:
            raise PermanentError("the device was removed before its default keyring was regenerated",
                                 code="device_gone")
        state = exchanges.regenerate_keyring(self.ctx.devices, device, steps=self.steps)
        reading = health.KeyringReading.of(device.id, state)
        return self._commit_success(
            lambda session, _: health.record_readings(session, [reading], now=self.ctx.clock()))

    # --- outcomes --------------------------------------------------------------------------------

    def _succeed(
        self, write: Callable[[Session, LockedTrustpoint], persist.InstalledIdentity | None], *,
        enrollment: str | None = None, then: Callable[[JobOutcome], None] | None = None,
    ) -> JobOutcome:
        """``write`` records the job's outcome on the locked trustpoint and returns its identity
        certificate's row as written (the renewal plan follows from it)."""
        def record(session: Session, locked: LockedTrustpoint | None) -> None:
            if locked is not None:
                identity = write(session, locked)
                if self.kind is not JobKind.DELETE:
                    renewal_state.after_success(
                        session, locked, self.subject.enrollment_object, identity=identity, job_id=self.claimed.id,
                        reason=self.claimed.reason, now=self.ctx.clock(), settings=self.ctx.settings)

        return self._commit_success(record, enrollment=enrollment, trustpoint_id=self.claimed.trustpoint_id,
                                    then=then)

    def _commit_success(self, record: Callable[[Session, LockedTrustpoint | None], None], *,
                        enrollment: str | None = None, trustpoint_id: uuid.UUID | None = None,
                        then: Callable[[JobOutcome], None] | None = None) -> JobOutcome:
        """Finish the job and ``record`` its outcome (with the job's trustpoint ``trustpoint_id`` locked,
        when given) in one transaction: at once, or with the rest of the batch's successes when the job
        runs in a batch (the outcome returned is then the expected one; the batch says the final one)."""
        finish = Finish(run=self, record=record, trustpoint_id=trustpoint_id, enrollment=enrollment,
                        steps=self.steps.drain(), then=then)
        if self.finishing is not None:
            self.finishing.append(finish)
            return self._outcome("succeeded")
        (outcome,) = commit_finishes(self.ctx, [finish])
        return outcome

    def finished(self, finish: Finish, *, held: bool) -> JobOutcome:
        """After the commit of ``finish``: ``held`` when the job was still this worker's to finish."""
        if not held:
            outcome = self._lost()
        else:
            self._finished("succeeded", enrollment=finish.enrollment)
            log().info("job succeeded", job_id=str(self.claimed.id), kind=self.kind.value,
                       attempt=self.claimed.attempts, trustpoint=self.claimed.trustpoint_name)
            outcome = self._outcome("succeeded")
        if finish.then is not None:
            finish.then(outcome)
        return outcome

    def _transient(self, error: TransientError) -> JobOutcome:
        attempt = self.claimed.attempts
        if self.claimed.out_of_attempts:
            # A refresh or delete that cannot reach the device says nothing new about the
            # certificates: only an enrollment marks the trustpoint failed.
            return self._fail(error.code, gave_up_message(error, attempt),
                              mark_trustpoint=self.kind in (JobKind.ENROLL, JobKind.RE_ENROLL))
        delay = self.ctx.retry.delay_ms(attempt, rng=self.ctx.rng, retry_after=error.retry_after)
        self.steps.add("retry_scheduled", f"{error.code}: {error.message}; attempt {attempt} of "
                                          f"{self.claimed.max_attempts} failed, next in {delay / 1000:.2f} s")
        if not self._requeue(delay, error.code, error.message, waiting_for_ca=False):
            return self._lost()
        log().info("job will be retried", job_id=str(self.claimed.id), kind=self.kind.value, attempt=attempt,
                 code=error.code, error=error.message, delay_ms=delay)
        return self._outcome("retry_scheduled", code=error.code, delay_ms=delay)

    def park(self, wait: CaWait) -> JobOutcome:
        """Wait for the CA as another job of the same batch was told to, without asking its gate."""
        return self._park(wait)

    def _park(self, wait: CaWait) -> JobOutcome:
        """The CA is busy or down: back to queued until a jittered, growing delay has passed,
        the attempt given back (see :mod:`.ca_waiting`)."""
        self.parked = wait
        delay = park_delay_ms(self.claimed.ca_waits, wait, self.ctx.settings, rng=self.ctx.rng)
        self.steps.add("waiting_for_ca", f"{wait.message}; next try in {delay / 1000:.1f} s")
        if not self._requeue(delay, wait.code, wait.message, waiting_for_ca=True):
            return self._lost()
        log().info("job waits for its CA", job_id=str(self.claimed.id), kind=self.kind.value, code=wait.code,
                   error=wait.message, delay_ms=delay)
        return self._outcome("waiting_for_ca", code=wait.code, delay_ms=delay)

    def _requeue(self, delay: int, code: str, message: str, *, waiting_for_ca: bool) -> bool:
        """Back to queued and published again after ``delay`` ms; False when another holder has the job."""
        with session_scope(self.ctx.engine) as session:
            if not jobstore.schedule_retry(
                session, self.claimed, now=self.ctx.clock(), delay_ms=delay,
                lease_seconds=self.ctx.settings.job_lease_seconds, code=code, message=message,
                steps=self.steps.drain(), waiting_for_ca=waiting_for_ca,
            ):
                session.rollback()
                return False
            session.commit()
        # Published after the commit: the delayed message must find the job queued. Should the
        # process die in between, the reconciler re-publishes the job when its lease ends.
        if self.broker is not None:
            publish_job(self.broker, self.kind, self.claimed.id, queue=self.queue, delay_ms=delay)
        job_metrics.retry_scheduled(self.kind, code)
        return True

    def _fail(self, code: str, message: str, *, mark_trustpoint: bool,
              report: DeviceReport | None = None) -> JobOutcome:
        self.steps.add("failed", f"{code}: {message}")
        with session_scope(self.ctx.engine) as session:
            if not jobstore.fail_job(session, self.claimed, now=self.ctx.clock(), code=code, message=message,
                                     steps=self.steps.drain()):
                session.rollback()
                return self._lost()
            locked = persist.lock_trustpoint(session, self.claimed.trustpoint_id) if mark_trustpoint else None
            if locked is not None:
                now = self.ctx.clock()
                if report is not None:
                    # The device described the failure: show its statuses and certificates as they are.
                    report = replace(report, error_code=code, error_message=message)
                    persist.apply_report(session, locked, report, job_id=self.claimed.id, now=now)
                else:
                    persist.mark_failed(locked, now=now, code=code, message=message)
                renewal_state.after_failure(session, locked, reason=self.claimed.reason, code=code,
                                            message=message, now=now, settings=self.ctx.settings)
            session.commit()
        self._finished("failed", enrollment="failed", code=code)
        log().warning("job failed", job_id=str(self.claimed.id), kind=self.kind.value,
                    attempt=self.claimed.attempts, code=code, error=message)
        return self._outcome("failed", code=code)

    def _lost(self) -> JobOutcome:
        """Another worker took the job over after this one's lease ran out: its outcome stands."""
        return self._outcome("skipped")

    def _outcome(self, result: Result, **details: object) -> JobOutcome:
        return JobOutcome(job_id=self.claimed.id, result=result, kind=self.kind,
                          attempt=self.claimed.attempts, **details)  # type: ignore[arg-type]

    def _finished(self, outcome: str, *, enrollment: str | None, code: str | None = None) -> None:
        job_metrics.job_finished(self.kind, outcome, method=self.method, enrollment=enrollment,
                                 seconds=time.perf_counter() - self.started, code=code)

    def release(self, exc: BaseException) -> None:
        """After an unexpected error: hand the job back so Dramatiq's retry can claim it."""
        reason = f"unexpected {type(exc).__name__}"
        if isinstance(exc, CertfleetError):
            reason += f" ({exc.code})"
        try:
            with session_scope(self.ctx.engine) as session:
                released = jobstore.release_job(
                    session, self.claimed, now=self.ctx.clock(),
                    lease_seconds=self.ctx.settings.job_lease_seconds,
                    reason=f"{reason}; the job will be tried again", steps=self.steps.drain(),
                )
                if released:
                    session.commit()
        except Exception as release_error:  # the database may be what failed
            log().warning("could not release job; the reconciler will re-publish it when its lease ends",
                        job_id=str(self.claimed.id), error=type(release_error).__name__)
        else:
            log().warning("job released after an unexpected error", job_id=str(self.claimed.id), error=reason)


def _installed(report: DeviceReport) -> str:
    identity = report.certificate(CertificateRole.IDENTITY)
    parts = [report.summary()]
    if identity is not None:
        info = identity.info
        parts.append(f"identity certificate {info.subject}, serial {info.serial_number}, "
                     f"{info.key_algorithm}-{info.key_size}, valid until {info.not_after:%Y-%m-%d}")
    if Status.PENDING in (report.ca, report.identity):
        parts.append("waiting for the CA or an operator; refresh the trustpoint later")
    return "; ".join(parts)

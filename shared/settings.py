"""Settings, read from environment variables prefixed ``CERTFLEET_``.

One frozen object, built once per process by :func:`get_settings`; tests build their
own with :meth:`Settings.from_env` and an explicit mapping.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache

from shared.errors import ConfigurationError

PREFIX = "CERTFLEET_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: The secret key when CERTFLEET_SECRET_KEY is not set. Anyone can read it here, so it protects
#: nothing: only the embedded, local-only stacks (``certfleet demo``, ``certfleet up``) use it
#: silently; the services refuse it unless started with ``--insecure-dev-key``.
DEVELOPMENT_SECRET_KEY = "certfleet-development-key-change-me"
#: How an operator makes a key of their own, named wherever certfleet asks for one.
MAKE_A_KEY = "export CERTFLEET_SECRET_KEY=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
#: The longest lifetime an API token may be given: ten years.
MAX_TOKEN_LIFETIME_DAYS = 3650
#: The smallest request-body cap the controller accepts.
MIN_REQUEST_BYTES = 4096


@dataclass(frozen=True, kw_only=True)
class Settings:
    #: SQLAlchemy URL. ``sqlite:///path`` (embedded default) or ``postgresql://…``.
    database_url: str = "sqlite:///certfleet.db"
    #: ``redis://host:port/db``; empty means the in-process broker (demo, tests).
    broker_url: str = ""
    #: Prefix of the broker's keys in Redis: installations (or test runs) sharing one Redis
    #: database keep their queues apart with different namespaces.
    broker_namespace: str = "dramatiq"
    #: Key material for encrypting secrets at rest (EST passwords, SCEP challenges,
    #: PKCS#12 files). Any string; it is stretched into a Fernet key.
    secret_key: str = DEVELOPMENT_SECRET_KEY
    #: Seconds a worker may hold a job before the reconciler hands it to another.
    job_lease_seconds: int = 60
    #: Attempts for a job whose errors are transient (timeouts, 5xx, refused connections).
    job_max_attempts: int = 5
    #: First retry delay in milliseconds; doubled per attempt, with jitter.
    retry_backoff_ms: int = 500
    #: Cap on the retry delay in milliseconds.
    retry_backoff_max_ms: int = 30_000
    #: Timeout of one request to a device's management API, in seconds.
    device_timeout_seconds: float = 10.0
    #: Seconds between reconciler passes.
    reconcile_interval_seconds: float = 5.0
    #: Where the workers' Prometheus exposition server listens.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9191
    #: Enrollments talking to one CA endpoint (scheme://host:port) at once, across every worker;
    #: an enrollment object's ca_concurrency_limit overrides it.
    ca_concurrency: int = 64
    #: Enrollments started per second against one CA endpoint, across every worker; an
    #: enrollment object's ca_rate_limit overrides it.
    ca_rate_per_second: float = 200.0
    #: Cap on the wait between tries while a CA is unavailable or at its limits, in milliseconds.
    ca_backoff_max_ms: int = 60_000
    #: How long jobs wait for an unavailable CA (without spending their attempts) before failing.
    ca_outage_give_up_seconds: float = 3600.0
    #: Share of each certificate's renewal window over which renewals are spread (0 to 1).
    renewal_spread: float = 0.5
    #: First wait before a failed renewal is tried again, in seconds; doubled per failure.
    renewal_retry_seconds: float = 900.0
    #: Cap on that wait, in seconds.
    renewal_retry_max_seconds: float = 21_600.0
    #: Seconds between the scheduler's renewal passes.
    renewal_interval_seconds: int = 60
    #: How long a scheduler leader's lease lasts without renewal, in seconds; another
    #: controller takes over within that time when the leader dies.
    scheduler_lease_seconds: float = 15.0
    #: Seconds between the scheduler's looks at its lease and its schedules.
    scheduler_tick_seconds: float = 1.0
    #: CA bundle sources: comma-separated https:// URLs, tried in order.
    ca_bundle_urls: str = ""
    #: PEM file of the pinned bundle-signing certificate: a bundle whose signature does not verify
    #: with it is refused.
    ca_bundle_signer: str = ""
    #: Optional PEM file trusted for the bundle sources' TLS, besides the installed bundle.
    ca_bundle_trust: str = ""
    #: More servers that must stay reachable after a CA-bundle update: comma-separated
    #: https:// URLs or host:port.
    connection_checks: str = ""
    #: Seconds between passes that push the current CA bundle to devices that lack it.
    ca_bundle_drift_seconds: int = 300
    #: Seconds between revocation scans of the installed identity certificates.
    revocation_scan_seconds: int = 3600
    #: Seconds between health checks of every managed device (its default keyring).
    health_check_seconds: int = 300
    #: Devices per health-check message on the bulk queue.
    health_batch_size: int = 200
    #: Seconds between passes that raise, update and clear alerts from what certfleet knows.
    alert_conditions_seconds: int = 30
    #: Seconds between passes that complete the domain deletions whose devices' trustpoints are removed.
    domain_deletion_seconds: int = 15
    #: An identity certificate ending within this many days raises a certificate-expiring alert.
    alert_expiring_days: float = 30.0
    #: The Redis stream alert events go to (CloudEvents JSON), and about how many entries it keeps.
    alert_stream_key: str = "certfleet:alerts"
    alert_stream_maxlen: int = 100_000
    #: Days alert events stay in the database after they were relayed.
    alert_event_retention_days: int = 30
    #: Seconds between the alert relay's passes (events to the stream, deliveries to webhooks)
    #: while it has work, and after a pass that found none: an idle installation polls its
    #: database less often, an event waits at most the idle interval.
    alert_relay_interval_seconds: float = 0.25
    alert_relay_idle_seconds: float = 1.0
    #: Webhook deliveries: one attempt's timeout, attempts before a delivery is dead-lettered, and
    #: the wait after a failed attempt (doubled per attempt, with jitter, up to the cap).
    webhook_timeout_seconds: float = 5.0
    webhook_max_attempts: int = 12
    webhook_backoff_seconds: float = 1.0
    webhook_backoff_max_seconds: float = 300.0
    #: Days the audit log keeps its entries; older ones are pruned by the ``audit-retention`` schedule.
    audit_retention_days: int = 365
    #: Days an API token is valid when its creator names no lifetime.
    token_lifetime_days: int = 90
    #: Largest request body the controller reads, in bytes; a larger one is refused (413) unread.
    #: Routes that need more (bulk selections) have their own, larger cap.
    max_request_bytes: int = 1 << 20
    #: What one device-inventory import reads at most: pages (requests), bytes of all pages
    #: together, and seconds for the whole paging; an inventory beyond them is refused, not followed.
    inventory_max_pages: int = 1000
    inventory_max_bytes: int = 64 << 20
    inventory_deadline_seconds: float = 300.0
    #: Messages a worker process holds per queue, fetched ahead from Redis (a bulk action's message
    #: is a batch of up to 40 jobs: twice the threads keeps every thread fed, and a worker that is
    #: killed leaves few jobs waiting for their leases).
    queue_prefetch: int = 16
    #: PostgreSQL connections a process keeps open for reuse. Beyond them a connection is opened
    #: for one transaction and closed after it, which costs PostgreSQL a new backend each time:
    #: ``certfleet worker`` raises it to its threads and two more.
    db_pool_size: int = 10
    #: Log level and format ("json" or "console").
    log_level: str = "INFO"
    log_format: str = "json"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(PREFIX + f.name.upper())
            if raw is None:
                continue
            kind = type(f.default)
            try:
                values[f.name] = kind(raw) if kind is not str else raw
            except ValueError as exc:
                raise ConfigurationError(
                    f"{PREFIX}{f.name.upper()}={raw!r} is not a valid {kind.__name__}"
                ) from exc
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.broker_url and not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(
                f"{PREFIX}BROKER_URL must be a redis:// URL or empty for the in-process broker, "
                f"not {self.broker_url!r}"
            )
        if not self.database_url.startswith(("sqlite", "postgresql")):
            raise ConfigurationError(
                f"{PREFIX}DATABASE_URL must be a sqlite:// or postgresql:// URL"
            )
        if self.job_max_attempts < 1:
            raise ConfigurationError(f"{PREFIX}JOB_MAX_ATTEMPTS must be at least 1")
        # Zero, negative or NaN durations would make leases, retries and timeouts meaningless.
        for name in ("job_lease_seconds", "retry_backoff_ms", "retry_backoff_max_ms",
                     "device_timeout_seconds", "reconcile_interval_seconds", "queue_prefetch", "db_pool_size",
                     "ca_concurrency", "ca_rate_per_second", "ca_backoff_max_ms",
                     "ca_outage_give_up_seconds", "renewal_retry_seconds", "renewal_retry_max_seconds",
                     "renewal_interval_seconds", "scheduler_lease_seconds", "scheduler_tick_seconds",
                     "ca_bundle_drift_seconds", "revocation_scan_seconds", "health_check_seconds",
                     "health_batch_size", "alert_conditions_seconds", "alert_expiring_days", "alert_stream_maxlen",
                     "domain_deletion_seconds",
                     "alert_event_retention_days", "alert_relay_interval_seconds", "alert_relay_idle_seconds",
                     "webhook_timeout_seconds", "inventory_max_pages", "inventory_max_bytes",
                     "inventory_deadline_seconds",
                     "webhook_max_attempts", "webhook_backoff_seconds", "webhook_backoff_max_seconds",
                     "audit_retention_days"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{PREFIX}{name.upper()} must be greater than 0")
        if not 1 <= self.token_lifetime_days <= MAX_TOKEN_LIFETIME_DAYS:
            raise ConfigurationError(
                f"{PREFIX}TOKEN_LIFETIME_DAYS must be between 1 and {MAX_TOKEN_LIFETIME_DAYS} (days a new API "
                "token is valid)")
        if not 0 <= self.renewal_spread <= 1:
            raise ConfigurationError(f"{PREFIX}RENEWAL_SPREAD must be between 0 and 1 (a share of the window)")
        if self.scheduler_tick_seconds * 2 > self.scheduler_lease_seconds:
            raise ConfigurationError(
                f"{PREFIX}SCHEDULER_LEASE_SECONDS must be at least twice {PREFIX}SCHEDULER_TICK_SECONDS: "
                "the leader renews its lease every tick")
        if self.alert_relay_idle_seconds < self.alert_relay_interval_seconds:
            raise ConfigurationError(
                f"{PREFIX}ALERT_RELAY_IDLE_SECONDS must be at least {PREFIX}ALERT_RELAY_INTERVAL_SECONDS: it is "
                "the relay's pace when it has nothing to do")
        if self.max_request_bytes < MIN_REQUEST_BYTES:
            raise ConfigurationError(
                f"{PREFIX}MAX_REQUEST_BYTES must be at least {MIN_REQUEST_BYTES} (4 KiB): a smaller cap refuses "
                "ordinary API requests")
        if not 0 <= self.worker_metrics_port <= 65535:
            raise ConfigurationError(f"{PREFIX}WORKER_METRICS_PORT must be a port number, 0 to 65535")
        if self.log_level.upper() not in LOG_LEVELS:
            raise ConfigurationError(f"{PREFIX}LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in ("json", "console"):
            raise ConfigurationError(f"{PREFIX}LOG_FORMAT must be json or console")

    @property
    def uses_development_key(self) -> bool:
        return self.secret_key == DEVELOPMENT_SECRET_KEY

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
        url = self.database_url
        if url.startswith("postgresql://"):
            return "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return url


def require_own_secret_key(settings: Settings, *, service: str, insecure_dev_key: bool = False) -> None:
    """Refuse to run ``service`` (a controller, worker or scheduler) with the development key: the
    secrets it stores would be readable by anyone with certfleet's source. ``insecure_dev_key``
    (the services' ``--insecure-dev-key``) allows it for a local trial, with a warning."""
    if not settings.uses_development_key:
        return
    if insecure_dev_key:
        logging.getLogger("certfleet.settings").warning(
            "%s runs with the development secret key (--insecure-dev-key): stored secrets are not protected",
            service)
        return
    raise ConfigurationError(
        f"{PREFIX}SECRET_KEY is not set, so the {service} would encrypt stored secrets (EST passwords, SCEP "
        f"challenges, PKCS#12 files, webhook secrets) with the public development key. Set a key of your own, "
        f"the same for every controller, worker and scheduler, and keep it: {MAKE_A_KEY}. For a local trial "
        "only, --insecure-dev-key starts it with the development key.",
        code="development_secret_key")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()

"""The controller's FastAPI application: the REST API under /api/v1, health, metrics, the API's
documentation (served without a CDN) and, optionally, the reconciler and the scheduler running
beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import cache

import dramatiq
from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlmodel import Session

from services.controller.alerts.relay import AlertRelay
from services.controller.api import docs, openapi_docs, problems
from services.controller.api.audit_trail import AuditTrail
from services.controller.api.body_limit import BodyLimit, route_limits
from services.controller.api.routers import (
    alerts,
    audit,
    bulk_actions,
    bulk_enrollments,
    cert_update,
    certificates,
    device_trust,
    devices,
    domains,
    enrollment_objects,
    jobs,
    keyrings,
    management_endpoints,
    ops,
    peer_validation,
    schedules,
    tokens,
    trustpoints,
    webhooks,
)
from services.controller.audit.routes import audited_routes
from services.controller.fleet_stats import read_fleet_stats
from services.controller.queueing.reconciler import Reconciler
from services.controller.scheduling.scheduler import Scheduler
from shared.broker import make_broker
from shared.ca_circuits import RedisCircuits
from shared.clock import utcnow
from shared.db import init_db, make_engine
from shared.device_client import DeviceClient, HttpDeviceClient
from shared.metrics import CaCircuitCollector, FleetCollector, FleetSnapshot
from shared.secrets import SecretBox
from shared.settings import Settings

API_PREFIX = "/api/v1"
_API_MODULES = (domains, devices, enrollment_objects, trustpoints, certificates, peer_validation, bulk_enrollments,
                bulk_actions, jobs, audit, schedules, cert_update, alerts, webhooks, keyrings, tokens,
                management_endpoints, device_trust)


def _fleet_registry(engine: Engine, clock: Callable[[], datetime], circuits: RedisCircuits | None
                    ) -> CollectorRegistry:
    """The gauges computed at scrape time: the fleet's, from the database, and the CA circuits', from
    the CA gate the workers share in Redis (none with the in-process broker, whose gate lives in the
    embedded worker's memory)."""
    def read() -> FleetSnapshot:
        with Session(engine) as session:
            return read_fleet_stats(session, now=clock())

    registry = CollectorRegistry()
    registry.register(FleetCollector(read))
    if circuits is not None:
        registry.register(CaCircuitCollector(circuits.circuits_open))
    return registry


def create_app(
    settings: Settings, *, engine: Engine | None = None, broker: dramatiq.Broker | None = None,
    start_reconciler: bool = False, start_scheduler: bool = False, device_client: DeviceClient | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """Build the app. An engine, broker or device client passed in stays the caller's to close;
    those made here are closed when the app shuts down. The device client serves the one
    synchronous device call, the PKCS#12 export. ``clock`` is the time tokens are judged by
    (their expiry, when they were last used)."""
    owns_engine, owns_broker, owns_devices = engine is None, broker is None, device_client is None
    engine = engine if engine is not None else make_engine(settings)
    init_db(engine)
    broker = broker if broker is not None else make_broker(settings)
    device_client = device_client if device_client is not None else HttpDeviceClient.from_settings(
        settings, max_connections=16)
    reconciler = (
        Reconciler(engine, broker, interval_seconds=settings.reconcile_interval_seconds,
                   lease_seconds=settings.job_lease_seconds)
        if start_reconciler else None
    )
    scheduler = Scheduler(engine, broker, settings) if start_scheduler else None
    # The alert relay runs wherever the scheduler does; like it, one leads among the controllers.
    alert_relay = AlertRelay(engine, settings) if start_scheduler else None
    # Connects on the first scrape.
    circuits = RedisCircuits.from_url(settings.broker_url) if settings.broker_url else None

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if reconciler is not None:
            reconciler.start()
        if scheduler is not None:
            scheduler.start()
        if alert_relay is not None:
            alert_relay.start()
        try:
            yield
        finally:
            if alert_relay is not None:
                alert_relay.stop()
            if scheduler is not None:
                scheduler.stop()
            if reconciler is not None:
                reconciler.stop()
            if owns_broker:
                broker.close()
            if owns_devices:
                getattr(device_client, "close", lambda: None)()
            if owns_engine:
                engine.dispose()
            if circuits is not None:
                circuits.close()

    app = FastAPI(
        title="certfleet controller",
        description="Certificate lifecycle for device fleets: the Devices > Certificates screen as an API.",
        version="0.1.0",
        openapi_url="/openapi.json",
        # FastAPI's own pages load Swagger UI and ReDoc from a public CDN; docs.install serves them locally.
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.clock = clock
    app.state.engine = engine
    app.state.broker = broker
    app.state.reconciler = reconciler
    app.state.scheduler = scheduler
    app.state.alert_relay = alert_relay
    app.state.devices = device_client
    app.state.secret_box = SecretBox(settings.secret_key)
    app.state.fleet_registry = _fleet_registry(engine, clock, circuits)

    problems.install(app)
    app.include_router(ops.router)
    docs.install(app, api_prefix=API_PREFIX)
    app.include_router(_api_router())
    openapi_docs.install(app, api_prefix=API_PREFIX)  # every answer in /openapi.json, problems included
    # Outermost (added last): an oversized body is refused before routing, authentication or parsing.
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes, routes=_body_limits())
    # Outside even that: every change asked, made or refused (the 413 too), leaves an audit entry.
    app.add_middleware(AuditTrail, engine=engine, prefix=API_PREFIX, routes=_audited_routes())
    return app


@cache
def _api_router() -> APIRouter:
    """Every route under the API prefix. Built once per process: FastAPI analyses a router's
    routes (parameters, dependencies, models) the first time it is included somewhere, and the
    routes only read the app's state, so every app of a process can share them."""
    api = APIRouter(prefix=API_PREFIX)
    for module in _API_MODULES:
        api.include_router(module.router)
    return api


@cache
def _audited_routes() -> list:
    """Every API route, for naming each request in the audit log."""
    return audited_routes(API_PREFIX, [module.router for module in _API_MODULES])


@cache
def _body_limits() -> list:
    """The API routes that accept bodies larger than the general cap, or that keep their own."""
    return route_limits(API_PREFIX, [module.router for module in _API_MODULES])

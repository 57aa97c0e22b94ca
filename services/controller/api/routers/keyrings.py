"""Regenerating devices' default keyrings: one device, or a batch (``keyring-regenerations``).

    POST /domains/{d}/devices/{device_id}/keyring/default/regenerate   202 {device, job}
    POST /domains/{d}/keyring-regenerations  {"device_ids": [...]} | {"all_expired": true}   202 batch
    GET  /domains/{d}/keyring-regenerations[/{batch_id}]

Writers only (admin, network_admin); devices of the domain's subtree only (404 for others).
"""

from __future__ import annotations

import uuid

import dramatiq
from fastapi import APIRouter, Depends, Path, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, authorize
from services.controller.api.body_limit import accepts_body
from services.controller.api.deps import Paging, get_broker, get_paging, get_scope, get_session, get_settings
from services.controller.api.schemas.bulk_enrollments import MAX_SELECTION_BODY
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.devices import DevicePublic
from services.controller.api.schemas.jobs import JobPublic
from services.controller.api.schemas.keyrings import (
    KeyringRegenerationAccepted,
    KeyringRegenerationCreate,
    KeyringRegenerationPublic,
)
from services.controller.crud.management_endpoints import load_rules
from services.controller.keyrings import regenerate
from services.controller.queueing import jobs
from services.controller.queueing.publishing import publish_jobs
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import JobKind
from shared.events import BULK_QUEUE
from shared.settings import Settings

router = APIRouter(prefix="/domains/{domain_id}", tags=["keyrings"], dependencies=[Depends(authorize)])

BATCHES = "/keyring-regenerations"


@router.post("/devices/{device_id}/keyring/{keyring}/regenerate", response_model=KeyringRegenerationAccepted,
             status_code=202)
def regenerate_device_keyring(
    device_id: uuid.UUID,
    response: Response,
    keyring: str = Path(max_length=64, description="the keyring's name: default",
                        json_schema_extra={"enum": [regenerate.DEFAULT_KEYRING]}),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize),
):
    """Regenerate the device's default keyring (``system support regenerate-security-keyring default``):
    a new key pair and certificate, recorded on the device when the job ends."""
    regenerate.check_keyring(keyring)
    device, job = regenerate.start_one(session, scope=scope, device_id=device_id, settings=settings, now=utcnow(),
                                       requested_by=principal.describe())
    session.commit()
    jobs.publish(broker, job)
    response.headers["Location"] = f"/api/v1/domains/{scope.domain_id}/jobs/{job.id}"
    return KeyringRegenerationAccepted(device=DevicePublic.of(device, load_rules(session)),
                                       job=JobPublic.of(job))


@router.post(BATCHES, response_model=KeyringRegenerationPublic, status_code=202,
             openapi_extra=accepts_body(MAX_SELECTION_BODY))
def start_keyring_regeneration(
    body: KeyringRegenerationCreate,
    response: Response,
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize),
):
    """Regenerate the default keyring of the listed devices, or of every device of the domain's subtree
    whose keyring is expired; devices with a regeneration unfinished are skipped (and counted)."""
    now = utcnow()
    batch, job_ids = regenerate.start_batch(session, scope=scope, device_ids=body.device_ids,
                                            all_expired=body.all_expired, settings=settings, now=now,
                                            requested_by=principal.describe())
    session.commit()
    # Stamped with the time the leases count from; what the broker refuses, the reconciler re-publishes.
    publish_jobs(broker, [(JobKind.REGENERATE_KEYRING, job_id, BULK_QUEUE) for job_id in job_ids], published_at=now)
    response.headers["Location"] = f"/api/v1/domains/{scope.domain_id}{BATCHES}/{batch.id}"
    return regenerate.progress(session, batch, now=now)


@router.get(BATCHES, response_model=Page[KeyringRegenerationPublic])
def list_keyring_regenerations(scope: DomainScope = Depends(get_scope), session: Session = Depends(get_session),
                               paging: Paging = Depends(get_paging)):
    rows, total = regenerate.list_batches(session, scope=scope, offset=paging.offset, limit=paging.limit)
    now = utcnow()
    return Page[KeyringRegenerationPublic](items=[regenerate.progress(session, b, now=now) for b in rows],
                                           total=total, offset=paging.offset, limit=paging.limit)


@router.get(BATCHES + "/{batch_id}", response_model=KeyringRegenerationPublic)
def get_keyring_regeneration(batch_id: uuid.UUID, scope: DomainScope = Depends(get_scope),
                             session: Session = Depends(get_session)):
    return regenerate.progress(session, regenerate.get_batch(session, scope=scope, batch_id=batch_id), now=utcnow())

from __future__ import annotations

import uuid

import dramatiq
import orjson
from fastapi import APIRouter, Depends, Query, Response
from sqlmodel import Session

from services.controller.api.auth import Principal, authorize
from services.controller.api.deps import Paging, get_broker, get_paging, get_scope, get_session, get_settings
from services.controller.api.schemas.common import Page
from services.controller.api.schemas.jobs import JobPublic
from services.controller.api.schemas.trustpoints import (
    TrustpointAccepted,
    TrustpointAdd,
    TrustpointPublic,
    TrustpointSummary,
)
from services.controller.api.views import trustpoint_public, trustpoint_summaries
from services.controller.crud import trustpoints as crud
from services.controller.crud.devices import get_device
from services.controller.crud.enrollment_overrides import applied_to_trustpoint
from services.controller.queueing import jobs
from services.controller.rules.scope import DomainScope
from shared.clock import utcnow
from shared.enums import JobKind
from shared.settings import Settings
from shared.states import Status

router = APIRouter(prefix="/domains/{domain_id}", tags=["trustpoints"], dependencies=[Depends(authorize)])

_DEVICE_TRUSTPOINTS = "/devices/{device_id}/trustpoints"


def _page(session: Session, rows, total: int, paging: Paging) -> Response:
    certificates = crud.certificate_summaries(session, [row.id for row in rows])
    items = trustpoint_summaries(rows, certificates, now=utcnow())
    # Serialised here, as the model would serialise it: FastAPI would validate the page against
    # the response model first, which cost a polled list more than reading it (the model still
    # documents the answer).
    page = {"items": items, "total": total, "offset": paging.offset, "limit": paging.limit}
    return Response(orjson.dumps(page, option=orjson.OPT_UTC_Z), media_type="application/json")


def _accepted(session: Session, response: Response, scope: DomainScope, trustpoint, device, job,
              broker: dramatiq.Broker) -> TrustpointAccepted:
    """Commit the intent and its job, then publish: the order that loses nothing."""
    session.commit()
    jobs.publish(broker, job)
    response.headers["Location"] = f"/api/v1/domains/{scope.domain_id}/jobs/{job.id}"
    certificates = crud.certificates_of(session, trustpoint.id)
    return TrustpointAccepted(
        trustpoint=trustpoint_public(trustpoint, device_name=device.name, certificates=certificates,
                                     applied=applied_to_trustpoint(session, trustpoint)),
        job=JobPublic.of(job),
    )


@router.get("/trustpoints", response_model=Page[TrustpointSummary])
def list_domain_trustpoints(
    ca_status: Status | None = Query(None),
    identity_status: Status | None = Query(None),
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    """Every trustpoint of the domain and its descendants, filterable by status."""
    rows, total = crud.list_trustpoints(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                        ca_status=ca_status, identity_status=identity_status)
    return _page(session, rows, total, paging)


@router.get(_DEVICE_TRUSTPOINTS, response_model=Page[TrustpointSummary])
def list_device_trustpoints(
    device_id: uuid.UUID,
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    paging: Paging = Depends(get_paging),
):
    device = get_device(session, scope=scope, device_id=device_id)
    rows, total = crud.list_trustpoints(session, scope=scope, offset=paging.offset, limit=paging.limit,
                                        device_id=device.id)
    return _page(session, rows, total, paging)


@router.post(_DEVICE_TRUSTPOINTS, response_model=TrustpointAccepted, status_code=202)
def add_trustpoint(
    device_id: uuid.UUID,
    body: TrustpointAdd,
    response: Response,
    scope: DomainScope = Depends(get_scope),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings),
    broker: dramatiq.Broker = Depends(get_broker),
    principal: Principal = Depends(authorize),
):
    """Install an enrollment object on the device and start its enrollment."""
    trustpoint, device, job = crud.add_trustpoint(
        session, scope=scope, device_id=device_id, enrollment_object_id=body.enrollment_object_id,
        settings=settings, now=utcnow(), requested_by=principal.describe(),
    )
    return _accepted(session, response, scope, trustpoint, device, job, broker)


@router.get(_DEVICE_TRUSTPOINTS + "/{name}", response_model=TrustpointPublic)
def get_trustpoint(device_id: uuid.UUID, name: str, scope: DomainScope = Depends(get_scope),
                   session: Session = Depends(get_session)):
    trustpoint, device = crud.get_trustpoint(session, scope=scope, device_id=device_id, name=name)
    return trustpoint_public(trustpoint, device_name=device.name,
                             certificates=crud.certificates_of(session, trustpoint.id),
                             applied=applied_to_trustpoint(session, trustpoint))


def _action(kind: JobKind):
    def run(
        device_id: uuid.UUID,
        name: str,
        response: Response,
        scope: DomainScope = Depends(get_scope),
        session: Session = Depends(get_session),
        settings: Settings = Depends(get_settings),
        broker: dramatiq.Broker = Depends(get_broker),
        principal: Principal = Depends(authorize),
    ) -> TrustpointAccepted:
        trustpoint, device, job = crud.start_action(
            session, scope=scope, device_id=device_id, name=name, kind=kind, settings=settings,
            now=utcnow(), requested_by=principal.describe(),
        )
        return _accepted(session, response, scope, trustpoint, device, job, broker)

    return run


router.add_api_route(
    _DEVICE_TRUSTPOINTS + "/{name}/re-enroll", _action(JobKind.RE_ENROLL), methods=["POST"], status_code=202,
    response_model=TrustpointAccepted, name="re_enroll_trustpoint",
    summary="Re-enroll: a new key pair and certificate",
)
router.add_api_route(
    _DEVICE_TRUSTPOINTS + "/{name}/refresh", _action(JobKind.REFRESH), methods=["POST"], status_code=202,
    response_model=TrustpointAccepted, name="refresh_trustpoint",
    summary="Refresh: read the trustpoint's state back from the device",
)
router.add_api_route(
    _DEVICE_TRUSTPOINTS + "/{name}", _action(JobKind.DELETE), methods=["DELETE"], status_code=202,
    response_model=TrustpointAccepted, name="delete_trustpoint",
    summary="Delete: remove the trustpoint from the device, then from the database",
)

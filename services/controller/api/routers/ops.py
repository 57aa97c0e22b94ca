"""Operations endpoints, open without a token: health and Prometheus metrics."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text

from services.controller.api.problems import MEDIA_TYPE, problem

router = APIRouter(tags=["operations"])


@router.get("/healthz", responses={503: {"description": "the database does not answer: database_unavailable",
                                         "content": {MEDIA_TYPE: {}}}})
def healthz(request: Request):
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception:
        return problem(503, "database_unavailable", "the database does not answer")
    return {"status": "ok"}


def _process_registry() -> CollectorRegistry:
    """This process's metrics, or every process's when they write multiprocess files."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry
    return REGISTRY


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    body = generate_latest(_process_registry()) + generate_latest(request.app.state.fleet_registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)

"""A small client for the controller's REST API, used by the CLI, the demo and the
end-to-end tests. Problem responses become :class:`ApiError` with their stable code."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from shared.models import GLOBAL_DOMAIN_ID


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail = status, code, detail


class CertfleetClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CertfleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ApiError(response.status_code, body.get("code", "error"), body.get("detail", ""))
            except ValueError:
                raise ApiError(response.status_code, "error", response.text[:200]) from None
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # --- domains and devices --------------------------------------------------------------
    def domains(self) -> list[dict]:
        return self._call("GET", "/domains")["items"]

    def import_devices(self, inventory_url: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call(
            "POST", f"/domains/{domain_id}/devices/import", json={"inventory_url": inventory_url}
        )

    def devices(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, limit: int = 1000) -> list[dict]:
        return list(self._pages(f"/domains/{domain_id}/devices", limit=limit))

    def update_device(self, device_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **fields) -> dict:
        return self._call("PATCH", f"/domains/{domain_id}/devices/{device_id}", json=fields)

    # --- enrollment objects ---------------------------------------------------------------
    def create_enrollment_object(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **fields) -> dict:
        return self._call("POST", f"/domains/{domain_id}/enrollment-objects", json=fields)

    # --- trustpoints and jobs -------------------------------------------------------------
    def add_trustpoint(
        self, device_id: str, enrollment_object_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID
    ) -> dict:
        return self._call(
            "POST",
            f"/domains/{domain_id}/devices/{device_id}/trustpoints",
            json={"enrollment_object_id": enrollment_object_id},
        )

    def start_bulk_enrollment(
        self, enrollment_object_id: str, *, selection: dict | None = None,
        domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        return self._call("POST", f"/domains/{domain_id}/bulk-enrollments", json={
            "enrollment_object_id": enrollment_object_id, "selection": selection or {"all": True},
        })

    def bulk_enrollment(self, batch_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/bulk-enrollments/{batch_id}")

    def trustpoint(self, device_id: str, name: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}")

    def trustpoint_action(
        self, device_id: str, name: str, action: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID
    ) -> dict:
        path = f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}"
        if action == "delete":
            return self._call("DELETE", path)
        return self._call("POST", f"{path}/{action}")

    def trustpoints(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **filters) -> list[dict]:
        return list(self._pages(f"/domains/{domain_id}/trustpoints", **filters))

    def trustpoints_page(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **params) -> dict:
        return self._call("GET", f"/domains/{domain_id}/trustpoints", params=params)

    def count_trustpoints(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **filters) -> int:
        return self._call("GET", f"/domains/{domain_id}/trustpoints", params={**filters, "limit": 1})["total"]

    def job(self, job_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/jobs/{job_id}")

    def _pages(self, path: str, *, limit: int = 1000, **params):
        offset = 0
        while True:
            page = self._call("GET", path, params={**params, "offset": offset, "limit": limit})
            yield from page["items"]
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return

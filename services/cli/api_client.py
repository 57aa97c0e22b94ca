"""A small client for the controller's REST API, used by the ``certfleet`` commands, the
benchmarks and the end-to-end tests. Problem responses become :class:`ApiError` with their
stable code; a controller that cannot be reached raises httpx's TransportError."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from services.cli.errors import ApiError
from shared.domains import GLOBAL_DOMAIN_ID

__all__ = ["ApiError", "CertfleetClient"]


class CertfleetClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            # An idle connection is dropped well before the controller closes it (30 s): reusing one the
            # server is closing at that moment loses the request (a reset), which a POST cannot retry.
            limits=httpx.Limits(max_connections=32, max_keepalive_connections=32, keepalive_expiry=10.0),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> CertfleetClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ApiError(response.status_code, body.get("code", "error"), body.get("detail", ""), extra=body)
            except ValueError:
                raise ApiError(response.status_code, "error", response.text[:200]) from None
        return response

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    # --- certfleet's CA bundle -------------------------------------------------------------
    def cert_update_status(self) -> dict:
        return self._call("GET", "/cert-update")

    def cert_update_test(self) -> dict:
        return self._call("POST", "/cert-update/test", timeout=120)

    def cert_update_run_now(self, *, force: bool = False) -> dict:
        return self._call("POST", "/cert-update/run-now", json={"force": force}, timeout=120)

    def cert_update_auto(self, *, enabled: bool) -> dict:
        return self._call("PUT", "/cert-update/auto-update", json={"enabled": enabled})

    def cert_update_push(self, batch_id: str) -> dict:
        return self._call("GET", f"/cert-update/pushes/{batch_id}")

    # --- the scheduler ---------------------------------------------------------------------
    def schedules(self) -> list[dict]:
        return self._call("GET", "/schedules")

    def update_schedule(self, name: str, **change: Any) -> dict:
        return self._call("PUT", f"/schedules/{name}", json=change)

    def run_schedule(self, name: str) -> dict:
        return self._call("POST", f"/schedules/{name}/run")

    # --- domains and devices --------------------------------------------------------------
    def domains(self) -> list[dict]:
        return list(self._pages("/domains"))

    def import_devices(self, inventory_url: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call(
            "POST", f"/domains/{domain_id}/devices/import", json={"inventory_url": inventory_url}
        )

    def devices(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, limit: int = 1000) -> list[dict]:
        return list(self._pages(f"/domains/{domain_id}/devices", limit=limit))

    def find_devices(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **filters: str) -> list[dict]:
        """Devices matching exact filters: ``name=`` or ``serial=``."""
        return self._call("GET", f"/domains/{domain_id}/devices", params={**filters, "limit": 100})["items"]

    def update_device(self, device_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **fields) -> dict:
        return self._call("PATCH", f"/domains/{domain_id}/devices/{device_id}", json=fields)

    def device(self, device_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/devices/{device_id}")

    def approve_device(self, device_id: str, *, credential: str | None = None,
                       domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        body = {"credential": credential} if credential is not None else None
        return self._call("POST", f"/domains/{domain_id}/devices/{device_id}/trust", json=body)

    def withdraw_device_approval(self, device_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("DELETE", f"/domains/{domain_id}/devices/{device_id}/trust")

    # --- the allow-list of management endpoints --------------------------------------------
    def management_endpoints(self) -> list[dict]:
        return self._call("GET", "/management-endpoints")

    def allow_management_endpoint(self, scheme: str, host: str, *, port: int | None = None,
                                  description: str = "") -> dict:
        return self._call("POST", "/management-endpoints", json={"scheme": scheme, "host": host, "port": port,
                                                                  "description": description})

    def remove_management_endpoint(self, entry_id: str) -> None:
        self._call("DELETE", f"/management-endpoints/{entry_id}")

    # --- enrollment objects ---------------------------------------------------------------
    def create_enrollment_object(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **fields) -> dict:
        return self._call("POST", f"/domains/{domain_id}/enrollment-objects", json=fields)

    def upload_pkcs12(
        self, filename: str, content: bytes, passphrase: str, *, name: str | None = None,
        domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        """A PKCS12 enrollment object named as the file (multipart upload)."""
        data = {"passphrase": passphrase, **({"name": name} if name else {})}
        return self._call("POST", f"/domains/{domain_id}/enrollment-objects/pkcs12", data=data,
                          files={"file": (filename, content, "application/x-pkcs12")})

    def set_pkcs12_passphrase(
        self, object_id: str, passphrase: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID
    ) -> dict:
        return self._call("PUT", f"/domains/{domain_id}/enrollment-objects/{object_id}/passphrase",
                          json={"passphrase": passphrase})

    def enrollment_objects(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> list[dict]:
        """The objects usable in the domain: its own and its ancestors'."""
        return list(self._pages(f"/domains/{domain_id}/enrollment-objects"))

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

    def start_bulk_action(
        self, action: str, enrollment_object_id: str, *, selection: dict, filters: dict | None = None,
        confirm: bool = False, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        return self._call("POST", f"/domains/{domain_id}/bulk-actions", json={
            "action": action, "enrollment_object_id": enrollment_object_id, "selection": selection,
            "filters": filters or {}, "confirm": confirm,
        })

    def bulk_action(self, batch_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/bulk-actions/{batch_id}")

    def bulk_weak_crypto(
        self, weak_crypto: bool, *, selection: dict, confirm: bool = False,
        domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        return self._call("POST", f"/domains/{domain_id}/bulk-weak-crypto", json={
            "selection": selection, "weak_crypto": weak_crypto, "confirm": confirm,
        })

    # --- default keyrings -----------------------------------------------------------------
    def regenerate_keyring(self, device_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        """``{"device": …, "job": …}``: the regeneration of the device's default keyring, started."""
        return self._call("POST", f"/domains/{domain_id}/devices/{device_id}/keyring/default/regenerate")

    def start_keyring_regeneration(
        self, *, device_ids: list[str] | None = None, all_expired: bool = False,
        domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        body: dict[str, Any] = {"all_expired": True} if all_expired else {"device_ids": device_ids or []}
        return self._call("POST", f"/domains/{domain_id}/keyring-regenerations", json=body)

    def keyring_regeneration(self, batch_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/keyring-regenerations/{batch_id}")

    def trustpoint(self, device_id: str, name: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}")

    def trustpoint_action(
        self, device_id: str, name: str, action: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID
    ) -> dict:
        path = f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}"
        if action == "delete":
            return self._call("DELETE", path)
        return self._call("POST", f"{path}/{action}")

    def trustpoint_csr(
        self, device_id: str, name: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID
    ) -> str:
        return self._request("GET", f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}/csr").text

    def import_identity_certificate(
        self, device_id: str, name: str, certificate: bytes, *, ca_certificate: bytes | None = None,
        domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        """``certificate`` in PEM or DER; a CA certificate (PEM) goes after it in the same PEM body."""
        path = f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}/identity-certificate"
        body, media_type = certificate, "application/x-pem-file"
        if b"-----BEGIN" not in certificate:
            media_type = "application/pkix-cert"
            if ca_certificate:
                raise ValueError("send a DER certificate alone, or both certificates in PEM")
        elif ca_certificate:
            body = certificate.rstrip() + b"\n" + ca_certificate
        return self._call("POST", path, content=body, headers={"Content-Type": media_type})

    def validate_peer(
        self, device_id: str, name: str, certificate_pem: str, *, chain_pem: str | None = None,
        usage: str | None = None, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> dict:
        """The device's verdict on a peer certificate, validated with the trustpoint's CA."""
        body: dict[str, Any] = {"certificate_pem": certificate_pem}
        if chain_pem:
            body["chain_pem"] = chain_pem
        if usage:
            body["usage"] = usage
        return self._call("POST", f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}/validate", json=body)

    def export_trustpoint(
        self, device_id: str, name: str, fmt: str, *, passphrase: str | None = None,
        domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
    ) -> bytes:
        body: dict[str, Any] = {"format": fmt}
        if passphrase is not None:
            body["passphrase"] = passphrase
        path = f"/domains/{domain_id}/devices/{device_id}/trustpoints/{name}/export"
        return self._request("POST", path, json=body).content

    # --- the audit log ----------------------------------------------------------------------
    def audit_page(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, offset: int = 0, limit: int = 100,
                   **filters: str | None) -> dict:
        """One page of the domain's audit log (newest first); filters: since, until, action, token_id,
        outcome, device_id, target_id."""
        params = {key: value for key, value in filters.items() if value is not None}
        return self._call("GET", f"/domains/{domain_id}/audit", params={**params, "offset": offset, "limit": limit})

    def audit(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **filters) -> list[dict]:
        """Every entry of the domain's audit log that matches, newest first (e.g. action="export_certificate")."""
        return list(self._pages(f"/domains/{domain_id}/audit", **filters))

    # --- alerts ---------------------------------------------------------------------------
    def alerts_page(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, offset: int = 0, limit: int = 100,
                    **filters: str) -> dict:
        """One page of the domain's alerts (newest last_seen first); filters: state, code, severity, device_id."""
        params = {key: value for key, value in filters.items() if value is not None}
        return self._call("GET", f"/domains/{domain_id}/alerts", params={**params, "offset": offset, "limit": limit})

    def alert_summary(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("GET", f"/domains/{domain_id}/alerts/summary")

    def acknowledge_alert(self, alert_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("POST", f"/domains/{domain_id}/alerts/{alert_id}/acknowledge")

    # --- webhooks for alert events -------------------------------------------------------
    def create_webhook(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **fields) -> dict:
        return self._call("POST", f"/domains/{domain_id}/webhooks", json=fields)

    def webhooks(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> list[dict]:
        return list(self._pages(f"/domains/{domain_id}/webhooks"))

    def delete_webhook(self, webhook_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> None:
        self._call("DELETE", f"/domains/{domain_id}/webhooks/{webhook_id}")

    def webhook_deliveries(self, webhook_id: str, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID,
                           state: str | None = None, limit: int = 100) -> dict:
        """The newest ``limit`` entries of the webhook's delivery log (a page: items and total)."""
        params = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", f"/domains/{domain_id}/webhooks/{webhook_id}/deliveries", params=params)

    def retry_webhook_delivery(self, webhook_id: str, delivery_id: str, *,
                               domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID) -> dict:
        return self._call("POST", f"/domains/{domain_id}/webhooks/{webhook_id}/deliveries/{delivery_id}/retry")

    def wait_for_job(
        self, job_id: str, *, timeout: float = 60, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID
    ) -> dict:
        """The job once it has finished (succeeded or failed); TimeoutError after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id, domain_id=domain_id)
            if job["state"] in ("succeeded", "failed"):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job['state']} after {timeout:g} s")
            time.sleep(0.1)

    def trustpoints(self, *, domain_id: uuid.UUID | str = GLOBAL_DOMAIN_ID, **filters) -> list[dict]:
        return list(self._pages(f"/domains/{domain_id}/trustpoints", **filters))

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

"""The device-management HTTP API of the simulated fleet (contract: :mod:`shared.device_api`).

Every device request first meets the fault plan (latency, then maybe an injected 500,
503 or hang-then-504), then the device handles it. All state lives on the event loop's
thread, so nothing needs a lock; EST enrollment runs on the loop itself (its TLS on memory
buffers); other slow work (RSA key generation, SCEP's blocking exchanges with a CA) runs in a
thread pool and its result is installed back on the loop. A request a CA holds for approval
is asked about again in the background (:meth:`DeviceSim._keep_polling`), as a real device
does. Errors answer ``{"code", "message"}``.

In a simulator of several processes (:mod:`.partition`) a process answers for the devices it
holds (404 device_not_found for the others, naming the process that serves them) and asks the
other processes (:mod:`.peers`) for what the fleet-wide endpoints need, so the inventory, the
statistics and the devices taken offline are the same whichever process is asked.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as WireError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.device_sim import ca_bundles, credentials, enrollers, manual, peers, trustpoints, validation, wire
from services.device_sim import export as exports
from services.device_sim import keyring as keyrings
from services.device_sim.ca_client.trust import load_trust_anchors
from services.device_sim.config import SimConfig
from services.device_sim.dispatch import DeviceDispatch
from services.device_sim.faults import FaultPlan, Outcome
from services.device_sim.fleet import Device, Fleet, Trustpoint
from services.device_sim.partition import Partition
from services.device_sim.peers import Peers, merged_stats
from shared import sealed_secrets
from shared.clock import utcnow
from shared.device_api import (
    CaBundleUpload,
    DeviceInfo,
    EnrollRequest,
    ExportRequest,
    IdentityCertificateImport,
    Inventory,
    PeerValidationRequest,
    TrustpointState,
)
from shared.device_auth import proof
from shared.enums import CertificateRole
from shared.errors import CertfleetError, ConflictError, NotFoundError, ValidationError
from shared.logging import get_logger
from shared.revocation_fetch import RevocationChecker

log = get_logger(__name__)

#: Largest inventory page; a client asking for more gets this many (the contract allows fewer).
MAX_PAGE = 5000
DEFAULT_PAGE = 1000
#: Bound of a PUT /api/offline body: tens of thousands of serials.
OFFLINE_BODY_BYTES = 2 * 1024 * 1024
#: SCEP enrollments and peer validations talking to CAs at once: they mostly wait on the network,
#: not the CPU (EST enrollments wait on the event loop, without a thread).
CA_THREADS = 32
_TRUSTPOINT_LIST = TypeAdapter(list[TrustpointState])


class DeviceFault(CertfleetError):
    """An injected fault, answered with its own status."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.status = status


class PayloadTooLarge(CertfleetError):
    status = 413


class DeviceSim:
    """The fleet, its fault plan and request statistics, with one handler per endpoint."""

    def __init__(self, config: SimConfig, *, clock: Callable[[], datetime] = utcnow,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 partition: Partition = Partition()) -> None:
        self.config = config
        #: This process's share of the fleet: all of it unless several processes serve it.
        self.partition = partition
        self.fleet = Fleet.build(config, partition)
        self.peers = Peers(partition) if partition.shared else None
        self.faults = FaultPlan.from_config(config)
        #: What every device's endpoint credential derives from (never logged).
        self._credential_key = config.credential_key or credentials.new_fleet_key()
        self._credentials: dict[str, str] = {}
        self.clock = clock
        #: How the simulator waits on its event loop: latency, hung requests, a CA's Retry-After.
        self.sleep = sleep
        #: The server's own http://host:port; management URLs are built from it.
        self.base_url = ""
        self.requests: Counter[str] = Counter()
        self.fault_counts: Counter[str] = Counter()
        #: Devices taken off the network (PUT /api/offline): unreachable until brought back.
        self.offline: frozenset[str] = frozenset()
        self._keygen = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 2, thread_name_prefix="device-sim-keygen"
        )
        self._network = ThreadPoolExecutor(max_workers=CA_THREADS, thread_name_prefix="device-sim-ca")
        #: How every device reaches CAs: the fleet's trust anchors, timeouts, patience.
        self.ca_client = enrollers.CaClientSettings(
            trust_anchors_pem=load_trust_anchors(config.trust_anchors),
            wait_seconds=config.ca_wait_seconds, timeout_seconds=config.ca_timeout_seconds,
            scep_minute_seconds=config.scep_minute_seconds,
        )
        #: The CA bundles devices hold, each parsed once and shared.
        self.bundles = ca_bundles.BundleLibrary(self.ca_client)
        #: Revocation answers for peer validation, cached for the whole fleet: one CRL fetch per
        #: CRL and nextUpdate, not one per device or per peer.
        self.revocation = RevocationChecker(clock=lambda: self.clock(),
                                            timeout_seconds=min(config.ca_timeout_seconds, 3.0))
        #: Background polls of requests CAs hold (see _keep_polling), and the trustpoints they follow.
        self._polls: set[asyncio.Task[None]] = set()
        self._following: Counter[tuple[str, str]] = Counter()
        #: One running enrollment per (serial, trustpoint); a repeated request waits for it.
        self._inflight: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._released = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        if self.peers is not None:
            await self.peers.open()
        try:
            yield
        finally:
            if self.peers is not None:
                await self.peers.close()
            for poll in list(self._polls):
                poll.cancel()
            self._keygen.shutdown(wait=False, cancel_futures=True)
            self._network.shutdown(wait=False, cancel_futures=True)
            self.revocation.close()

    def following(self, serial: str, trustpoint: str) -> bool:
        """Whether the device still asks in the background about a request a CA holds for the
        trustpoint (readable from any thread)."""
        return self._following[(serial, trustpoint)] > 0

    def release_hung_requests(self) -> None:
        """Answer the requests held by the timeout fault now (thread-safe): a stopping server
        should not wait out their hang."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._released.set)

    # --- the fault gate ---------------------------------------------------------------------

    async def _reach(self, request: Request, kind: str) -> Device:
        """The addressed device, after this request's latency and injected fault."""
        self.requests[kind] += 1
        serial = request.path_params["serial"]
        device = self.fleet.get(serial)
        fate = self.faults.decide(serial, device.next_request_number())
        if fate.latency_seconds:
            await self.sleep(fate.latency_seconds)
        if serial in self.offline:
            self.fault_counts["offline"] += 1
            raise DeviceFault(503, "device_unreachable", f"device {serial} is unreachable")
        if fate.outcome is Outcome.OK:
            return device
        self.fault_counts[fate.outcome.value] += 1
        if fate.outcome is Outcome.UNREACHABLE:
            raise DeviceFault(503, "device_unreachable", f"device {serial} is unreachable")
        if fate.outcome is Outcome.ERROR:
            raise DeviceFault(500, "device_error", f"device {serial} failed to process the request")
        hang = self.faults.hang_seconds
        await self._hang(hang)
        raise DeviceFault(504, "device_timeout", f"device {serial} did not answer within {hang:g} s")

    async def _hang(self, seconds: float) -> None:
        """Hold the request for ``seconds``, or until the server stops (release_hung_requests)."""
        released = asyncio.ensure_future(self._released.wait())
        over = asyncio.ensure_future(self.sleep(seconds))
        try:
            await asyncio.wait({released, over}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            released.cancel()
            over.cancel()

    def credential(self, serial: str) -> str:
        """The endpoint credential device ``serial`` holds."""
        held = self._credentials.get(serial)
        if held is None:  # derived once per device: every sealed request needs it twice
            held = self._credentials[serial] = credentials.device_credential(self._credential_key, serial)
        return held

    # --- fleet-wide endpoints (no device faults) ---------------------------------------------

    async def inventory(self, request: Request) -> Response:
        self.requests["inventory"] += 1
        offset, limit = _paging(request)
        page = self.fleet.page(offset=offset, limit=limit)
        if self.peers is None:
            items = [wire.device_info(d, base_url=self.base_url, credential=self.credential(d.serial)) for d in page]
        else:
            items = await self._shared_page(page, offset=offset, limit=limit)
        return _json(Inventory(items=items, total=len(self.fleet)))

    async def _shared_page(self, page: list[Device], *, offset: int, limit: int) -> list[DeviceInfo]:
        """An inventory page of a fleet several processes serve: each device at its owner's URL,
        with what its owner says it changed."""
        assert self.peers is not None
        changed = await self.peers.device_states(offset=offset, limit=limit) if page else {}
        urls, owner = self.partition.urls, self.partition.owner
        items = []
        for device in page:
            info = wire.device_info(device, base_url=urls[owner(device.index)],
                                    credential=self.credential(device.serial))
            state = changed.get(device.serial)
            items.append(info.model_copy(update=state) if state else info)
        return items

    async def stats(self, _request: Request) -> Response:
        own = self._own_stats()
        if self.peers is None:
            return JSONResponse(own)
        per_process = await self.peers.stats()
        per_process.insert(self.partition.position, own)
        return JSONResponse(merged_stats(self.partition, per_process))

    def _own_stats(self) -> dict[str, Any]:
        return {
            "devices": len(self.fleet.devices),
            "requests": dict(self.requests),
            "faults": dict(self.fault_counts),
            "enrollments_in_flight": len(self._inflight),
        }

    async def set_offline(self, request: Request) -> Response:
        """Take the listed devices off the network and bring every other one back: they answer
        every request 503 device_unreachable, as the fault plan's unreachable devices do, until
        a later call leaves them out (``{"serials": []}`` brings all back). For tests and demos of
        devices that come back."""
        self.requests["offline"] += 1
        serials = await _offline_serials(request)
        for serial in serials:
            self.fleet.check(serial)  # 404 device_not_found for a serial the fleet lacks
        if self.peers is not None:
            await self.peers.set_offline(serials)
        self.offline = frozenset(serials)
        return JSONResponse({"offline": sorted(self.offline)})

    # --- what the other processes of the simulator ask (see peers.py) ------------------------

    async def partition_device_states(self, request: Request) -> Response:
        offset, limit = _paging(request)
        held = self.fleet.held_in(offset=offset, limit=limit)
        return JSONResponse({"states": {d.serial: state for d in held if (state := wire.changed_state(d))}})

    async def partition_stats(self, _request: Request) -> Response:
        return JSONResponse(self._own_stats())

    async def partition_offline(self, request: Request) -> Response:
        self.offline = frozenset(await _offline_serials(request))
        return Response(status_code=204)

    # --- device endpoints --------------------------------------------------------------------

    async def get_device(self, request: Request) -> Response:
        device = await self._reach(request, "device")
        return _json(wire.device_info(device, base_url=self.base_url))

    async def set_weak_crypto(self, request: Request) -> Response:
        device = await self._reach(request, "weak_crypto")
        body = await _body(request)
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            raise ValidationError('send {"enabled": true} or {"enabled": false}', code="invalid_request")
        device.weak_crypto = enabled
        return _json(wire.device_info(device, base_url=self.base_url))

    async def list_trustpoints(self, request: Request) -> Response:
        device = await self._reach(request, "list_trustpoints")
        states = [wire.trustpoint_state(t) for t in device.trustpoints.values()]
        return Response(_TRUSTPOINT_LIST.dump_json(states), media_type="application/json")

    async def configure_trustpoint(self, request: Request) -> Response:
        device = await self._reach(request, "configure_trustpoint")
        name = request.path_params["name"]
        configuration, nonce = self._opened(device, name, await _body(request))
        trustpoint = trustpoints.configure(device, trustpoints.parse_configuration(name, configuration),
                                           now=self.clock())
        return self._answer(device, trustpoint, nonce)

    async def get_trustpoint(self, request: Request) -> Response:
        device = await self._reach(request, "get_trustpoint")
        return _json(wire.trustpoint_state(trustpoints.find(device, request.path_params["name"])))

    async def delete_trustpoint(self, request: Request) -> Response:
        device = await self._reach(request, "delete_trustpoint")
        trustpoints.remove(device, request.path_params["name"])
        return Response(status_code=204)

    async def enroll(self, request: Request) -> Response:
        device = await self._reach(request, "enroll")
        body = await _body(request)
        try:
            asked = EnrollRequest.model_validate(body if body is not None else {})
        except WireError:
            raise ValidationError(
                'send {"mode": "enroll"} or {"mode": "re_enroll"}, and optionally "configuration": the '
                "trustpoint's configuration to apply first", code="invalid_request"
            ) from None
        name = request.path_params["name"]
        configuration, nonce = self._opened(device, name, asked.configuration)
        if configuration is not None:  # configure and enroll in one request
            trustpoints.configure(device, trustpoints.parse_configuration(name, configuration), now=self.clock())
        trustpoint = await self._enroll(device, name, asked.mode)
        return self._answer(device, trustpoint, nonce)

    def _opened(self, device: Device, name: str, configuration: Any) -> tuple[Any, bytes | None]:
        """A trustpoint configuration as received, its sealed secret options opened with the device's
        credential (401 sealed_configuration_unreadable, before anything is applied, when they do not
        open), and the nonce they were sealed under (None: nothing was sealed)."""
        return sealed_secrets.open_configuration(configuration, credential=self.credential(device.serial),
                                                 serial=device.serial, trustpoint=name)

    def _answer(self, device: Device, trustpoint: Trustpoint, nonce: bytes | None) -> Response:
        """The trustpoint's state; for a configuration that came sealed, with the device's proof that
        it opened it with its credential."""
        state = wire.trustpoint_state(trustpoint)
        if nonce is not None:
            state = state.model_copy(update={"proof": proof(self.credential(device.serial), nonce, device.serial)})
        return _json(state)

    async def import_identity(self, request: Request) -> Response:
        device = await self._reach(request, "import_identity")
        body = _wire_body(IdentityCertificateImport, await _body(request),
                          'send {"certificate_pem": "...", "ca_certificate_pem": "..." (optional)}')
        name = request.path_params["name"]
        trustpoint = trustpoints.find(device, name)
        if (device.serial, name) in self._inflight:
            raise ConflictError(f"trustpoint {name!r} on device {device.serial} is enrolling; import when "
                                "it is pending", code="enrollment_in_progress")
        manual.import_identity(device, trustpoint, body, now=self.clock())
        return _json(wire.trustpoint_state(trustpoint))

    async def export(self, request: Request) -> Response:
        device = await self._reach(request, "export")
        body = _wire_body(ExportRequest, await _body(request),
                          'send {"format": "pkcs12", "passphrase": "..."} or {"format": "pem"}')
        trustpoint = trustpoints.find(device, request.path_params["name"])
        # PBKDF2 and the key's serialisation take tens of milliseconds: off the event loop.
        exported = await asyncio.get_running_loop().run_in_executor(
            self._keygen, exports.export, device, trustpoint, body)
        return _json(exported)

    async def validate_peer(self, request: Request) -> Response:
        device = await self._reach(request, "validate")
        raw = await _bounded_body(request, validation.MAX_BODY_BYTES, what="a peer validation request")
        body = _wire_body(PeerValidationRequest, raw, 'send {"certificate_pem": "...", "chain_pem": "..." (optional), '
                          '"usage": "ipsec_client" | "ssl_client" | "ssl_server" (optional)}')
        trustpoint = trustpoints.find(device, request.path_params["name"])
        ca_pems = [c.pem for c in sorted(trustpoint.certificates, key=lambda c: c.chain_position)
                   if c.role == CertificateRole.CA.value]
        if not ca_pems:
            raise ConflictError(f"trustpoint {trustpoint.name} on device {device.serial} has no CA certificate to "
                                f"validate peers with (CA certificate {trustpoint.ca_status}); enroll it first",
                                code="no_ca_certificate")
        settings = validation.settings_of(trustpoint.params.options)
        # Revocation may mean fetching a CRL or asking an OCSP responder: off the event loop.
        verdict = await asyncio.get_running_loop().run_in_executor(
            self._network, functools.partial(validation.validate_peer, body, trustpoint=trustpoint.name,
                                             ca_pems=ca_pems, settings=settings, checker=self.revocation,
                                             now=self.clock()))
        return _json(verdict)

    async def get_keyring(self, request: Request) -> Response:
        device = await self._reach(request, "keyring")
        now = self.clock()
        return _json(wire.keyring_state(keyrings.default_keyring(device, now=now), now=now))

    async def regenerate_keyring(self, request: Request) -> Response:
        device = await self._reach(request, "regenerate_keyring")
        now = self.clock()
        return _json(wire.keyring_state(keyrings.regenerate(device, now=now), now=now))

    async def get_ca_bundle(self, request: Request) -> Response:
        device = await self._reach(request, "get_ca_bundle")
        return _json(wire.ca_bundle_state(device.ca_bundle))

    async def put_ca_bundle(self, request: Request) -> Response:
        device = await self._reach(request, "put_ca_bundle")
        body = await _bounded_body(request, ca_bundles.MAX_BODY_BYTES, what="a CA bundle")
        upload = _wire_body(CaBundleUpload, body, 'send {"version": "7", "pem": "<the CA certificates in PEM>"}')
        device.ca_bundle = self.bundles.receive(upload.version, upload.pem)
        return _json(wire.ca_bundle_state(device.ca_bundle))

    def _ca_client(self, device: Device) -> enrollers.CaClientSettings:
        """How the device reaches CAs: trusting the fleet's anchors and its own CA bundle."""
        return device.ca_bundle.ca if device.ca_bundle is not None else self.ca_client

    # --- enrollment --------------------------------------------------------------------------

    async def _enroll(self, device: Device, name: str, mode: Literal["enroll", "re_enroll"]) -> Trustpoint:
        key = (device.serial, name)
        running = self._inflight.get(key)
        if running is not None:
            # A repeated request (a redelivered job) gets the result of the enrollment under way
            # instead of racing it with a second key pair.
            await asyncio.shield(running)
            return trustpoints.find(device, name)
        trustpoint = trustpoints.find(device, name)
        if trustpoints.is_current(trustpoint, mode):
            return trustpoint
        task = trustpoints.begin(device, trustpoint, re_enroll=mode == "re_enroll", now=self.clock(),
                                 ca=self._ca_client(device))
        outcome = await self._run_exclusive(key, task)
        if device.trustpoints.get(name) is not trustpoint:
            raise NotFoundError(
                f"trustpoint {name!r} was deleted from device {device.serial} while it enrolled",
                code="trustpoint_not_found",
            )
        if trustpoint.params != task.params:  # a repeated identical configuration is no change
            raise ConflictError(
                f"trustpoint {name!r} on device {device.serial} was reconfigured while it enrolled; "
                "enroll it again",
                code="trustpoint_reconfigured",
            )
        trustpoints.finish(trustpoint, task, outcome, now=self.clock())
        if isinstance(outcome, enrollers.HeldByCa):
            self._follow_up(device, trustpoint)
        return trustpoint

    async def _run_exclusive(self, key: tuple[str, str], task: enrollers.EnrollmentTask
                             ) -> enrollers.Outcome:
        """Run the task as the one enrollment under way for its trustpoint."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = done
        try:
            return await self._run(task)
        finally:
            del self._inflight[key]
            done.set_result(None)

    async def _run(self, task: enrollers.EnrollmentTask) -> enrollers.Outcome:
        try:
            if enrollers.runs_on_loop(task.params):
                return await enrollers.enroll_on_loop(task)
            if task.params.enrollment_type in enrollers.NETWORK_TYPES:
                return await asyncio.get_running_loop().run_in_executor(self._network, enrollers.enroll, task)
            if enrollers.runs_off_loop(task.params):
                return await asyncio.get_running_loop().run_in_executor(self._keygen, enrollers.enroll, task)
            return enrollers.enroll(task)
        except Exception as exc:  # the device reports a failure; the trustpoint must not stay in progress
            log.exception("enrollment failed", serial=task.device.serial, trustpoint=task.params.name)
            return enrollers.Refused(
                code="enrollment_failed",
                message=f"device {task.device.serial} failed to enroll trustpoint {task.params.name}: "
                f"{type(exc).__name__}",
                retryable=True,
            )

    # --- requests a CA holds -----------------------------------------------------------------

    def _follow_up(self, device: Device, trustpoint: Trustpoint) -> None:
        key = (device.serial, trustpoint.name)
        poll = asyncio.get_running_loop().create_task(self._keep_polling(device, trustpoint))
        self._polls.add(poll)
        self._following[key] += 1

        def done(task: asyncio.Task[None]) -> None:
            self._polls.discard(task)
            self._following[key] -= 1
            if not self._following[key]:
                del self._following[key]

        poll.add_done_callback(done)

    async def _keep_polling(self, device: Device, trustpoint: Trustpoint) -> None:
        """The CA holds the trustpoint's request: ask again as its Retry-After says, until it
        issues or refuses, or the enrollment object's retries (count x period) run out. The
        trustpoint then stays pending; enrolling it again asks about the same request, and a
        refresh shows whatever the device has by then."""
        key = (device.serial, trustpoint.name)
        while (held := trustpoint.held) is not None:
            await self.sleep(held.retry_after)
            if device.trustpoints.get(trustpoint.name) is not trustpoint or trustpoint.held is not held:
                return  # deleted, or a newer enrollment took over (and follows up itself)
            if trustpoint.params != held.params:
                return  # reconfigured: the next enrollment files a request for the new configuration
            if self.clock() >= trustpoints.held_until(trustpoint, held) or key in self._inflight:
                return
            task = trustpoints.resume(device, trustpoint, now=self.clock(), ca=self._ca_client(device))
            outcome = await self._run_exclusive(key, task)
            if device.trustpoints.get(trustpoint.name) is not trustpoint or trustpoint.params != task.params:
                return
            if isinstance(outcome, enrollers.Refused) and outcome.retryable:
                continue  # the CA is unreachable for now: the request is still held, ask again later
            trustpoints.finish(trustpoint, task, outcome, now=self.clock())


# --- the ASGI application ---------------------------------------------------------------------

def create_app(sim: DeviceSim) -> DeviceDispatch:
    device = "/api/devices/{serial}"
    trustpoint = device + "/trustpoints/{name}"
    routes = [
        Route("/api/inventory", sim.inventory, methods=["GET"]),
        Route("/api/stats", sim.stats, methods=["GET"]),
        Route("/api/offline", sim.set_offline, methods=["PUT"]),
        *_partition_routes(sim),
        Route(device, sim.get_device, methods=["GET"]),
        Route(device + "/weak-crypto", sim.set_weak_crypto, methods=["PUT"]),
        Route(device + "/trustpoints", sim.list_trustpoints, methods=["GET"]),
        Route(trustpoint, sim.get_trustpoint, methods=["GET"]),
        Route(trustpoint, sim.configure_trustpoint, methods=["PUT"]),
        Route(trustpoint, sim.delete_trustpoint, methods=["DELETE"]),
        Route(trustpoint + "/enroll", sim.enroll, methods=["POST"]),
        Route(trustpoint + "/identity-certificate", sim.import_identity, methods=["POST"]),
        Route(trustpoint + "/export", sim.export, methods=["POST"]),
        Route(trustpoint + "/validate", sim.validate_peer, methods=["POST"]),
        Route(device + "/keyring/default", sim.get_keyring, methods=["GET"]),
        Route(device + "/keyring/default/regenerate", sim.regenerate_keyring, methods=["POST"]),
        Route(device + "/ca-bundle", sim.get_ca_bundle, methods=["GET"]),
        Route(device + "/ca-bundle", sim.put_ca_bundle, methods=["PUT"]),
    ]
    handlers: dict[Any, Any] = {
        CertfleetError: _certfleet_error,
        HTTPException: _http_error,
        Exception: _internal_error,
    }
    return DeviceDispatch(Starlette(routes=routes, exception_handlers=handlers, lifespan=sim.lifespan))


def _partition_routes(sim: DeviceSim) -> list[Route]:
    if not sim.partition.shared:
        return []
    return [
        Route(peers.DEVICE_STATES, sim.partition_device_states, methods=["GET"]),
        Route(peers.STATS, sim.partition_stats, methods=["GET"]),
        Route(peers.OFFLINE, sim.partition_offline, methods=["PUT"]),
    ]


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status)


async def _certfleet_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CertfleetError)
    return _error(exc.status, exc.code, exc.message)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return _error(404, "not_found", f"no such endpoint: {request.url.path}; a device's API is under "
                      "/api/devices/<serial>/ (trustpoints, keyring/default, weak-crypto, ca-bundle)")
    if exc.status_code == 405:
        return _error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")
    return _error(exc.status_code, "http_error", str(exc.detail))


async def _internal_error(_request: Request, _exc: Exception) -> Response:
    return _error(500, "internal_error", "the device simulator failed; see its log")


def _json(model: BaseModel) -> Response:
    # The serializer's bytes as they come (what model_dump_json decodes to a str, which the
    # Response would encode again).
    return Response(model.__pydantic_serializer__.to_json(model), media_type="application/json")


async def _body(request: Request) -> Any:
    return _parse_json(await request.body())


async def _bounded_body(request: Request, limit: int, *, what: str) -> Any:
    """The JSON body, refused with 413 as soon as it proves larger than ``limit`` bytes: by its
    Content-Length before reading, else while reading, and never parsed then."""
    most = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit // 1024} KiB"

    def too_large() -> PayloadTooLarge:
        return PayloadTooLarge(f"{what} is at most {most}; this request is larger", code="payload_too_large")

    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return _parse_json(b"".join(chunks))


def _parse_json(raw: bytes) -> Any:
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ValidationError("the request body is not valid JSON", code="invalid_json") from None


def _wire_body(model: type[Any], body: Any, hint: str) -> Any:
    try:
        return model.model_validate(body if body is not None else {})
    except WireError:
        raise ValidationError(hint, code="invalid_request") from None


def _paging(request: Request) -> tuple[int, int]:
    """(offset, limit) of an inventory page."""
    offset = _query_int(request, "offset", 0, minimum=0)
    return offset, min(_query_int(request, "limit", DEFAULT_PAGE, minimum=1), MAX_PAGE)


async def _offline_serials(request: Request) -> list[str]:
    body = await _bounded_body(request, OFFLINE_BODY_BYTES, what="a list of devices to take offline")
    serials = body.get("serials") if isinstance(body, dict) else None
    if not isinstance(serials, list) or not all(isinstance(s, str) for s in serials):
        raise ValidationError('send {"serials": ["FTD-000001", ...]}: the devices to take offline ([] brings '
                              'every device back)', code="invalid_request")
    return serials


def _query_int(request: Request, name: str, default: int, *, minimum: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise ValidationError(
            f"{name} must be an integer of at least {minimum}, not {raw!r}", code="invalid_paging"
        )
    return value

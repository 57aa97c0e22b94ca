"""The request-body cap: an oversized body is refused (413 request_too_large) before it is read,
parsed or even authenticated, whether its length is declared or it comes chunked; routes that
need more than the cap (bulk selections) or that read files keep their own limits."""

from __future__ import annotations

import json
import os
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.controller.api.schemas.bulk_enrollments import MAX_SELECTION_BODY
from shared.errors import ConfigurationError
from shared.settings import Settings
from tests.support.api import GLOBAL, V1, make_settings, problem, start_api
from tests.support.procs import Proc, free_port, wait_http

MIB = 1 << 20
#: What the attacker would send: far more than the controller has memory for.
ATTACK_BYTES = 1_500_000_000
#: The test gives up sending after this much: an answer must have come long before.
GIVE_UP_AFTER = 64 * MIB


def rss_kib(pid: int) -> int:
    line = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("VmRSS:"))
    return int(line.split()[1])


def endless(total: int, chunk: int = 256 * 1024) -> Iterator[bytes]:
    """``total`` bytes of JSON-ish filler, made lazily one chunk at a time."""
    block = b" " * chunk
    for _ in range(total // chunk):
        yield block


def stream_until_answered(port: int, path: str, *, declared: bool) -> tuple[bytes, int, float]:
    """POST an endless body to ``path``, reading whenever the server has something to say; stop
    sending once it answered. Return (the answer's bytes, bytes of body sent, seconds taken)."""
    length = f"Content-Length: {ATTACK_BYTES}" if declared else "Transfer-Encoding: chunked"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{length}\r\n\r\n")
    answer, sent, started = b"", 0, time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.encode())
        for chunk in endless(ATTACK_BYTES):
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            frame = chunk if declared else f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            try:
                sock.sendall(frame)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server hung up: it has answered
            sent += len(chunk)
            assert sent < GIVE_UP_AFTER, f"no answer after {sent} bytes of body"
        sock.settimeout(10)
        try:
            while part := sock.recv(65536):
                answer += part
        except ConnectionResetError:
            pass
    return answer, sent, time.monotonic() - started


def test_an_unauthenticated_huge_post_to_a_running_controller_is_refused_at_once_and_costs_no_memory(tmp_path):
    port = free_port()
    env = {**os.environ, "CERTFLEET_DATABASE_URL": f"sqlite:///{tmp_path / 'certfleet.db'}",
           "CERTFLEET_BROKER_URL": "", "CERTFLEET_LOG_LEVEL": "WARNING"}
    controller = Proc("controller", ["controller", "--port", str(port), "--no-reconciler", "--no-scheduler"],
                      env, tmp_path)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        path = f"{V1}/domains/{GLOBAL}/devices"
        stream_until_answered(port, path, declared=False)  # warms the server up: what it allocates once
        before = rss_kib(controller.popen.pid)
        for declared in (True, False):
            answer, sent, took = stream_until_answered(port, path, declared=declared)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 413"), answer[:300]
            assert b"connection: close" in head.lower()
            problem_body = json.loads(body)
            assert problem_body["code"] == "request_too_large"
            assert "CERTFLEET_MAX_REQUEST_BYTES" in problem_body["detail"] and "1048576" in problem_body["detail"]
            # Declared: refused before the body; chunked: about as soon as the cap is passed.
            assert sent < (4 * MIB if declared else 8 * MIB), sent
            assert took < 10, took
        grown = rss_kib(controller.popen.pid) - before
        assert grown < 8 * 1024, f"the controller grew by {grown} KiB"
    finally:
        controller.stop()


def test_the_cap_answers_before_authentication_and_parsing(api):
    path = f"{V1}/domains/{GLOBAL}/devices"
    declared = api.client.post(path, content=b"x" * (MIB + 1), headers={"Content-Type": "application/json"})
    body = problem(declared, 413, "request_too_large")  # not 401: nobody looked at the token
    assert body["limit_bytes"] == MIB
    chunked = api.client.post(path, content=iter([b"x" * 65536] * 17), headers={"Content-Type": "application/json"})
    problem(chunked, 413, "request_too_large")
    # At the cap, the body is read as always (here: it is no JSON document).
    problem(api.client.post(path, content=b" " * MIB, headers={"Content-Type": "application/json"}), 422,
            "validation_error")


def test_bulk_selections_have_their_own_larger_cap(api):
    path = f"/domains/{GLOBAL}/bulk-enrollments"
    padded = b'{"enrollment_object_id": "00000000-0000-0000-0000-000000000000", "selection": {"all": true}}'
    padded += b" " * (3 * MIB)  # larger than the general cap, within the bulk routes' own
    problem(api.call("POST", path, content=padded, headers={"Content-Type": "application/json"}), 404, "not_found")
    over = b" " * (MAX_SELECTION_BODY + 1)
    refused = problem(api.call("POST", path, content=over, headers={"Content-Type": "application/json"}), 413,
                      "request_too_large")
    assert refused["limit_bytes"] == MAX_SELECTION_BODY and "this route" in refused["detail"]


def test_upload_routes_keep_their_own_limits_under_a_lower_cap(db_engine, stub_broker):
    settings = make_settings(db_engine)
    low = Settings(**{**settings.__dict__, "max_request_bytes": 8192})
    client, tokens = start_api(db_engine, stub_broker, low)
    with client:
        headers = {"Authorization": f"Bearer {tokens['admin']}", "Content-Type": "application/json"}
        refused = client.post(f"{V1}/domains/{GLOBAL}/devices", content=b" " * 8193, headers=headers)
        assert problem(refused, 413, "request_too_large")["limit_bytes"] == 8192
        # A PKCS#12 upload of 20 KiB passes the cap and is judged by its own route (here: not base64).
        upload = {"filename": "a.p12", "pkcs12_base64": "!" * 20_000, "passphrase": "pw"}
        answer = client.post(f"{V1}/domains/{GLOBAL}/enrollment-objects/pkcs12", content=json.dumps(upload),
                             headers=headers)
        assert answer.status_code != 413 and answer.status_code < 500, answer.text


@pytest.mark.parametrize("value", ["0", "4095", "-1"])
def test_a_cap_too_small_for_ordinary_requests_is_refused(value):
    with pytest.raises(ConfigurationError, match="CERTFLEET_MAX_REQUEST_BYTES must be at least 4096"):
        Settings.from_env({"CERTFLEET_MAX_REQUEST_BYTES": value})

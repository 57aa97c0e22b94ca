"""A real Prometheus and Alertmanager for a test (Debian's ``prometheus`` and
``prometheus-alertmanager``, which ``make peers`` installs), each its own process on a loopback
port with its configuration and storage in the test's folder, and the webhook receiver
Alertmanager notifies: a small HTTP server keeping every notification it gets."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import yaml

from tests.support.ca_peers import tool
from tests.support.procs import Proc, answers_200, free_port


def prometheus_binary() -> str:
    return tool("prometheus", "apt-get install prometheus (make peers)")


def alertmanager_binary() -> str:
    return tool("prometheus-alertmanager", "apt-get install prometheus-alertmanager (make peers)")


def start_prometheus(config: dict, folder: Path, *, port: int | None = None) -> tuple[Proc, str]:
    """Prometheus on ``config``, storing in ``folder``; the process and its URL (not yet ready:
    see :func:`ready`). It scrapes its targets from about 5 s after its start: its discovery hands
    them over at that pace."""
    port = port or free_port()
    path = _write_config(config, folder)
    # Firing alerts go to Alertmanager again every 2 s, not every minute: one sent while the notifier
    # sets up its Alertmanager list again (a reload) would otherwise reach it a minute late.
    proc = Proc("prometheus", [f"--config.file={path}", f"--storage.tsdb.path={folder / 'tsdb'}",
                               f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                               "--rules.alert.resend-delay=2s"],
                {}, folder, program=[prometheus_binary()])
    return proc, f"http://127.0.0.1:{port}"


def reload_prometheus(proc: Proc, config: dict, folder: Path) -> None:
    """Make the Prometheus :func:`start_prometheus` started take ``config`` (SIGHUP: it reloads its
    configuration and rule files, and goes on scraping the targets it kept)."""
    _write_config(config, folder)
    proc.kill(signal.SIGHUP)


def _write_config(config: dict, folder: Path) -> Path:
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_alertmanager(config: dict, folder: Path, *, port: int | None = None) -> tuple[Proc, str]:
    """Alertmanager on ``config``, alone (no cluster port); the process and its URL."""
    port = port or free_port()
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    proc = Proc("alertmanager", [f"--config.file={path}", f"--storage.path={folder / 'alertmanager-data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                 "--log.level=warn"],
                {}, folder, program=[alertmanager_binary()])
    return proc, f"http://127.0.0.1:{port}"


def ready(url: str) -> bool:
    """Whether Prometheus or Alertmanager at ``url`` says it is ready."""
    return answers_200(url + "/-/ready")


class PrometheusApi:
    """Prometheus's HTTP API (``/api/v1``): each call answers ``data``, or raises naming the error."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url + "/api/v1", timeout=10)

    def close(self) -> None:
        self.http.close()

    def _data(self, path: str, **params: str):
        body = self.http.get(path, params=params).json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector ``expr`` evaluates to now (a scalar as one series without labels)."""
        data = self._data("/query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets(self) -> list[dict]:
        return self._data("/targets", state="active")["activeTargets"]

    def alerting_rules(self) -> dict[str, dict]:
        """Every alerting rule Prometheus evaluates, by name: its state (inactive, pending, firing),
        labels, annotations and active alerts."""
        groups = self._data("/rules", type="alert")["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}


@dataclass
class WebhookReceiver:
    """Alertmanager's webhook receiver: every notification body it was sent, in order."""

    url: str = ""
    notifications: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def alerts(self, status: str = "firing") -> dict[str, dict]:
        """The alerts notified with ``status`` (firing or resolved), the last of each alert name."""
        with self.lock:
            return {alert["labels"]["alertname"]: alert for note in self.notifications
                    for alert in note["alerts"] if alert["status"] == status}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.notifications.append(json.loads(body))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        return Handler


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), receiver.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/alerts"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()

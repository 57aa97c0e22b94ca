"""The embedded stack: controller API, reconciler, worker threads and the device
simulator in one process, and on request the CA simulator (EST), whose TLS root the
simulated devices then trust. What ``certfleet demo`` and ``certfleet up`` run.

This module is a composition root: like the ``certfleet`` command (:mod:`services.cli`), it may
import every service; the services themselves import only their own package and :mod:`shared`.
With ``CERTFLEET_BROKER_URL`` and ``CERTFLEET_DATABASE_URL`` set it uses Redis and
PostgreSQL; by default SQLite in the state directory and the in-process broker.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from services.ca_sim.service import RunningCa
from services.ca_sim.service import start_in_thread as start_ca
from services.controller.api.auth import create_token
from services.controller.app import create_app
from services.device_sim.config import SimConfig
from services.device_sim.server import start_in_thread
from services.worker.actors import declare_actors
from services.worker.cli import start_embedded_worker
from services.worker.context import WorkerContext
from shared.broker import make_broker
from shared.db import init_db, make_engine, session_scope
from shared.enums import Role
from shared.http_thread import ServerThread
from shared.settings import Settings


@dataclass
class EmbeddedStack:
    settings: Settings
    devices: int = 500
    seed: int = 1
    worker_threads: int = 8
    api_host: str = "127.0.0.1"
    api_port: int = 0
    state_dir: Path | None = None
    sim_options: dict = field(default_factory=dict)
    #: Keyword arguments for the CA simulator (services.ca_sim.service.start_in_thread),
    #: e.g. ``{"est_user": ..., "est_password": ...}``; None: no CA. Its state goes to STATE_DIR/ca.
    ca_options: dict | None = None
    ca: RunningCa | None = field(default=None, init=False)

    def start(self) -> EmbeddedStack:
        if self.state_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="certfleet-")
            self.state_dir = Path(self._tmp.name)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.database_url == Settings().database_url:
            # The embedded default keeps its SQLite file in the state directory.
            self.settings = replace(self.settings, database_url=f"sqlite:///{self.state_dir / 'certfleet.db'}")
        self.engine = make_engine(self.settings)
        init_db(self.engine)
        self.broker = make_broker(self.settings)
        sim_options = dict(self.sim_options)
        if self.ca_options is not None:
            self.ca = start_ca(self.state_dir / "ca", **self.ca_options)
            if self.ca.bundle_url and not self.settings.ca_bundle_urls:
                # The CA serves a CA bundle: certfleet takes its updates from there, pinning its signer.
                paths = self.ca.ca.paths
                self.settings = replace(self.settings, ca_bundle_urls=self.ca.bundle_url + "/",
                                        ca_bundle_signer=str(paths.bundle_signing_pem),
                                        ca_bundle_trust=str(paths.tls_ca))
            anchors = tuple(sim_options.get("trust_anchors", ())) + (str(self.ca.tls_ca),)
            sim_options["trust_anchors"] = anchors
        self.sim = start_in_thread(SimConfig(devices=self.devices, seed=self.seed, **sim_options))
        self.context = WorkerContext.create(self.settings, engine=self.engine)
        declare_actors(self.broker, self.context)
        self.worker = start_embedded_worker(self.broker, self.context, threads=self.worker_threads)
        app = create_app(self.settings, engine=self.engine, broker=self.broker, start_reconciler=True,
                         start_scheduler=True)
        self.api = ServerThread(app, host=self.api_host, port=self.api_port).start()
        with session_scope(self.engine) as session:
            self.admin_token = create_token(session, role=Role.ADMIN, name="embedded stack",
                                            lifetime=timedelta(days=self.settings.token_lifetime_days))
            session.commit()
        return self

    @property
    def api_url(self) -> str:
        return self.api.url

    def stop(self) -> None:
        for stop in (
            lambda: self.api.stop(),
            lambda: self.worker.stop(timeout=5000),
            lambda: self.sim.stop(),
            lambda: self.ca.stop() if self.ca is not None else None,
            lambda: self.broker.close(),
            lambda: self.engine.dispose(),
        ):
            try:
                stop()
            except Exception:  # best effort: stop the rest whatever one part does
                pass
        if getattr(self, "_tmp", None) is not None:
            self._tmp.cleanup()

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


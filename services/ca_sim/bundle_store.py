"""The CA bundles this CA simulator publishes as a bundle source, kept in its state directory::

    DIR/ca/bundles/000001.json, 000002.json, ...   every published version, as served

Each file is the signed answer of :mod:`shared.protocols.ca_bundle` (manifest and signature),
so serving a version is reading its file. A version is written to a temporary file and renamed
into place: a reader (``certfleet ca serve``, in another process) sees whole versions only, and
picks the highest number at each request. Publishers hold a lock, so two publications never
take the same number. Version 1 holds the CA's root and issuing CA (and the TLS trust anchor,
were it another CA); it is made the first time the store is opened.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from services.ca_sim.authority import CaPaths, CertificateAuthority, ensure_bundle_signer, load_authority
from shared.clock import utcnow
from shared.errors import ConfigurationError, NotFoundError, ValidationError
from shared.pki import PrivateKey
from shared.protocols import ca_bundle

_VERSION_FILE = re.compile(r"^(\d+)\.json$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class PublishedBundle:
    """One published version, as the store keeps it."""

    version: int
    published_at: datetime
    sha256: str
    certificates: tuple[x509.Certificate, ...]
    #: The body of ``GET /ca-bundle/latest``.
    answer: bytes


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate, lower-case hex: what ``--remove`` takes."""
    return cert.fingerprint(hashes.SHA256()).hex()


def normalise_fingerprint(given: str) -> str:
    value = given.replace(":", "").strip().lower()
    if not _FINGERPRINT.match(value):
        raise ConfigurationError(f"{given!r} is not a SHA-256 fingerprint: 64 hex digits, colons allowed",
                                 code="bad_fingerprint")
    return value


def read_certificates(path: Path | str) -> list[x509.Certificate]:
    """The certificates of a PEM file (one or more) or of a DER file."""
    data = Path(path).read_bytes()
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ValidationError(f"{path} holds no readable certificate (PEM or DER)", code="unreadable_certificate") \
            from None


def check_addable(cert: x509.Certificate, *, source: str, now: datetime) -> None:
    """A receiver refuses a bundle holding anything but CA certificates valid now; so does the
    publisher, naming the file."""
    subject = cert.subject.rfc4514_string()
    if not ca_bundle.is_ca_certificate(cert):
        raise ValidationError(f"{source}: {subject} is not a CA certificate (no basic constraints CA:TRUE); "
                              "a CA bundle holds CA certificates only", code="not_a_ca_certificate")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise ValidationError(f"{source}: {subject} is valid only from {cert.not_valid_before_utc:%Y-%m-%d} to "
                              f"{cert.not_valid_after_utc:%Y-%m-%d}", code="certificate_expired")


def _parse(answer: bytes) -> PublishedBundle:
    """A version this store wrote (so trusted: its signature is not checked again)."""
    manifest = json.loads(base64.b64decode(json.loads(answer)["manifest"]))
    return PublishedBundle(
        version=int(manifest["version"]), published_at=datetime.fromisoformat(manifest["published_at"]),
        sha256=manifest["sha256"], certificates=tuple(x509.load_pem_x509_certificates(manifest["pem"].encode())),
        answer=answer,
    )


class BundleStore:
    """The published versions in one state directory, and publishing the next."""

    def __init__(self, paths: CaPaths, signer: x509.Certificate, key: PrivateKey) -> None:
        self.paths = paths
        self.dir = paths.bundles_dir
        self.signer = signer
        self._key = key

    # --- reading (no lock: versions appear whole, by rename) -------------------------------

    def _versions(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(int(m[1]) for name in names if (m := _VERSION_FILE.match(name)))

    def _file(self, version: int) -> Path:
        return self.dir / f"{version:06d}.json"

    def answer_of(self, version: int) -> bytes:
        """A published version's answer, as it was served (FileNotFoundError if never published)."""
        return self._file(version).read_bytes()

    def latest_answer(self) -> bytes | None:
        """The newest version's answer, as served; None before the first publication."""
        versions = self._versions()
        return self.answer_of(versions[-1]) if versions else None

    def latest(self) -> PublishedBundle | None:
        answer = self.latest_answer()
        return _parse(answer) if answer is not None else None

    # --- publishing -------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, version: int, certificates: Sequence[x509.Certificate], now: datetime) -> PublishedBundle:
        manifest = ca_bundle.manifest_bytes(version=version, published_at=now, pem=ca_bundle.pem_of(list(certificates)))
        answer = ca_bundle.answer(manifest, ca_bundle.sign(manifest, self._key))
        final = self._file(version)
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(answer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        return _parse(answer)

    def ensure_first(self, ca: CertificateAuthority, *, now: datetime | None = None) -> PublishedBundle:
        """The newest version; version 1 (root, issuing CA, TLS trust anchor) if none exists."""
        with self._locked():
            current = self.latest()
            if current is not None:
                return current
            certificates = [ca.root, ca.issuing]
            if self.paths.tls_ca.exists():
                certificates += x509.load_pem_x509_certificates(self.paths.tls_ca.read_bytes())
            return self._write(1, _unique(certificates), now or utcnow())

    def publish(self, *, add: Sequence[tuple[str, x509.Certificate]] = (), remove: Sequence[str] = (),
                now: datetime | None = None) -> PublishedBundle:
        """Publish the newest version's certificates without ``remove`` (fingerprints) and with
        ``add`` ((where it came from, certificate)) as the next version."""
        now = now or utcnow()
        wanted_gone: dict[str, str] = {}  # each fingerprint once, with the spelling the operator gave
        for given in remove:
            wanted_gone.setdefault(normalise_fingerprint(given), given)
        for source, cert in add:
            check_addable(cert, source=source, now=now)
        with self._locked():
            current = self.latest()
            if current is None:
                raise NotFoundError(f"{self.paths.state_dir} has published no CA bundle yet", code="no_bundle")
            kept = {fingerprint(c): c for c in current.certificates}
            for value, given in wanted_gone.items():
                if value not in kept:
                    raise NotFoundError(
                        f"no certificate of CA bundle version {current.version} has the SHA-256 fingerprint {given}; "
                        f"`certfleet ca bundle show --state-dir {self.paths.state_dir}` lists them",
                        code="unknown_fingerprint")
                del kept[value]
            certificates = _unique([*kept.values(), *(cert for _, cert in add)])
            if not certificates:
                raise ValidationError("the new CA bundle would hold no certificate; add one, or remove fewer",
                                      code="empty_bundle")
            return self._write(current.version + 1, certificates, now)


def _unique(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    return list({fingerprint(c): c for c in certificates}.values())


def open_store(ca: CertificateAuthority, *, now: datetime | None = None) -> BundleStore:
    """The bundle store of a loaded CA, with its signer and version 1 made on first use."""
    signer, key = ensure_bundle_signer(ca, now=now)
    store = BundleStore(ca.paths, signer, key)
    store.ensure_first(ca, now=now)
    return store


def open_existing(state_dir: Path | str) -> BundleStore:
    """The bundle store of the CA in ``state_dir``, which must hold one already (the commands
    that publish never make a CA)."""
    paths = CaPaths(Path(state_dir).resolve())
    if not paths.issuing_pem.exists():
        raise NotFoundError(f"{paths.state_dir} holds no CA; start `certfleet ca serve --state-dir "
                            f"{paths.state_dir}` first", code="no_ca")
    return open_store(load_authority(paths.state_dir))

"""``certfleet ca``: the CA simulator.

    certfleet ca serve --state-dir DIR [--host H]... [--est-port P] [--est-user U --est-password W] ...
                       [--scep-port Q [--scep-challenge C] [--scep-ra]] [--bundle-port B]
                       [--validity-seconds N] [--http-port H [--public-host NAME] [--crl-hours N]
                       [--ocsp-minutes N] [--ocsp-signer delegated|ca]] [--processes N]
    certfleet ca revoke --state-dir DIR (--serial HEX | --cert FILE) [--reason REASON]
    certfleet ca revocations --state-dir DIR [--json]
    certfleet ca challenge --state-dir DIR [--ttl MINUTES]
    certfleet ca requests --state-dir DIR [--all]
    certfleet ca approve --state-dir DIR REQUEST_ID
    certfleet ca bundle publish --state-dir DIR [--add CERT.pem]... [--remove FINGERPRINT]...
    certfleet ca bundle show --state-dir DIR

A refusal is a shared error (:mod:`shared.failures` prints it): exit 2 for a bad setting or a
CA that contradicts it, exit 1 for a refused operation (no such request, no CA yet, a port in
use). What the CA itself does is imported when a subcommand runs, not to build the parser.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from services.ca_sim.ledger import REASONS
from services.ca_sim.profiles import PROFILES
from shared.errors import CertfleetError, ConfigurationError

PASSWORD_ENV = "CERTFLEET_CA_EST_PASSWORD"
CHALLENGE_ENV = "CERTFLEET_CA_SCEP_CHALLENGE"
#: The longest --validity-seconds: the longest a profile may issue for.
MAX_VALIDITY_SECONDS = 3650 * 24 * 3600
#: The longest --crl-hours (and --ocsp-minutes): a year.
MAX_REVOCATION_HOURS = 365 * 24
#: The most --processes: more would only contend for the state directory's locks.
MAX_PROCESSES = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ca_command", required=True)

    serve = sub.add_parser("serve", help="serve the CA over EST (HTTPS) until interrupted")
    serve.add_argument("--state-dir", required=True, help="where the CA keeps its keys and certificates")
    serve.add_argument("--host", action="append",
                       help="address to listen on (default 127.0.0.1); repeat it to serve several, e.g. "
                       "--host 127.0.0.1 --host ::1, on one port")
    serve.add_argument("--est-port", type=int, default=8443,
                       help="EST port (default 8443; 0 picks a free one)")
    serve.add_argument("--scep-port", type=int,
                       help="serve SCEP over plain HTTP on this port (0 picks a free one; default: no SCEP)")
    serve.add_argument("--bundle-port", type=int,
                       help="serve the CA bundle (GET /ca-bundle/latest) over HTTPS on this port (0 picks a free "
                       "one; default: not served)")
    serve.add_argument("--http-port", type=int,
                       help="serve the issuing CA's CRL (GET /crl/issuing.crl) and an OCSP responder (/ocsp) over "
                       "plain HTTP on this port (0 picks a free one); issued certificates then carry their URLs "
                       "(default: not served, and no URLs)")
    serve.add_argument("--public-host", metavar="NAME",
                       help="host name or address in the CRL and OCSP URLs issued certificates carry (an IPv6 "
                       "address is put in brackets; default: the first --host, loopback for 0.0.0.0 or ::)")
    serve.add_argument("--crl-hours", type=float, default=1.0, metavar="N",
                       help="a CRL's life, thisUpdate to nextUpdate (default 1; fractions allowed); a new one is "
                       "issued after every revocation and when half of it is over")
    serve.add_argument("--ocsp-minutes", type=float, default=10.0, metavar="N",
                       help="an OCSP answer's life, thisUpdate to nextUpdate (default 10; 0: no nextUpdate, "
                       "newer information is always available)")
    serve.add_argument("--ocsp-signer", choices=["delegated", "ca"], default="delegated",
                       help="who signs OCSP answers: a responder certificate the issuing CA issued for it "
                       "(DIR/ocsp-signer.pem, id-kp-OCSPSigning; the default) or the issuing CA itself")
    serve.add_argument("--est-user", help="HTTP basic-auth user for enrollment (default: no authentication)")
    serve.add_argument("--est-password", default=os.environ.get(PASSWORD_ENV),
                       help=f"HTTP basic-auth password (or env {PASSWORD_ENV}, kept out of the process list)")
    serve.add_argument("--scep-challenge", default=os.environ.get(CHALLENGE_ENV),
                       help=f"static SCEP challenge password (or env {CHALLENGE_ENV}); one-time passwords from "
                       "`certfleet ca challenge` are accepted besides it")
    serve.add_argument("--scep-ra", action="store_true",
                       help="answer SCEP through an RA certificate issued by the CA (always so for an ECDSA CA)")
    serve.add_argument("--key-type", choices=["rsa", "ecdsa"],
                       help="key of a new CA: RSA-2048 (default) or P-256; an existing CA keeps its key")
    serve.add_argument("--default-profile", default="default", choices=sorted(PROFILES),
                       help="profile for /.well-known/est/ without a label (default: default)")
    serve.add_argument("--validity-seconds", type=int, metavar="N",
                       help="issued end-entity certificates (EST and SCEP) last N seconds instead of their "
                       "profile's days, to watch automatic renewal in tests and demos; they start at most a "
                       "tenth of N before issuance, not the usual 5 minutes (default: the profile's validity)")
    serve.add_argument("--retry-after", type=int, default=2,
                       help="seconds a client waits before asking again about a pending request (default 2)")
    serve.add_argument("--processes", type=int, default=1, metavar="N",
                       help=f"serve from N processes (1 to {MAX_PROCESSES}; default 1, this one): the CA is loaded and "
                       "the ports bound once, then N forked processes each serve every port and host (SO_REUSEPORT: "
                       "the kernel spreads the connections). They share everything the CA decides through the "
                       "state directory (serials, issued and revoked certificates, CRLs, held requests, SCEP "
                       "transactions and challenges, CA bundles); nothing is per process. Answers name their "
                       "process in the Certfleet-CA-Process header")
    serve.set_defaults(ca_func=_serve)

    revoke = sub.add_parser("revoke", help="revoke a certificate the CA issued (a running serve answers it at once)")
    revoke.add_argument("--state-dir", required=True)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--serial", metavar="HEX", help="the certificate's serial number, hexadecimal (colons and 0x "
                       "allowed: as `openssl x509 -serial` or `certfleet ca revocations` prints it)")
    which.add_argument("--cert", metavar="FILE", help="the certificate itself, PEM or DER")
    revoke.add_argument("--reason", default="unspecified", choices=REASONS,
                        help="the reason in the CRL and OCSP answers (default unspecified, which they leave out)")
    revoke.set_defaults(ca_func=_revoke)

    revocations = sub.add_parser("revocations", help="list the certificates the CA revoked")
    revocations.add_argument("--state-dir", required=True)
    revocations.add_argument("--json", action="store_true", help="one JSON list, for scripts")
    revocations.set_defaults(ca_func=_revocations)

    requests = sub.add_parser("requests", help="list enrollment requests waiting for approval")
    requests.add_argument("--state-dir", required=True)
    requests.add_argument("--all", action="store_true", help="list approved and issued requests too")
    requests.set_defaults(ca_func=_requests)

    approve_p = sub.add_parser("approve", help="approve a pending enrollment request")
    approve_p.add_argument("--state-dir", required=True)
    approve_p.add_argument("request_id", metavar="REQUEST_ID")
    approve_p.set_defaults(ca_func=_approve)

    challenge = sub.add_parser("challenge", help="print a one-time SCEP challenge password")
    challenge.add_argument("--state-dir", required=True)
    # No default here: the challenge store's own (an hour) applies.
    challenge.add_argument("--ttl", type=int, help="minutes the password stays valid unused (default 60)")
    challenge.set_defaults(ca_func=_challenge)

    bundle = sub.add_parser("bundle", help="the CA bundle this CA publishes (served with serve --bundle-port)")
    bundle_sub = bundle.add_subparsers(dest="bundle_command", required=True)
    publish = bundle_sub.add_parser("publish", help="publish the next version of the CA bundle")
    publish.add_argument("--state-dir", required=True)
    publish.add_argument("--add", action="append", default=[], metavar="CERT",
                         help="a PEM (or DER) file of CA certificates to add; repeatable")
    publish.add_argument("--remove", action="append", default=[], metavar="FINGERPRINT",
                         help="SHA-256 fingerprint of a certificate to drop (as `bundle show` lists; colons and "
                         "case ignored); repeatable")
    publish.set_defaults(ca_func=_bundle_publish)
    show = bundle_sub.add_parser("show", help="the newest published version of the CA bundle")
    show.add_argument("--state-dir", required=True)
    show.set_defaults(ca_func=_bundle_show)


def main(args: argparse.Namespace) -> int:
    return args.ca_func(args)


def _serve(args: argparse.Namespace) -> int:
    from services.ca_sim.service import start_in_thread
    from shared.heap import settle_heap
    from shared.logging import configure_logging
    from shared.settings import Settings

    settings = Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    for option, value in (("--scep-challenge", args.scep_challenge), ("--scep-ra", args.scep_ra or None)):
        if value is not None and args.scep_port is None:
            print(f"warning: {option} ignored without --scep-port", file=sys.stderr)
    revocation_options = (("--public-host", args.public_host), ("--crl-hours", args.crl_hours != 1.0 or None),
                          ("--ocsp-minutes", args.ocsp_minutes != 10.0 or None),
                          ("--ocsp-signer", args.ocsp_signer != "delegated" or None))
    for option, value in revocation_options:
        if value is not None and args.http_port is None:
            print(f"warning: {option} ignored without --http-port", file=sys.stderr)
    crl_validity, ocsp_validity = _revocation_lifetimes(args)
    if args.public_host is not None:
        from services.ca_sim.service import url_host

        try:
            url_host(args.public_host)
        except ValueError as exc:
            raise ConfigurationError(f"--public-host: {exc}", code="bad_public_host") from None
    if args.validity_seconds is not None and not 1 <= args.validity_seconds <= MAX_VALIDITY_SECONDS:
        raise ConfigurationError(f"--validity-seconds must be 1 to {MAX_VALIDITY_SECONDS} (ten years), "
                                 f"not {args.validity_seconds}", code="bad_validity")
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise ConfigurationError(f"--processes must be 1 to {MAX_PROCESSES}, not {args.processes}",
                                 code="bad_processes")
    options = dict(
        host=args.host or ["127.0.0.1"], est_port=args.est_port, est_user=args.est_user,
        est_password=args.est_password, key_type=args.key_type, retry_after=args.retry_after,
        default_profile=args.default_profile, scep_port=args.scep_port, scep_challenge=args.scep_challenge,
        scep_ra=args.scep_ra, bundle_port=args.bundle_port, validity_seconds=args.validity_seconds,
        http_port=args.http_port, public_host=args.public_host, crl_validity=crl_validity,
        ocsp_validity=ocsp_validity, ocsp_delegated=args.ocsp_signer == "delegated",
    )
    if args.processes > 1:
        return _serve_processes(args, options)
    with _listening(args):
        running = start_in_thread(args.state_dir, **options)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    settle_heap()
    print(running.ready_line(), flush=True)
    try:
        stop.wait()
    finally:
        running.stop()
    return 0


def _serve_processes(args: argparse.Namespace, options: dict) -> int:
    """Load the CA and bind once here, then serve from forked processes until SIGTERM or SIGINT."""
    from services.ca_sim.processes import serve_processes
    from services.ca_sim.service import log_started, prepare, ready_line
    from shared.heap import settle_heap

    with _listening(args):
        apps, listeners = prepare(args.state_dir, reuse_port=True, **options)
    line = ready_line(listeners, apps.ca.paths.state_dir, processes=args.processes)
    log_started(apps, listeners, processes=args.processes)  # here: the parent closes its sockets once forked
    settle_heap()  # before the fork: the children share these pages instead of copying them
    serve_processes(apps, listeners, args.processes, on_ready=lambda: print(line, flush=True))
    return 0


@contextmanager
def _listening(args: argparse.Namespace) -> Iterator[None]:
    """Settings the CA refuses as configuration errors (exit 2), ports it cannot bind as
    ``cannot_listen`` (exit 1)."""
    try:
        yield
    except ValueError as exc:  # EstSettings/ScepSettings: user without password and the like
        raise ConfigurationError(str(exc)) from exc
    except OSError as exc:
        if exc.filename:  # the state directory, not a port: reported as the file error it is
            raise
        hosts = ", ".join(args.host or ["127.0.0.1"])
        ports = " or ".join(str(p) for p in (args.est_port, args.scep_port, args.bundle_port, args.http_port)
                            if p is not None)
        raise CertfleetError(f"cannot listen on {hosts} port {ports}: {exc.strerror or exc}",
                             code="cannot_listen") from None


def _revocation_lifetimes(args: argparse.Namespace) -> tuple[timedelta, timedelta | None]:
    """--crl-hours and --ocsp-minutes, checked: a second to a year, and 0 minutes for no nextUpdate."""
    if not 1 / 3600 <= args.crl_hours <= MAX_REVOCATION_HOURS:
        raise ConfigurationError(f"--crl-hours must be 1/3600 (a second) to {MAX_REVOCATION_HOURS} (a year), "
                                 f"not {args.crl_hours:g}", code="bad_crl_hours")
    if args.ocsp_minutes != 0 and not 1 / 60 <= args.ocsp_minutes <= MAX_REVOCATION_HOURS * 60:
        raise ConfigurationError(f"--ocsp-minutes must be 0 (no nextUpdate) or 1/60 (a second) to "
                                 f"{MAX_REVOCATION_HOURS * 60} (a year), not {args.ocsp_minutes:g}",
                                 code="bad_ocsp_minutes")
    ocsp_validity = timedelta(minutes=args.ocsp_minutes) if args.ocsp_minutes else None
    return timedelta(hours=args.crl_hours), ocsp_validity


def _revoke(args: argparse.Namespace) -> int:
    from services.ca_sim.revocations import read_certificate, revoke

    if args.cert is not None:
        revocation, changed = revoke(args.state_dir, cert=read_certificate(args.cert), reason=args.reason)
    else:
        from services.ca_sim.ledger import parse_serial

        revocation, changed = revoke(args.state_dir, serial=parse_serial(args.serial), reason=args.reason)
    serial = format(revocation.serial, "x")
    if not changed:
        print(f"{serial} ({revocation.subject}) was already revoked at "
              f"{revocation.revoked_at.isoformat(timespec='seconds')} ({revocation.reason}); nothing to do")
        return 0
    print(f"revoked {serial} ({revocation.subject}), reason {revocation.reason}, at "
          f"{revocation.revoked_at.isoformat(timespec='seconds')}; OCSP answers it now, the next CRL lists it")
    return 0


def _revocations(args: argparse.Namespace) -> int:
    from services.ca_sim.revocations import list_revocations

    items = list_revocations(args.state_dir)
    if args.json:
        print(json.dumps([r.as_dict() for r in items], indent=2))
        return 0
    if not items:
        print("no revocations")
        return 0
    width = max(len("SERIAL"), *(len(format(r.serial, "x")) for r in items)) + 2
    print(f"{'SERIAL':<{width}}{'REVOKED':<27}{'REASON':<22}SUBJECT")
    for r in items:
        print(f"{format(r.serial, 'x'):<{width}}{r.revoked_at.isoformat(timespec='seconds'):<27}{r.reason:<22}"
              f"{r.subject}")
    return 0


def _requests(args: argparse.Namespace) -> int:
    from services.ca_sim.pending import list_requests

    items = list_requests(args.state_dir, status=None if args.all else "pending")
    if not items:
        print("no pending requests" if not args.all else "no requests")
        return 0
    print(f"{'ID':<14}{'PROFILE':<18}{'STATUS':<10}{'CREATED':<27}SUBJECT")
    for r in items:
        print(f"{r.id:<14}{r.profile:<18}{r.status:<10}{r.created_at.isoformat(timespec='seconds'):<27}{r.subject}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    from services.ca_sim.pending import approve

    request = approve(args.state_dir, args.request_id)
    if request.status != "approved":
        print(f"{request.id} is already {request.status}; nothing to do")
        return 0
    print(f"approved {request.id} ({request.subject}, profile {request.profile}); "
          "the device gets its certificate when it asks again")
    return 0


def _challenge(args: argparse.Namespace) -> int:
    from services.ca_sim.challenges import issue_challenge

    if args.ttl is not None and args.ttl < 1:
        raise ConfigurationError("--ttl must be at least 1 minute", code="bad_ttl")
    ttl = {} if args.ttl is None else {"ttl": timedelta(minutes=args.ttl)}
    # The password goes to stdout alone, so scripts can capture it: $(certfleet ca challenge ...).
    print(issue_challenge(args.state_dir, **ttl))
    return 0


def _bundle_publish(args: argparse.Namespace) -> int:
    from services.ca_sim.bundle_store import open_existing, read_certificates

    if not args.add and not args.remove:
        raise ConfigurationError("give --add CERT or --remove FINGERPRINT (or both): what the new version changes",
                                 code="nothing_to_publish")
    store = open_existing(args.state_dir)
    added = [(path, cert) for path in args.add for cert in read_certificates(path)]
    published = store.publish(add=added, remove=args.remove)
    count = len(published.certificates)
    print(f"published CA bundle version {published.version}: {count} certificate{'s' if count != 1 else ''}")
    return 0


def _bundle_show(args: argparse.Namespace) -> int:
    from services.ca_sim.bundle_store import fingerprint, open_existing

    store = open_existing(args.state_dir)
    bundle = store.latest()
    assert bundle is not None  # opening the store publishes version 1
    print(f"version {bundle.version}")
    print(f"published {bundle.published_at.isoformat(timespec='seconds')}")
    print(f"sha256 {bundle.sha256}")
    print(f"signed by {store.paths.bundle_signing_pem}")
    print(f"{len(bundle.certificates)} certificates (SHA-256 fingerprint, subject):")
    for cert in bundle.certificates:
        print(f"  {fingerprint(cert)}  {cert.subject.rfc4514_string()}")
    return 0

"""``certfleet trustpoint …`` and ``certfleet device weak-crypto``: the operator's everyday
certificate actions against the controller's API, one device's trustpoint at a time.

    certfleet trustpoint show DEVICE NAME          statuses, certificate details, CA chain
    certfleet trustpoint csr DEVICE NAME [-o FILE] a manual trustpoint's CSR
    certfleet trustpoint import DEVICE NAME --cert FILE [--ca-cert FILE] [--wait]
    certfleet trustpoint export DEVICE NAME --format pkcs12|pem -o FILE [--passphrase-file F]
    certfleet trustpoint validate DEVICE NAME --cert PEER [--chain FILE] [--usage USE]
    certfleet trustpoint re-enroll|refresh|delete DEVICE NAME [--wait]
    certfleet device weak-crypto DEVICE --enable [--yes] | --disable
    certfleet device show DEVICE                   details, endpoint trust, the default keyring's health
    certfleet device trust DEVICE [--credential-file FILE] | --withdraw   (admin)

DEVICE is a device id, name or serial; --domain a domain id or name (default Global). The API
URL and token come from ``--api-url`` and ``--token`` or ``CERTFLEET_API_URL`` and
``CERTFLEET_TOKEN``. Errors follow services.cli.errors: ``error: <code>: <message>``, exit 1
when the operation was refused or failed, 2 when the command line must change. ``validate``
prints the device's verdict and exits 0 only when it is ``valid``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.connection import add_api_arguments, connect
from services.cli.errors import CliError, UsageError
from services.cli.lookup import resolve_device, resolve_domain
from shared.domains import GLOBAL_DOMAIN_ID

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from services.cli.api_client import CertfleetClient

PASSPHRASE_ENV = "CERTFLEET_EXPORT_PASSPHRASE"
WEAK_CRYPTO_WARNING = ("Enabling weak-crypto lets {device} use weak ciphers in certificates (RSA below 2048 "
                       "bits, DSA, SHA-1/MD5 signatures, DES/3DES/RC2 encryption), which reduces security.")

Action = Callable[["CertfleetClient", argparse.Namespace, dict], int]


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``trustpoint`` and ``device`` to the ``certfleet`` command."""
    trustpoint = sub.add_parser("trustpoint", help="view and act on one device's trustpoint")
    actions = trustpoint.add_subparsers(dest="trustpoint_command", required=True)

    def action(name: str, help_text: str, run: Action) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=help_text)
        parser.add_argument("device", metavar="DEVICE", help="device id, name or serial")
        parser.add_argument("name", metavar="NAME", help="trustpoint name")
        _common(parser)
        parser.set_defaults(func=_on_device(run))
        return parser

    action("show", "statuses, certificate details and the CA chain", _show)
    csr = action("csr", "the CSR of a manual trustpoint waiting for its identity certificate", _csr)
    csr.add_argument("-o", "--output", metavar="FILE", help="write the CSR here instead of printing it")
    imp = action("import", "import the identity certificate your CA issued for the CSR", _import)
    imp.add_argument("--cert", required=True, metavar="FILE", help="identity certificate, PEM or DER")
    imp.add_argument("--ca-cert", metavar="FILE",
                     help="the issuing CA's certificate (PEM), if the trustpoint has none")
    imp.add_argument("--wait", action="store_true", help="wait until the device has installed it")
    exp = action("export", "export the certificate: pkcs12 (key and whole chain) or pem (identity only)",
                 _export)
    exp.add_argument("--format", required=True, choices=["pkcs12", "pem"])
    exp.add_argument("--passphrase-file", metavar="FILE",
                     help=f"PKCS12 passphrase, first line of FILE (else env {PASSPHRASE_ENV}, else a prompt)")
    exp.add_argument("-o", "--output", required=True, metavar="FILE")
    val = action("validate", "validate a peer's certificate with the trustpoint's CA, as the device would "
                 "(chain, usage, revocation); exit 0 only when valid", _validate)
    val.add_argument("--cert", required=True, metavar="FILE", help="the peer's certificate, PEM or DER")
    val.add_argument("--chain", metavar="FILE", help="intermediate CA certificates the peer sends (PEM)")
    val.add_argument("--usage", choices=["ipsec_client", "ssl_client", "ssl_server"],
                     help="what the peer is validated for (default: any use the trustpoint allows)")
    for name, help_text in (("re-enroll", "re-enroll: a new key pair and certificate"),
                            ("refresh", "read the trustpoint's state back from the device"),
                            ("delete", "remove the trustpoint from the device and the database")):
        parser = action(name, help_text, _job_action(name))
        parser.add_argument("--wait", action="store_true", help="wait until the job has finished")

    device = sub.add_parser("device", help="one device's settings")
    settings = device.add_subparsers(dest="device_command", required=True)
    weak = settings.add_parser("weak-crypto",
                               help="allow or forbid weak ciphers in the device's certificates")
    weak.add_argument("device", metavar="DEVICE", help="device id, name or serial")
    toggle = weak.add_mutually_exclusive_group(required=True)
    toggle.add_argument("--enable", action="store_true")
    toggle.add_argument("--disable", action="store_true")
    weak.add_argument("--yes", action="store_true", help="enable without asking for confirmation")
    _common(weak)
    weak.set_defaults(func=_on_device(_weak_crypto))
    show = settings.add_parser("show", help="the device's details and its default keyring's health")
    show.add_argument("device", metavar="DEVICE", help="device id, name or serial")
    _common(show)
    show.set_defaults(func=_on_device(_device_show))
    trust = settings.add_parser("trust", help="approve the device's management endpoint at its current URL, "
                                              "optionally with the credential it holds (admin)")
    trust.add_argument("device", metavar="DEVICE", help="device id, name or serial")
    vouch = trust.add_mutually_exclusive_group()
    vouch.add_argument("--credential-file", metavar="FILE",
                       help="file whose first line is the credential the device holds, which its secrets are sealed "
                            "to ('-': standard input)")
    vouch.add_argument("--withdraw", action="store_true", help="withdraw the approval instead")
    _common(trust)
    trust.set_defaults(func=_on_device(_device_trust))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="DOMAIN",
                        help="domain by id or name (default Global)")
    add_api_arguments(parser)


def _on_device(run: Action) -> Callable[[argparse.Namespace], int]:
    """The command: connect, find the DEVICE in the domain, act on it."""

    def main(args: argparse.Namespace) -> int:
        with connect(args) as client:
            args.domain = resolve_domain(client, args.domain)
            return run(client, args, resolve_device(client, args.device, domain_id=args.domain))

    return main


# --- trustpoint actions ----------------------------------------------------------------------------

def _show(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    from rich.table import Table

    tp = client.trustpoint(device["id"], args.name, domain_id=args.domain)
    console = _console()
    summary = Table(title=f"trustpoint {tp['name']} on {tp['device_name']}", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("enrollment type", tp["enrollment_type"])
    summary.add_row("CA certificate", tp["ca_status"])
    summary.add_row("identity certificate", tp["identity_status"])
    if tp.get("error_code"):
        summary.add_row("error", f"{tp['error_code']}: {tp['error_message']}")
    if tp.get("csr_pem"):
        summary.add_row("CSR", f"waiting: certfleet trustpoint csr {args.device} {tp['name']}")
    if tp.get("renewal_due_at"):
        summary.add_row("renewal due", tp["renewal_due_at"].replace("T", " ")[:19] + " UTC")
    if tp.get("last_renewal_at"):
        summary.add_row("last renewal", tp["last_renewal_at"].replace("T", " ")[:19] + " UTC")
    if tp.get("renewal_error_code"):
        summary.add_row("renewal error", f"{tp['renewal_error_code']}: {tp['renewal_error_message']} "
                                         f"({tp['renewal_failures']} in a row)")
    if tp.get("renewal_warning"):
        summary.add_row("warning", tp["renewal_warning"])
    console.print(summary)
    if tp.get("identity_certificate"):
        console.print(_certificate_table("identity certificate", tp["identity_certificate"]))
    cas = tp.get("ca_certificates") or []
    for position, cert in enumerate(cas):
        label = ("root CA" if cert["subject"] == cert["issuer"]
                 else "issuing CA" if position == 0 else "intermediate CA")
        console.print(_certificate_table(f"CA certificate {position} ({label})", cert))
    if cas:
        identity = [tp["identity_certificate"]["subject"]] if tp.get("identity_certificate") else []
        console.print("chain: " + " -> ".join(identity + [c["subject"] for c in cas]))
    return 0


def _certificate_table(title: str, cert: dict) -> Table:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [
        ("subject", cert["subject"]), ("issuer", cert["issuer"]), ("serial", cert["serial_number"]),
        ("valid", f"{cert['not_before']} to {cert['not_after']}"),
        ("key", f"{cert['key_algorithm']}-{cert['key_size']}"), ("signature", cert["signature_algorithm"]),
        ("key usage", ", ".join(cert.get("key_usage", []))),
        ("extended key usage", ", ".join(cert.get("extended_key_usage", []))),
        ("subjectAltNames", ", ".join(cert.get("subject_alt_names", []))),
        ("CRL URLs", ", ".join(cert.get("crl_urls", []))),
        ("OCSP URLs", ", ".join(cert.get("ocsp_urls", []))),
        ("SHA-1", cert.get("fingerprint_sha1", "")), ("SHA-256", cert["fingerprint_sha256"]),
    ]
    for label, value in rows:
        if value:
            table.add_row(label, value)
    return table


def _console() -> Console:
    from rich.console import Console

    # Piped output keeps long values (fingerprints, names) on one line.
    return Console(width=None if sys.stdout.isatty() else 200)


def _csr(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    pem = client.trustpoint_csr(device["id"], args.name, domain_id=args.domain)
    if args.output:
        Path(args.output).write_text(pem)
        print(f"wrote the CSR of trustpoint {args.name} to {args.output}; get it signed by your CA, then run "
              f"certfleet trustpoint import {args.device} {args.name} --cert FILE")
    else:
        sys.stdout.write(pem)
    return 0


def _import(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    certificate = _read(args.cert)
    ca = _read(args.ca_cert) if args.ca_cert else None
    answer = client.import_identity_certificate(device["id"], args.name, certificate, ca_certificate=ca,
                                                domain_id=args.domain)
    print(f"identity certificate accepted for trustpoint {args.name}; job {answer['job']['id']} installs it")
    return _follow(client, args, answer["job"]) if args.wait else 0


def _export(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    passphrase = _passphrase(args) if args.format == "pkcs12" else None
    content = client.export_trustpoint(device["id"], args.name, args.format, passphrase=passphrase,
                                       domain_id=args.domain)
    out = Path(args.output)
    out.write_bytes(content)
    if args.format == "pkcs12":
        out.chmod(0o600)  # it holds the private key
    what = ("key, identity certificate and CA chain (PKCS12)" if args.format == "pkcs12"
            else "identity certificate")
    print(f"exported the {what} of trustpoint {args.name} to {out}")
    return 0


def _validate(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    chain = _pem_file(args.chain) if args.chain else None
    answer = client.validate_peer(device["id"], args.name, _pem_file(args.cert), chain_pem=chain,
                                  usage=args.usage, domain_id=args.domain)
    rows = [("verdict", answer["verdict"]), ("reason", answer.get("reason")),
            ("revoked", (answer.get("revoked_at") or "").replace("T", " ")[:19] + " UTC"
             if answer.get("revoked_at") else None),
            ("source", answer.get("source")), ("detail", answer.get("detail"))]
    for label, value in rows:
        if value:
            print(f"{label + ':':9}{value}")
    return 0 if answer["verdict"] == "valid" else 1


def _pem_file(path: str) -> str:
    """The certificates of a PEM or DER file, as PEM text."""
    from shared.errors import ValidationError
    from shared.pki import load_certificates, to_pem

    data = _read(path)
    try:
        return "".join(to_pem(cert) for cert in load_certificates(data))
    except ValidationError:
        raise UsageError("invalid_certificate", f"{path} holds no certificate in PEM or DER") from None


def _passphrase(args: argparse.Namespace) -> str:
    if args.passphrase_file:
        lines = _read(args.passphrase_file).decode(errors="replace").splitlines()
        passphrase = lines[0] if lines else ""
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV]
    elif sys.stdin.isatty():
        passphrase = getpass.getpass("PKCS12 passphrase: ")
        if getpass.getpass("again: ") != passphrase:
            raise UsageError("passphrase_mismatch", "the two passphrases differ")
    else:
        passphrase = ""
    if not passphrase:
        raise UsageError("passphrase_required", f"a PKCS12 export needs a passphrase: --passphrase-file FILE, "
                                                f"{PASSPHRASE_ENV}, or type it at the prompt")
    return passphrase


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UsageError("file_unreadable", f"cannot read {path}: {exc.strerror}") from None


def _job_action(action: str) -> Action:
    def run(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
        answer = client.trustpoint_action(device["id"], args.name, action, domain_id=args.domain)
        print(f"{action} of trustpoint {args.name} on {device['name']} started: job {answer['job']['id']}")
        return _follow(client, args, answer["job"]) if args.wait else 0

    return run


def _follow(client: CertfleetClient, args: argparse.Namespace, job: dict) -> int:
    done = client.wait_for_job(job["id"], domain_id=args.domain, timeout=120)
    if done["state"] == "failed":
        raise CliError(done["error_code"] or "job_failed", done["error_message"] or "the job failed")
    if done["kind"] != "delete":
        tp = client.trustpoint(done["device_id"], done["trustpoint_name"], domain_id=args.domain)
        print(f"job {done['id']} succeeded: CA certificate {tp['ca_status']}, identity certificate "
              f"{tp['identity_status']}")
    else:
        print(f"job {done['id']} succeeded: trustpoint {done['trustpoint_name']} deleted")
    return 0


# --- device settings -------------------------------------------------------------------------------

def _weak_crypto(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    if args.disable:
        client.update_device(device["id"], domain_id=args.domain, weak_crypto=False)
        print(f"weak-crypto disabled on {device['name']}")
        return 0
    if not args.yes:
        print(WEAK_CRYPTO_WARNING.format(device=device["name"]))
        if not sys.stdin.isatty():
            raise UsageError("confirmation_required", "confirm at a terminal, or pass --yes")
        if input("Enable weak-crypto? [y/N] ").strip().lower() not in ("y", "yes"):
            raise CliError("not_confirmed", f"weak-crypto left disabled on {device['name']}")
    client.update_device(device["id"], domain_id=args.domain, weak_crypto=True, confirm=True)
    print(f"weak-crypto enabled on {device['name']}; re-enroll its trustpoints refused for weak crypto")
    return 0


def _device_show(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    from rich.table import Table

    device = client.device(device["id"], domain_id=args.domain)
    table = Table(title=f"device {device['name']}", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    for label, value in (("serial", device["serial"]), ("model", device["model"]),
                         ("IP address", device["ip_address"]), ("FQDN", device["fqdn"]),
                         ("management URL", device["management_url"]), ("id", device["id"]),
                         ("weak-crypto", "enabled" if device["weak_crypto"] else "disabled"),
                         ("CA bundle", device["bundle_version"] or "none yet")):
        if value:
            table.add_row(label, value)
    for label, value in trust_rows(device.get("endpoint_trust") or {}, device=args.device):
        table.add_row(label, value)
    for label, value in keyring_rows(device.get("keyring") or {}, device=args.device):
        table.add_row(label, value)
    _console().print(table)
    return 0


def _device_trust(client: CertfleetClient, args: argparse.Namespace, device: dict) -> int:
    if args.withdraw:
        client.withdraw_device_approval(device["id"], domain_id=args.domain)
        print(f"approval of {device['name']} withdrawn: it gets secrets only if the allow-list matches "
              f"{device['management_url']}")
        return 0
    credential = None
    if args.credential_file:
        raw = sys.stdin.read() if args.credential_file == "-" else _read(args.credential_file).decode(errors="replace")
        credential = (raw.splitlines() or [""])[0].strip()
        if not credential:
            raise UsageError("credential_required", f"{args.credential_file} holds no credential on its first line")
    answer = client.approve_device(device["id"], credential=credential, domain_id=args.domain)
    held = "with its credential" if answer["endpoint_trust"]["has_credential"] else \
        "without a credential: secrets stay refused until one is given (--credential-file)"
    print(f"{device['name']} approved at {device['management_url']}, {held}")
    return 0


def trust_rows(trust: dict, *, device: str) -> list[tuple[str, str]]:
    """Whether the device gets secrets, in rows of (label, text)."""
    basis = trust.get("basis")
    if basis == "approved":
        state = f"trusted: approved by {trust.get('approved_by')} on {_utc(trust['approved_at'])}"
    elif basis == "allow_list":
        state = "trusted: its management URL is on the allow-list (certfleet endpoints list)"
    else:
        state = (f"not trusted: no secret goes to it; an admin approves it (certfleet device trust {device}) or "
                 "allows its endpoint (certfleet endpoints allow)")
    credential = "held" if trust.get("has_credential") else \
        f"none: secrets stay refused until an admin gives it (certfleet device trust {device} --credential-file F)"
    return [("endpoint trust", state), ("endpoint credential", credential)]


def _utc(value: str) -> str:
    return value.replace("T", " ")[:19] + " UTC"


def keyring_rows(keyring: dict, *, device: str) -> list[tuple[str, str]]:
    """The default keyring as the last health check read it, in rows of (label, text)."""
    if keyring.get("valid") is None:
        state = "not read yet: the next health check reads it"
    elif keyring["valid"]:
        state = "valid" + (f" until {_utc(keyring['not_after'])}" if keyring.get("not_after") else "")
    else:
        ended = f" (certificate ended {_utc(keyring['not_after'])})" if keyring.get("not_after") else ""
        state = (f"invalid, reason: {keyring.get('reason') or 'unknown'}{ended}; regenerate it: certfleet system "
                 f"support regenerate-security-keyring default --device {device}")
    rows = [("default keyring", state)]
    if keyring.get("checked_at"):
        rows.append(("health checked", _utc(keyring["checked_at"])))
    if keyring.get("error"):
        rows.append(("health check failed", keyring["error"] + " (the keyring above is from the check before)"))
    return rows

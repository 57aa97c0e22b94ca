"""``certfleet system support regenerate-security-keyring default``: the fix of F0853 ("default
Keyring's certificate is invalid, reason: expired"), as on the device, through the API.

    certfleet system support regenerate-security-keyring default --device FTD-000042
    certfleet system support regenerate-security-keyring default --all-expired --domain EMEA

``--device`` (an id, name or serial) regenerates one device's keyring and waits for its job;
``--all-expired`` regenerates every device of the domain and its subdomains whose keyring is
expired (an open F0853 alert, or a health check that found it invalid), followed as
``certfleet refresh`` follows a bulk action: a live progress bar, then a summary with the
failures by error code. Devices with a regeneration already under way are skipped and counted.
``--no-wait`` starts it and exits. Exit status as ``certfleet enroll`` (services.cli.errors).
"""

from __future__ import annotations

import argparse

from services.cli.connection import connect
from services.cli.enroll import add_follow_arguments, follow_to_end, report, summary
from services.cli.errors import CliError, Interrupted, UsageError
from services.cli.lookup import resolve_device, resolve_domain
from shared.domains import GLOBAL_DOMAIN_ID

KEYRING = "default"
#: How long --device waits for its job.
JOB_TIMEOUT_S = 120


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("keyring", metavar="KEYRING", help="the keyring to regenerate: default")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", metavar="DEVICE", help="one device, by id, name or serial")
    which.add_argument("--all-expired", action="store_true",
                       help="every device of the domain and its subdomains whose default keyring is expired")
    parser.add_argument("--domain", default=str(GLOBAL_DOMAIN_ID), metavar="DOMAIN",
                        help="domain by id or name (default Global)")
    add_follow_arguments(parser, what="the regeneration")


def main(args: argparse.Namespace) -> int:
    if args.keyring != KEYRING:
        raise UsageError("unknown_keyring", f"only the default keyring can be regenerated: "
                                            f"regenerate-security-keyring default, not {args.keyring!r}")
    with connect(args) as client:
        domain_id = resolve_domain(client, args.domain)
        if args.device:
            return _one(client, args, domain_id)
        return _all_expired(client, args, domain_id)


def _one(client, args: argparse.Namespace, domain_id: str) -> int:
    device = resolve_device(client, args.device, domain_id=domain_id)
    job = client.regenerate_keyring(device["id"], domain_id=domain_id)["job"]
    print(f"regeneration of the default keyring of {device['name']} started: job {job['id']}")
    if args.no_wait:
        return 0
    try:
        done = client.wait_for_job(job["id"], domain_id=domain_id, timeout=JOB_TIMEOUT_S)
    except KeyboardInterrupt:
        raise Interrupted("interrupted", f"stopped waiting; job {job['id']} goes on "
                                         f"(GET /api/v1/domains/{domain_id}/jobs/{job['id']})") from None
    if done["state"] == "failed":
        raise CliError(done["error_code"] or "job_failed", done["error_message"] or "the job failed")
    keyring = client.device(device["id"], domain_id=domain_id)["keyring"]
    until = f", valid until {keyring['not_after'].replace('T', ' ')[:16]} UTC" if keyring.get("not_after") else ""
    print(f"job {done['id']} succeeded: the default keyring of {device['name']} is "
          f"{'valid' if keyring.get('valid') else 'invalid'}{until}")
    return 0


def _all_expired(client, args: argparse.Namespace, domain_id: str) -> int:
    from rich.console import Console

    console = Console()
    batch = client.start_keyring_regeneration(all_expired=True, domain_id=domain_id)
    console.print(f"started keyring regeneration {batch['id']}: {batch['total']} devices with an expired default "
                  f"keyring ({batch['skipped']} skipped: a regeneration already under way)")
    if args.no_wait:
        return 0
    batch = follow_to_end(client, batch, domain_id=domain_id, console=console, interval=args.interval,
                          title="keyring regeneration", path="keyring-regenerations", label="regenerating",
                          fetch=client.keyring_regeneration)
    lines = summary(batch, object_name="the default keyring", title="keyring regeneration",
                    skipped_because="a regeneration already under way")
    return report(batch, lines, console=console, verb="regenerate their default keyring")

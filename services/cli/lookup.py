"""What a command-line argument names: a device by id, name or serial, a domain by id or name.
Every command resolves its DEVICE and --domain arguments here, so they all accept the same
forms and refuse an unknown or ambiguous one with the same error."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING

from services.cli.errors import ApiError, CliError

if TYPE_CHECKING:
    from services.cli.api_client import CertfleetClient

#: How many candidates an ambiguity error lists.
SHOWN = 5


def is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def device_candidates(client: CertfleetClient, ref: str, *, domain_id: str) -> list[dict]:
    """The devices of the domain (and its subdomains) ``ref`` can mean: the device with that
    id, else every device with that name or that serial."""
    if is_uuid(ref):
        try:
            return [client.device(ref, domain_id=domain_id)]
        except ApiError as exc:
            if exc.status == 404:
                return []
            raise
    found = {d["id"]: d for d in client.find_devices(domain_id=domain_id, name=ref)}
    found.update((d["id"], d) for d in client.find_devices(domain_id=domain_id, serial=ref))
    return list(found.values())


def choose(candidates_by_ref: dict[str, list[dict]], *, domain_id: str) -> list[dict]:
    """One device per reference, in order; CliError naming every reference that matches no
    device (``unknown_device``) or several (``ambiguous_device``, with their ids to choose from)."""
    ambiguous = {ref: found for ref, found in candidates_by_ref.items() if len(found) > 1}
    if ambiguous:
        parts = []
        for ref, found in ambiguous.items():
            ids = ", ".join(d["id"] for d in found[:SHOWN]) + (", …" if len(found) > SHOWN else "")
            parts.append(f"{ref!r} names {len(found)} devices ({ids})")
        raise CliError("ambiguous_device", "; ".join(parts) + "; give the device id instead")
    unknown = [ref for ref, found in candidates_by_ref.items() if not found]
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise CliError("unknown_device", f"no device with the id, name or serial {names} in domain {domain_id} "
                                         "or its subdomains")
    return [found[0] for found in candidates_by_ref.values()]


def resolve_devices(client: CertfleetClient, refs: Iterable[str], *, domain_id: str) -> list[dict]:
    """The devices the references (ids, names or serials) name, each once, in order."""
    chosen = choose({ref: device_candidates(client, ref, domain_id=domain_id) for ref in dict.fromkeys(refs)},
                    domain_id=domain_id)
    return list({d["id"]: d for d in chosen}.values())


def resolve_device(client: CertfleetClient, ref: str, *, domain_id: str) -> dict:
    return resolve_devices(client, [ref], domain_id=domain_id)[0]


def resolve_domain(client: CertfleetClient, ref: str) -> str:
    """The id of the domain ``ref`` names: an id as given, else the one domain with that name."""
    if is_uuid(ref):
        return ref
    domains = client.domains()
    matches = [d for d in domains if d["name"] == ref]
    if len(matches) == 1:
        return matches[0]["id"]
    known = ", ".join(sorted(d["name"] for d in domains))
    if matches:
        raise CliError("ambiguous_domain", f"{len(matches)} domains are named {ref!r}; give the domain's id "
                                           f"({', '.join(d['id'] for d in matches)})")
    raise CliError("unknown_domain", f"no domain named {ref!r}; give a domain's name or id (domains: {known})")

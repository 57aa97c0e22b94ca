"""Choosing the device a command-line reference names, once the candidates are known: one
each, or an error naming every unknown or ambiguous reference."""

from __future__ import annotations

import pytest

from services.cli.errors import CliError
from services.cli.lookup import choose, is_uuid

DOMAIN = "e276abec-e0f2-11e3-8169-6d9ed49b625f"
EDGE_1 = {"id": "11111111-1111-1111-1111-111111111111", "name": "edge", "serial": "FTD-1"}
EDGE_2 = {"id": "22222222-2222-2222-2222-222222222222", "name": "edge", "serial": "FTD-2"}
CORE = {"id": "33333333-3333-3333-3333-333333333333", "name": "core", "serial": "FTD-3"}


def test_one_candidate_per_reference_gives_the_devices_in_order():
    assert choose({"core": [CORE], "FTD-1": [EDGE_1]}, domain_id=DOMAIN) == [CORE, EDGE_1]


def test_an_ambiguous_reference_lists_the_ids_to_choose_from():
    with pytest.raises(CliError) as refused:
        choose({"edge": [EDGE_1, EDGE_2], "core": [CORE]}, domain_id=DOMAIN)
    assert refused.value.code == "ambiguous_device" and refused.value.exit_status == 1
    assert refused.value.message == (f"'edge' names 2 devices ({EDGE_1['id']}, {EDGE_2['id']}); "
                                     "give the device id instead")


def test_many_candidates_are_shortened():
    many = [{"id": f"id-{i}", "name": "edge"} for i in range(8)]
    with pytest.raises(CliError) as refused:
        choose({"edge": many}, domain_id=DOMAIN)
    assert "'edge' names 8 devices (id-0, id-1, id-2, id-3, id-4, …)" in refused.value.message


def test_every_unknown_reference_is_named_at_once():
    with pytest.raises(CliError) as refused:
        choose({"nowhere": [], "core": [CORE], "FTD-404": []}, domain_id=DOMAIN)
    assert refused.value.code == "unknown_device"
    assert refused.value.message == (f"no device with the id, name or serial 'nowhere', 'FTD-404' in domain {DOMAIN} "
                                     "or its subdomains")


def test_ids_are_told_from_names():
    assert is_uuid(EDGE_1["id"]) and is_uuid(EDGE_1["id"].replace("-", ""))
    assert not is_uuid("edge") and not is_uuid("FTD-000001")

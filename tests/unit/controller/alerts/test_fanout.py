"""Which webhooks an alert event goes to: those of its domain and every domain above it whose
filters let it through."""

from __future__ import annotations

import uuid

from services.controller.alerts.fanout import DomainTree, Subscriber, recipients

ROOT, EAST, LAB, WEST = (uuid.uuid4() for _ in range(4))
TREE = [(ROOT, None), (EAST, ROOT), (LAB, EAST), (WEST, ROOT)]


def hook(domain, codes=(), severities=()) -> Subscriber:
    return Subscriber(webhook_id=uuid.uuid4(), domain_id=domain, codes=frozenset(codes),
                      severities=frozenset(severities))


def test_an_event_goes_to_the_webhooks_of_its_domain_and_every_domain_above_it_that_want_it():
    tree = DomainTree(TREE)
    root, east, lab, west = hook(ROOT), hook(EAST), hook(LAB), hook(WEST)
    critical, revoked = hook(EAST, severities=["critical"]), hook(ROOT, codes=["CF-CERT-REVOKED"])
    everyone = [root, east, lab, west, critical, revoked]

    def to(domain, code="F0853", severity="major"):
        return set(recipients(everyone, tree, domain_id=domain, code=code, severity=severity))

    assert to(LAB) == {root.webhook_id, east.webhook_id, lab.webhook_id}
    assert to(WEST) == {root.webhook_id, west.webhook_id}
    assert to(EAST, severity="critical") == {root.webhook_id, east.webhook_id, critical.webhook_id}
    assert to(ROOT, code="CF-CERT-REVOKED") == {root.webhook_id, revoked.webhook_id}
    # An alert that outlived its domain still reaches the root's webhooks.
    assert to(uuid.uuid4()) == {root.webhook_id}



def test_a_cycle_in_bad_data_does_not_loop():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert DomainTree([(a, b), (b, a)]).holders(a) == {a, b}

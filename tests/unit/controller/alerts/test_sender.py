"""A webhook delivery's headers: what lets the receiver check it."""

from __future__ import annotations

import uuid

from services.controller.alerts.sender import Target, signed_headers
from shared import alerts


def test_a_delivery_s_headers_let_the_receiver_check_it_and_the_secret_stays_out_of_reprs():
    body = b'{"id":"e1"}'
    headers = signed_headers("a-webhook-secret-123", event_id="e1", body=body, timestamp=1_900_000_000)
    assert headers["Content-Type"] == "application/cloudevents+json"
    assert headers[alerts.EVENT_ID_HEADER] == "e1"
    assert alerts.verify("a-webhook-secret-123", timestamp=headers[alerts.TIMESTAMP_HEADER],
                         signature=headers[alerts.SIGNATURE_HEADER], body=body, now=1_900_000_010)
    assert not alerts.verify("another-secret-1234", timestamp=headers[alerts.TIMESTAMP_HEADER],
                             signature=headers[alerts.SIGNATURE_HEADER], body=body, now=1_900_000_010)
    assert "a-webhook-secret-123" not in repr(Target(uuid.uuid4(), "https://x.example/", "a-webhook-secret-123"))

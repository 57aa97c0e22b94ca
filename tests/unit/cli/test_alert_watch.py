"""How ``certfleet alerts watch`` shows an event to a person."""

from __future__ import annotations

from services.cli.alert_watch import describe


def test_watch_shows_an_event_in_one_line():
    event = {"time": "2030-01-01T12:00:00Z", "type": "io.certfleet.alert.cleared",
             "data": {"code": "CF-CA-UNREACHABLE", "severity": "major", "device_name": "", "trustpoint_name": "",
                      "resource": "https://ca.example.com:8443", "description": "CA unreachable: timed out"}}
    assert describe(event).split() == ["2030-01-01T12:00:00Z", "cleared", "CF-CA-UNREACHABLE", "major",
                                       "https://ca.example.com:8443", "CA", "unreachable:", "timed", "out"]

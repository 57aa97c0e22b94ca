"""The demo's own logic: how a mixed fleet is shared out between methods, and what its summary
shows, failures included."""

from __future__ import annotations

import pytest
from rich.console import Console

from services.cli.demo import show_summary, split_fleet
from services.cli.errors import CliError


def test_a_mixed_fleet_is_shared_out_a_third_each_every_device_once():
    ids = [f"d{i}" for i in range(10)]
    shares = split_fleet(ids, ["self-signed", "est", "scep"])
    assert [len(s) for s in shares.values()] == [4, 3, 3]
    assert sorted(sum(shares.values(), [])) == sorted(ids)


def test_a_method_without_devices_gets_no_enrollment():
    assert split_fleet(["d0", "d1"], ["self-signed", "est", "scep"]) == {"self-signed": ["d0"], "est": ["d1"]}


def finished(total: int, succeeded: int, *, elapsed: float, failures: list | None = None) -> dict:
    return {"total": total, "succeeded": succeeded, "failed": total - succeeded, "queued": 0, "running": 0,
            "finished": True, "eta_seconds": None, "elapsed_seconds": elapsed, "failures": failures or []}


def rows(text: str) -> dict[str, list[str]]:
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if line.startswith("│") and len(cells) == 7:
            table[cells[1]] = cells
    return table


def test_the_summary_has_a_row_per_method_and_a_total():
    console = Console(record=True, width=120)
    show_summary({"self-signed": {}, "est": {}}, [finished(10, 10, elapsed=2.0), finished(10, 10, elapsed=5.0)],
                 console=console)
    table = rows(console.export_text())
    assert table["self-signed"] == ["10", "self-signed", "10", "0", "0", "2.0 s", "5"]
    assert table["est"] == ["10", "est", "10", "0", "0", "5.0 s", "2"]
    assert table["all"] == ["20", "all", "20", "0", "0", "5.0 s", "4"]


def test_failed_devices_are_listed_by_code_and_the_demo_fails():
    console = Console(record=True, width=120)
    failures = [{"error_code": "ca_rejected", "count": 2, "example_message": "the CA refused: badRequest"}]
    with pytest.raises(CliError) as failed:
        show_summary({"scep": {}}, [finished(10, 8, elapsed=3.0, failures=failures)], console=console)
    assert failed.value.code == "devices_failed" and failed.value.exit_status == 1
    assert failed.value.message.startswith("2 of 10 devices failed to enroll")
    text = console.export_text()
    assert rows(text)["scep"][:5] == ["10", "scep", "8", "2", "0"]
    assert "failures by error code" in text and "the CA refused: badRequest" in text

"""What a newcomer runs: ``certfleet demo`` and ``certfleet up`` on the embedded default
(SQLite, in-process broker), as separate processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx

from tests.support.procs import ROOT, Proc, free_port, wait_http

EMBEDDED_ENV = {k: v for k, v in os.environ.items() if not k.startswith("CERTFLEET_")}


def demo_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table's rows by method: [devices, method, succeeded, failed, unfinished, …]."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ \n").split("│")]
        if line.startswith("│") and len(cells) >= 5:
            rows[cells[1]] = cells
    return rows


def test_demo_enrolls_its_fleet_and_prints_a_summary():
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--devices", "40"],
        cwd=ROOT, env={**EMBEDDED_ENV, "COLUMNS": "120"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "imported 40 devices" in done.stdout
    # Enrolled as an operator would: one bulk enrollment of every device.
    assert re.search(r"started bulk enrollment \S+: demo-self-signed on 40 devices", done.stdout), done.stdout
    assert demo_rows(done.stdout)["self-signed"][:5] == ["40", "self-signed", "40", "0", "0"], done.stdout


def test_demo_enrolls_a_mixed_fleet_a_third_per_method():
    # EST and SCEP each run here against the CA simulator, as in `--enrollment est` or `scep` alone.
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--devices", "30", "--enrollment", "mixed"],
        cwd=ROOT, env={**EMBEDDED_ENV, "COLUMNS": "120"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "CA simulator up: EST https://127.0.0.1:" in done.stdout and ", SCEP http://127.0.0.1:" in done.stdout
    rows = demo_rows(done.stdout)
    for method in ("self-signed", "est", "scep"):
        # One bulk enrollment per method, each on its own third of the fleet.
        assert re.search(rf"started bulk enrollment \S+: demo-{method} on 10 devices", done.stdout), done.stdout
        assert rows[method][:5] == ["10", method, "10", "0", "0"], done.stdout
    assert rows["all"][:5] == ["30", "all", "30", "0", "0"], done.stdout


def test_the_lifecycle_demo_shows_enrollment_bundle_keyrings_and_renewals_in_order():
    # 40 devices, certificates of 36 s (the last one due has 6 s or more to renew on a loaded
    # machine): a fifth of the keyrings expired, so a few devices raise F0853.
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "demo", "--lifecycle", "--devices", "40", "--lifetime", "36",
         "--expired-keyrings", "0.2"],
        cwd=ROOT, env={**EMBEDDED_ENV, "COLUMNS": "160"}, capture_output=True, text=True, timeout=150,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    milestones = [out.index(text) for text in (
        "fleet enrolled: 40 of 40 devices enrolled over EST", "CA bundle pushed: version 2 on 40 devices",
        "F0853 on ", "keyrings regenerated, every F0853 cleared", "renewals: 40 of 40 renewed on their own")]
    assert milestones == sorted(milestones), out
    raised = re.search(r"F0853 on (\d+) devices: default Keyring's certificate is invalid, reason: expired", out)
    assert 1 <= int(raised[1]) < 40
    rows = {cells[0]: cells for cells in (
        [c.strip() for c in line.strip("│ \n").split("│")] for line in out.splitlines() if line.startswith("│"))}
    assert [rows[step][-1] for step in ("enrollment", "CA bundle", "F0853 raised", "F0853 cleared", "renewal")] == [
        "yes"] * 5, out


def test_up_serves_the_api_and_writes_an_admin_token(tmp_path):
    port = free_port()
    up = Proc("up", ["up", "--devices", "5", "--port", str(port), "--state-dir", str(tmp_path / "state")],
              EMBEDDED_ENV, tmp_path)
    try:
        up.wait_for_line(r"admin token: \S+")
        wait_http(f"http://127.0.0.1:{port}/healthz")
        token = (tmp_path / "state" / "admin-token").read_text().strip()
        assert token in up.output()
        headers = {"Authorization": f"Bearer {token}"}
        domains = httpx.get(f"http://127.0.0.1:{port}/api/v1/domains", headers=headers).json()
        assert [d["name"] for d in domains["items"]] == ["Global"]
        devices = httpx.get(f"http://127.0.0.1:{port}/api/v1/domains/{domains['items'][0]['id']}/devices",
                            headers=headers).json()
        assert devices["total"] == 5
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/domains").status_code == 401
    finally:
        up.stop()

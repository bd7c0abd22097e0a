"""Issue: the main job in one command. The demo runs non-interactively, reports
every backend served and the DSR evidence, and the stop command leaves nothing."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from ryu_dsr.lab import Lab


def run_demo(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ryu_dsr.demo",
            "--rest-port",
            "18097",
            "--of-port",
            "16697",
            "--ovsdb-port",
            "16642",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def report_of(output: str) -> dict:
    line = next(line for line in output.splitlines() if line.startswith("REPORT "))
    return json.loads(line[len("REPORT ") :])


def test_demo_reports_dsr_then_stop_leaves_nothing():
    lab = Lab("dsrdemo")
    try:
        first = run_demo("--exit-after-report")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        report = report_of(first.stdout)
        assert report["failed"] == 0 and report["requests"] == 60
        assert set(report["by_backend"]) == {"b1", "b2", "b3"} and min(report["by_backend"].values()) > 0
        assert report["clients_seen_by_backends"] == ["10.0.0.1", "10.0.0.2"]
        assert report["reply_source_ip"] == "10.0.0.100"
        assert report["reply_source_macs_are_backends"] == ["b1", "b2", "b3"]
        ipv6 = report["ipv6"]  # the dual-stack service's IPv6 VIP: the same pool
        assert ipv6["failed"] == 0 and ipv6["requests"] == 60 and min(ipv6["by_backend"].values()) > 0
        assert ipv6["clients_seen_by_backends"] == ["2001:db8::1", "2001:db8::2"]
        # the README's own calls, with the token the demo controller made
        assert re.search(
            r"curl -X POST -H \"Authorization: Bearer \$\(cut .*api-token\)\" http://127.0.0.1:18097/v1/vips",
            first.stdout,
        )
        assert "make demo-stop" in first.stdout
        # still up after the report: the user can try it
        assert lab.in_ns("dsrdemo-c2", "curl", "-s", "--max-time", "3", "http://10.0.0.100/").split()[1] == "10.0.0.2"

        # a second run over a running (or interrupted) one starts clean
        second = run_demo("--exit-after-report")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert report_of(second.stdout)["failed"] == 0
    finally:
        stop = run_demo("--stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "nothing left" in stop.stdout
    assert lab.leftovers() == []
    bridges = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    assert "dsrdemo" not in bridges

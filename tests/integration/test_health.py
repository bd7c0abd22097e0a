"""Issue: health checks and fast failover, on real Open vSwitch. A client sends
requests continuously while one backend's server is killed, then restarted;
a VIP-targeted check catches a backend that lost the VIP from its loopback."""

from __future__ import annotations

import time

from ryu_dsr.flows.pipeline import Table

from tests.integration.conftest import VIP, fabric_fixture, wait_for

fabric = fabric_fixture("dsrk", rest_port=18093, of_port=16693)


def backend(fabric, ip):
    return fabric.api("GET", f"/v1/pools/web/backends/{ip}")[1]["status"]


def test_a_killed_server_leaves_within_a_second_and_returns_after_restart(fabric):
    fabric.create_web(health_check={"kind": "http", "port": 80, "path": "/"})  # default interval, timeout, rise, fall
    wait_for(
        lambda: backend(fabric, "10.0.0.12")["health"]["last_result"].startswith("ok: GET / on 10.0.0.12:80"),
        what="a passing HTTP check",
    )
    client = fabric.lab.spawn_client(
        "c1",
        f"http://{VIP}/",
        "--count",
        "200",
        "--interval",
        "0.02",
        "--timeout",
        "1",
        "--timeline",
        log="health-client.json",
    )
    time.sleep(1.0)
    fabric.lab.stop(fabric.servers["b12"])
    killed_at = time.time()  # relative to the client's clock below
    status = wait_for(
        lambda: (s := backend(fabric, "10.0.0.12"))["state"] == "unhealthy" and s,
        timeout=5,
        interval=0.02,
        what="b12 unhealthy",
    )
    detected = time.time() - killed_at
    print(f"killed server taken out {detected * 1000:.0f} ms after the kill ({status['reason']})")
    assert detected < 1.0
    assert "refused" in status["reason"] and status["slots"] == 0
    assert client.wait(60) == 0
    report = fabric.lab.client_report("health-client.json")
    failed = [t for t, b in report["timeline"] if b is None]
    print(f"{len(failed)} of {len(report['timeline'])} requests failed, all within the detection window")
    # failures only while the dead backend was still in the table: one window
    # no longer than the detection time, and nothing went to it after that
    assert failed and max(failed) - min(failed) <= detected + 0.3
    after = [b for t, b in report["timeline"] if t > max(failed)]
    assert len(after) > 50 and None not in after and "b12" not in after

    fabric.servers["b12"] = fabric.lab.serve_http("b12")
    wait_for(lambda: backend(fabric, "10.0.0.12")["state"] == "up", timeout=5, what="b12 healthy again")
    b12_mac = fabric.mac_of("b12")
    wait_for(
        lambda: b12_mac in fabric.lab.ofctl("dump-flows", fabric.lab.bridge, f"table={int(Table.SLOTS)}"),
        what="b12 slots",
    )
    again = fabric.lab.requests("c1", f"http://{VIP}/", 60)
    assert again["failed"] == 0 and set(again["by_backend"]) == {"b11", "b12", "b13"}


def test_a_vip_check_catches_a_backend_that_lost_the_vip(fabric):
    assert (
        fabric.api("PATCH", "/v1/pools/web", {"health_check": {"kind": "tcp", "port": 80, "target": "vip"}})[0] == 200
    )
    wait_for(
        lambda: backend(fabric, "10.0.0.13")["health"]["last_result"].startswith(f"ok: {VIP}:80 accepted"),
        what="a passing VIP check",
    )
    fabric.lab.run("b13", "ip", "addr", "del", f"{VIP}/32", "dev", "lo")
    status = wait_for(
        lambda: (s := backend(fabric, "10.0.0.13"))["state"] == "unhealthy" and s, timeout=5, what="b13 unhealthy"
    )
    assert "no answer" in status["reason"] or "refused" in status["reason"]
    report = fabric.lab.requests("c1", f"http://{VIP}/", 60)
    assert report["failed"] == 0 and "b13" not in report["by_backend"]
    fabric.lab.run("b13", "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
    wait_for(lambda: backend(fabric, "10.0.0.13")["state"] == "up", timeout=5, what="b13 back")


def test_a_check_every_backend_fails_fails_open_and_the_vip_keeps_serving(fabric):
    """A wrong check (TCP to port 81, where nothing listens) fails every
    backend: the pool fails open and the VIP keeps serving on all three.
    With ``fail_open: false`` the same check takes the pool down; the right
    check brings it back."""

    def pool():
        return fabric.api("GET", "/v1/pools/web")[1]

    check = {"kind": "tcp", "port": 81, "target": "backend"}
    assert fabric.api("PATCH", "/v1/pools/web", {"health_check": check})[0] == 200
    wait_for(lambda: pool()["failing_open"] and pool()["handover"]["holding"] == 0, timeout=10, what="failing open")
    assert {b["status"]["state"] for b in pool()["backends"]} == {"unhealthy"}
    assert all("refused" in b["status"]["reason"] and b["status"]["slots"] > 0 for b in pool()["backends"])
    report = fabric.lab.requests("c1", f"http://{VIP}/", 60)
    assert report["failed"] == 0 and set(report["by_backend"]) == {"b11", "b12", "b13"}, report

    assert fabric.api("PATCH", "/v1/pools/web", {"health_check": {"fail_open": False}})[0] == 200
    assert not pool()["failing_open"] and {b["status"]["slots"] for b in pool()["backends"]} == {0}
    report = fabric.lab.requests("c1", f"http://{VIP}/", 3, "--timeout", "0.5")
    assert report["failed"] == 3, report

    assert fabric.api("PATCH", "/v1/pools/web", {"health_check": {"port": 80, "fail_open": True}})[0] == 200
    wait_for(lambda: {b["status"]["state"] for b in pool()["backends"]} == {"up"}, timeout=10, what="all up")
    assert not pool()["failing_open"]


def test_a_backend_back_from_failure_ramps_over_slow_start(fabric):
    """Issue 30 (slow start): a backend whose server comes back takes a small
    share of new connections at first and its full share once the pool's
    ``slow_start`` has passed; no request fails meanwhile."""
    lab = fabric.lab
    for ip in ("10.0.0.11", "10.0.0.12", "10.0.0.13"):  # every backend serving, after the tests before
        fabric.api("PATCH", f"/v1/pools/web/backends/{ip}", {"weight": 100})
    assert (
        fabric.api("PATCH", "/v1/pools/web", {"health_check": {"kind": "tcp", "port": 80}, "slow_start": 16})[0] == 200
    )
    for name in ("b11", "b12", "b13"):
        if fabric.servers[name].poll() is not None:
            fabric.servers[name] = lab.serve_http(name)
    fabric.wait_backends_up(count=3, timeout=20)
    lab.stop(fabric.servers["b13"])
    wait_for(lambda: backend(fabric, "10.0.0.13")["state"] == "unhealthy", 10, what="b13 out")
    fabric.servers["b13"] = lab.serve_http("b13")
    wait_for(lambda: backend(fabric, "10.0.0.13")["state"] == "up", 10, what="b13 back")
    assert backend(fabric, "10.0.0.13")["effective_reason"].startswith("slow start: 1/8")
    early = lab.requests("c1", f"http://{VIP}/", 90)
    wait_for(lambda: backend(fabric, "10.0.0.13")["effective_reason"] is None, 40, 0.5, what="the slow start over")
    time.sleep(1.0)
    late = lab.requests("c1", f"http://{VIP}/", 90)
    assert early["failed"] == late["failed"] == 0
    share = lambda report: report["by_backend"].get("b13", 0) / 90  # noqa: E731
    assert share(early) < 0.15 and share(late) > 0.2, (early["by_backend"], late["by_backend"])

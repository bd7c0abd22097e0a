"""Issue: consistent hashing in the switch; no established connection broken
by a pool change. Long-lived TCP connections through real Open vSwitch while
a backend is added, weights change and a backend is drained."""

from __future__ import annotations

import time

from ryu_dsr.lab import wait_no_hold
from tests.integration.conftest import VIP, fabric_fixture, wait_for

STREAMS = 24


# counters polled every second; pins of closed connections go 2 s after FIN
fabric = fabric_fixture("dsrh", rest_port=18091, of_port=16691, settings={"stats_interval": 1, "pin_fin_timeout": 2})


def test_long_lived_connections_survive_add_reweight_and_drain(fabric):
    fabric.create_web(backends=(11, 12))
    streams = fabric.lab.spawn_client(
        "c1",
        f"http://{VIP}/",
        "--streams",
        str(STREAMS),
        "--lines",
        "70",
        "--ms",
        "100",
        "--timeout",
        "5",
        log="streams.json",
    )
    time.sleep(1.0)  # every connection is established and transferring
    assert fabric.api("POST", "/v1/pools/web/backends", {"ip": "10.0.0.13"})[0] == 201
    wait_for(lambda: fabric.api("GET", "/v1/pools/web/backends/10.0.0.13")[1]["status"]["state"] == "up", what="b13 up")
    time.sleep(1.0)
    assert fabric.api("PATCH", "/v1/pools/web/backends/10.0.0.11", {"weight": 300})[0] == 200
    time.sleep(1.0)
    assert fabric.api("PATCH", "/v1/pools/web/backends/10.0.0.12", {"weight": 0})[0] == 200

    def pinned(ip: str) -> int:
        return fabric.api("GET", f"/v1/pools/web/backends/{ip}")[1]["status"]["pinned_connections"]

    # the drained backend's open connections are pinned, and counted at the next polls
    held = wait_for(lambda: pinned("10.0.0.12"), 5, 0.3, "the drained backend's connections counted")
    assert streams.wait(60) == 0
    report = fabric.lab.client_report("streams.json")
    broken = [r for r in report["results"] if not r["intact"]]
    assert report["intact"] == STREAMS, broken
    assert set(report["by_backend"]) == {"b11", "b12"}  # they started before b13 existed
    assert 0 < held <= report["by_backend"]["b12"]
    # its connections ended: the count falls to zero (pins go 2 s after FIN)
    wait_for(lambda: pinned("10.0.0.12") == 0, 10, 0.5, "the drained backend's count at zero")

    # the table moved: new connections follow it, and the drained backend gets none
    _, pool = fabric.api("GET", "/v1/pools/web")
    slots = {b["ip"]: b["status"]["slots"] for b in pool["backends"]}
    assert pool["slots"] == 256  # 64 per backend: grown from 128 when b13 came, moving no connection
    assert slots["10.0.0.12"] == 0 and slots["10.0.0.11"] == 192 and slots["10.0.0.13"] == 64
    # new connections of the moved slots follow them once their 2 s hold is over
    wait_no_hold(fabric.base)
    wait_for(lambda: all(sw["in_line"] for sw in fabric.api("GET", "/v1/switches")[1]), what="rules rewritten")
    # Open vSwitch applies a flow change to its datapath flows by revalidating
    # them, after the change itself: a moment more before the new connections.
    time.sleep(1.0)
    after = fabric.lab.requests("c1", f"http://{VIP}/", 120)
    assert after["failed"] == 0
    assert "b12" not in after["by_backend"]
    assert after["by_backend"]["b11"] > after["by_backend"]["b13"] > 10

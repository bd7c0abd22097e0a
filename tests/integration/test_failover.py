"""Issue (health and failover), the part done: a backend whose switch port
goes down leaves the hash at once, without waiting for probes, and comes
back when the link does."""

from __future__ import annotations

import time

from ryu_dsr.flows.pipeline import Table

from ryu_dsr.lab import parse_stamp
from tests.integration.conftest import VIP, fabric_fixture, wait_for

fabric = fabric_fixture("dsrl", rest_port=18092, of_port=16692)


def test_link_down_takes_a_backend_out_at_once_and_link_up_brings_it_back(fabric):
    fabric.create_web()
    client = fabric.lab.spawn_client(
        "c1",
        f"http://{VIP}/",
        "--count",
        "150",
        "--interval",
        "0.02",
        "--timeout",
        "1",
        "--timeline",
        log="failover.json",
    )
    time.sleep(1.0)
    cut = time.time()
    fabric.lab.set_link("b12", up=False)

    def b12_down():
        status = fabric.api("GET", "/v1/pools/web/backends/10.0.0.12")[1]["status"]
        return status if status["state"] == "down" else None

    status = wait_for(b12_down, timeout=5, interval=0.01, what="b12 down")
    handled = parse_stamp(status["since"]) - cut
    print(f"link down handled by the controller {handled * 1000:.0f} ms after the cut")
    assert handled < 1.0
    assert f"port {fabric.lab.hosts['b12'].ofport} is down" in status["reason"] and status["slots"] == 0
    assert client.wait(60) == 0
    report = fabric.lab.client_report("failover.json")
    assert report["ok"] > 100
    # requests failed only in the moment of the cut, none after the table changed
    assert report["failed"] <= 3, report["errors"]
    late = [t for t, b in report["timeline"] if b is None]
    assert all(abs(t - late[0]) < 2.0 for t in late)

    fabric.lab.set_link("b12", up=True)

    def b12_back():
        status = fabric.api("GET", "/v1/pools/web/backends/10.0.0.12")[1]["status"]
        return status["state"] == "up" and status["slots"] > 60  # a third of 256

    wait_for(b12_back, timeout=10, what="b12 back up with its share of slots")
    b12_mac = fabric.mac_of("b12")
    wait_for(
        lambda: b12_mac in fabric.lab.ofctl("dump-flows", fabric.lab.bridge, f"table={int(Table.SLOTS)}"),
        timeout=10,
        what="b12's slot rules on the switch",
    )
    again = fabric.lab.requests("c1", f"http://{VIP}/", 60)
    assert again["failed"] == 0 and set(again["by_backend"]) == {"b11", "b12", "b13"}

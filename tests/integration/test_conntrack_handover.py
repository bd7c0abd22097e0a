"""handover_tracking = conntrack on real Open vSwitch: during a handover
window, new connections of moved slots are labelled by the connection
tracker (no pin, no slow-path work each), connections older than the move
stay on their backend, and both kinds survive longer than the tracker's
default 30 s for a connection it sees one way only (the zone's timeout
policy, which the operator sets, is what keeps them)."""

from __future__ import annotations

import time

from ryu_dsr.flows.pipeline import Table

from ryu_dsr.lab import wait_no_hold
from tests.integration.conftest import VIP, fabric_fixture, wait_for

ZONE = 1493
STREAMS = 16
fabric = fabric_fixture(
    "dsrt",
    rest_port=18104,
    of_port=16704,
    settings={"handover_tracking": "conntrack", "conntrack_zone": ZONE, "handover_window": 300},
)


def stream(fabric, log: str, seconds: int):
    """STREAMS long-lived connections to the VIP, a line a second."""
    return fabric.lab.spawn_client(
        "c1",
        f"http://{VIP}/",
        "--streams",
        str(STREAMS),
        "--lines",
        str(seconds),
        "--ms",
        "1000",
        "--timeout",
        "5",
        log=log,
    )


def test_connections_opened_in_the_window_follow_their_label_and_older_ones_their_pin(fabric):
    lab = fabric.lab
    lab.conntrack_timeouts(ZONE, 600)
    fabric.create_web(backends=(11, 12))
    older = stream(fabric, "older.json", 45)  # open before the move
    time.sleep(2.0)
    assert fabric.api("POST", "/v1/pools/web/backends", {"ip": "10.0.0.13"})[0] == 201
    wait_for(lambda: fabric.api("GET", "/v1/pools/web/backends/10.0.0.13")[1]["status"]["state"] == "up", what="b13")
    wait_no_hold(fabric.base)  # the hold's end is processed; its rules are on their way to the switch
    wait_for(lambda: "ct(" in lab.ofctl("dump-flows", lab.bridge, f"table={int(Table.SLOTS)}"), 5, what="ct rules")
    newer = stream(fabric, "newer.json", 40)  # opened in the window: labelled
    short = lab.requests("c1", f"http://{VIP}/", 300)  # new short connections in the window
    assert short["failed"] == 0 and short["by_backend"].get("b13", 0) > 30, short
    assert older.wait(90) == 0 and newer.wait(90) == 0

    kept = lab.client_report("older.json")
    assert kept["intact"] == STREAMS, kept
    opened = lab.client_report("newer.json")
    assert opened["intact"] == STREAMS and opened["by_backend"].get("b13", 0) > 0, opened
    # Only connections older than the move were pinned (one each at most):
    # none of the 300 short ones and 16 streams opened in the window.
    assert 0 < len(lab.pin_flows()) <= STREAMS, lab.pin_flows()
    tracked = lab.ovs("ovs-appctl", "dpctl/dump-conntrack", f"zone={ZONE}")
    assert tracked.count(f"zone={ZONE}") >= short["by_backend"]["b13"], tracked[:500]

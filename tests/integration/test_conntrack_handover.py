"""Handovers at full speed on real Open vSwitch, with the default
``handover_tracking = auto``: the controller gives the zone its timeout
policy over the switch's OVSDB and uses the connection tracker. A new
service whose backends are found after its VIP never enters a handover
(no pin, no handover rule); a backend added under load: connections older
than the move keep their backend (pinned, one each), connections opened in
the window are labelled (no pin, no slow-path work each) and outlive the
tracker's default 30 s for a connection it sees one way only (the policy
keeps them), and the window closes soon after what it kept went quiet,
not after the fixed ``handover_window``."""

from __future__ import annotations

import time

from ryu_dsr.flows.pipeline import Table

from tests.integration.conftest import VIP, fabric_fixture, wait_for

ZONE = 1493
STREAMS = 16
QUIET = 3
fabric = fabric_fixture(
    "dsrt",
    rest_port=18104,
    of_port=16704,
    ovsdb_port=16640,
    settings={"conntrack_zone": ZONE, "handover_window": 300, "handover_quiet": QUIET},
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


def handover_rules(lab) -> list[str]:
    slots = lab.ofctl("dump-flows", lab.bridge, f"table={int(Table.SLOTS)}").splitlines()
    tracked = lab.ofctl("dump-flows", lab.bridge, f"table={int(Table.TRACKED)}").splitlines()
    return [f for f in slots if "ct(" in f or "learn(" in f] + [f for f in tracked if "priority=" in f]


def test_the_controller_sets_the_zone_and_a_new_service_never_enters_a_window(fabric):
    lab = fabric.lab
    # the controller gave the zone its timeout policy over OVSDB (zone, policy, datapath rows)
    wait_for(lambda: lab.zone_timeouts(ZONE), 10, what="the zone's timeout policy")
    assert lab.zone_timeouts(ZONE)["tcp_syn_sent"] == 360  # handover_window + 60
    fabric.create_web(backends=(11, 12))  # the VIP first, its backends found one after the other
    pool = fabric.api("GET", "/v1/pools/web")[1]
    assert pool["handover"]["tracking"] == [
        {"dpid": 1, "method": "conntrack", "reason": pool["handover"]["tracking"][0]["reason"]}
    ]
    assert "timeout policy of 360 s" in pool["handover"]["tracking"][0]["reason"]
    assert pool["handover"]["slots"] == 0 and handover_rules(lab) == [] and lab.pin_flows() == []
    time.sleep(3)
    run = lab.ab(VIP, 3000, 20)  # new connections right after the service is made
    print(f"\nnew service: {run['per_second']:.0f} new connections a second through the VIP (bench/cps.py measures)")
    assert run["failed"] == 0 and run["done"] == 3000
    assert lab.pin_flows() == [] and handover_rules(lab) == []


def test_a_backend_added_under_load_keeps_older_connections_labels_newer_ones_and_closes_its_window(fabric):
    lab = fabric.lab
    older = stream(fabric, "older.json", 30)  # open before the move
    time.sleep(2.0)
    assert fabric.api("POST", "/v1/pools/web/backends", {"ip": "10.0.0.13"})[0] == 201
    wait_for(lambda: fabric.api("GET", "/v1/pools/web/backends/10.0.0.13")[1]["status"]["state"] == "up", what="b13")
    wait_for(lambda: any("ct(" in f for f in handover_rules(lab)), 5, what="ct rules")
    handover = fabric.api("GET", "/v1/pools/web")[1]["handover"]
    assert handover["slots"] > 0 and handover["holding"] == 0  # the tracker needs no hold
    newer = stream(fabric, "newer.json", 40)  # opened in the window: labelled
    short = lab.requests("c1", f"http://{VIP}/", 300)  # new short connections in the window
    assert short["failed"] == 0 and short["by_backend"].get("b13", 0) > 30, short
    assert older.wait(90) == 0
    ended = time.time()  # the last of the older connections ended

    kept = lab.client_report("older.json")
    assert kept["intact"] == STREAMS, kept
    # Only connections older than the move were pinned (one each at most):
    # none of the 300 short ones and 16 streams opened in the window.
    assert 0 < len(lab.pin_flows()) <= STREAMS, lab.pin_flows()
    tracked = lab.ovs("ovs-appctl", "dpctl/dump-conntrack", f"zone={ZONE}")
    assert tracked.count(f"zone={ZONE}") >= short["by_backend"]["b13"], tracked[:500]
    # What the window kept went quiet: it closes within seconds, not at handover_window (300 s)
    wait_for(lambda: fabric.api("GET", "/v1/pools/web")[1]["handover"]["slots"] == 0, 10, what="the window closed")
    closed = time.time()
    print(f"\nthe window closed {closed - ended:.1f} s after the last older connection ended")
    assert closed - ended < 10
    assert newer.wait(90) == 0
    opened = lab.client_report("newer.json")  # labelled in the window, whole after it: 40 s, past 30 s
    assert opened["intact"] == STREAMS and opened["by_backend"].get("b13", 0) > 0, opened

"""Faults survived: Open vSwitch's daemon killed and restarted (its flows
are gone) is reprogrammed on reconnect, and long-lived connections live
through it."""

from __future__ import annotations

import time

from tests.integration.conftest import VIP, fabric_fixture, wait_for

# Short handover windows: the test starts from the steady state (connections
# opened in a window to a slot's new backend live by a pin, which a switch
# that loses its flows loses too).
fabric = fabric_fixture(
    "dsrk", rest_port=18099, of_port=16699, settings={"handover_window": 3, "udp_handover_window": 1}
)


def test_a_restarted_vswitchd_is_reprogrammed_and_long_lived_connections_survive(fabric):
    lab = fabric.lab
    fabric.create_web()
    wait_for(lambda: fabric.api("GET", "/v1/pools/web")[1]["handover"]["slots"] == 0, 15, what="the steady state")
    streams = lab.spawn_client(
        "c1", f"http://{VIP}/", "--streams", "10", "--lines", "120", "--ms", "100", "--timeout", "30", log="s.json"
    )
    time.sleep(2)
    lab.kill_vswitchd()
    time.sleep(1)
    restarted = time.time()
    lab.start_vswitchd()
    wait_for(lambda: lab.requests("c1", f"http://{VIP}/", 1, "--timeout", "0.5")["ok"] == 1, 20, 0.2, "the VIP")
    answered_after = time.time() - restarted
    assert streams.wait(60) == 0
    report = lab.client_report("s.json")
    assert report["intact"] == 10, report  # same slot table, same hash: every connection kept its backend
    assert lab.requests("c1", f"http://{VIP}/", 30)["failed"] == 0
    switch = fabric.api("GET", "/v1/switches")[1][0]
    assert switch["in_line"] and switch["errors"] == 0, switch
    assert "0 flows found" in fabric.log()  # it came back empty and was written whole
    print(f"VIP answered {answered_after:.1f} s after ovs-vswitchd restarted")
    assert answered_after < 10

"""OpenFlow over TLS (certificates from ovs-pki) carries the VIP, a switch
that reconnects is taken again, and only the switches the operator names
in ``dsr.switches`` are taken at all."""

from __future__ import annotations

from tests.integration.conftest import VIP, fabric_fixture, wait_for

fabric = fabric_fixture("dsrt", rest_port=18098, of_port=16698, tls=True)


def connected(fabric) -> bool:
    return fabric.lab.vsctl("get", "controller", fabric.lab.bridge, "is_connected").strip() == "true"


def test_openflow_over_tls_carries_the_vip_and_a_switch_that_reconnects_fails_no_request(fabric):
    """The controller stops answering (SIGSTOP) until the switch drops the
    connection (inactivity probe, 5 s); the switch keeps its flows and the
    clients their service; it reconnects over TLS (Ryu 4.34 alone wraps
    only the first connection with its certificate) and is taken again,
    with no backend failed for probes it could not send."""
    import signal
    import time

    lab = fabric.lab
    assert lab.vsctl("get-controller", lab.bridge).strip() == f"ssl:127.0.0.1:{fabric.of_port}"
    fabric.create_web()
    assert lab.requests("c1", f"http://{VIP}/", 20)["failed"] == 0
    client = lab.spawn_client("c1", f"http://{VIP}/", "--count", "400", "--interval", "0.05", log="tls-client.log")
    fabric.controller.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: not connected(fabric), 20, interval=0.5, what="the switch to drop the stopped controller")
    finally:
        fabric.controller.send_signal(signal.SIGCONT)
    wait_for(lambda: connected(fabric), 15, what="the switch back over TLS")
    time.sleep(1)
    assert fabric.api("PATCH", "/v1/pools/web/backends/10.0.0.13", {"weight": 0})[0] == 200  # reaches the switch
    assert client.wait(60) == 0
    report = lab.client_report("tls-client.log")
    assert report["failed"] == 0 and report["ok"] == 400, report
    _, pool = fabric.api("GET", "/v1/pools/web")
    assert [b["status"]["state"] for b in pool["backends"]] == ["up", "up", "draining"]
    # a connection the switch opened while the controller was stopped may have failed its handshake; one after did not
    assert fabric.log().count("switch 0000000000000001 connected") >= 2
    assert fabric.api("PATCH", "/v1/pools/web/backends/10.0.0.13", {"weight": 1})[0] == 200


def test_a_switch_not_in_the_allowed_list_is_refused(fabric):
    lab = fabric.lab
    lab.stop(fabric.controller)
    fabric.settings["switches"] = "00000000000000ff"
    fabric.controller = fabric.start_controller_unwaited()
    wait_for(lambda: "switch 0000000000000001 refused: not in dsr.switches" in fabric.log(), 15, what="the refusal")
    assert fabric.api("GET", "/v1/switches")[1] == []  # it keeps reconnecting and is closed each time
    lab.stop(fabric.controller)  # named: taken
    fabric.settings["switches"] = "0000000000000001"
    fabric.controller = fabric.start_controller()
    wait_for(lambda: fabric.api("GET", "/v1/switches")[1], 10, what="the switch taken")
    assert lab.requests("c1", f"http://{VIP}/", 20)["failed"] == 0

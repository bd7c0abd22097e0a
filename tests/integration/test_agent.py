"""Issue: balance by load. Each backend runs the load agent
(tools/dsr_agent.py) and the pool has an agent check: through real Open
vSwitch, a backend whose agent reports 50% gets about half the new
connections of its peers, and one whose agent says ``drain`` gets none
while its established connections go on."""

from __future__ import annotations

import sys
import time

from ryu_dsr.lab import TOOLS, wait_no_hold
from tests.integration.conftest import BACKENDS, VIP, fabric_fixture, wait_for

fabric = fabric_fixture("dsrag", rest_port=18121, of_port=16721)
URL = f"http://{VIP}/"


def backend(fabric, ip: str) -> dict:
    return fabric.api("GET", f"/v1/pools/web/backends/{ip}")[1]["status"]


def test_agents_steer_new_connections_and_a_drain_keeps_established_ones(fabric):
    lab = fabric.lab
    said = {}
    for name in BACKENDS:
        said[name] = lab.run_dir / f"agent-{name}.txt"
        said[name].write_text("100%\n")
        lab.spawn(name, sys.executable, str(TOOLS / "dsr_agent.py"), "--file", str(said[name]), log=f"agent-{name}.log")
    pool = {
        "name": "web",
        "backends": [{"ip": f"10.0.0.{n}"} for n in BACKENDS.values()],
        "health_check": {"kind": "tcp", "port": 80},
        "agent_check": {"port": 7777, "interval": 0.5, "timeout": 0.4},
    }
    assert fabric.api("POST", "/v1/pools", pool)[0] == 201
    vip = {"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"}
    assert fabric.api("POST", "/v1/vips", vip)[0] == 201
    fabric.wait_backends_up(count=3)
    wait_for(lambda: backend(fabric, "10.0.0.11")["agent"]["said"] == "100%", 10, what="the agents heard")

    said["b11"].write_text("50%\n")
    wait_for(lambda: backend(fabric, "10.0.0.11")["effective_weight"] == 50, 10, what="b11 at half its weight")
    assert backend(fabric, "10.0.0.11")["effective_reason"] == "its agent reports 50% of its weight"
    wait_no_hold(fabric.base)
    report = lab.requests("c1", URL, 300)
    assert report["failed"] == 0
    shares = report["by_backend"]
    ratio = shares.get("b11", 0) / ((shares["b12"] + shares["b13"]) / 2)
    assert 0.3 < ratio < 0.7, shares

    said["b11"].write_text("up 100%\n")
    wait_for(lambda: backend(fabric, "10.0.0.11")["effective_weight"] == 100, 10, what="b11 at its weight again")
    wait_no_hold(fabric.base)
    streams = lab.spawn_client(
        "c1", URL, "--streams", "24", "--lines", "50", "--ms", "100", "--timeout", "5", log="agent-streams.json"
    )
    time.sleep(1.0)  # every stream established
    said["b11"].write_text("drain\n")
    wait_for(lambda: backend(fabric, "10.0.0.11")["state"] == "draining", 10, what="b11 draining")
    wait_no_hold(fabric.base)
    drained = lab.requests("c1", URL, 60)
    assert drained["failed"] == 0 and "b11" not in drained["by_backend"], drained
    assert streams.wait(60) == 0
    kept = lab.client_report("agent-streams.json")
    assert kept["intact"] == 24 and kept["by_backend"].get("b11", 0) > 0, kept  # b11's streams went on

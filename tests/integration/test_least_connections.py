"""Issue: balance by load. A pool's ``least_connections`` policy on real
Open vSwitch: a backend that holds each connection ten times as long as
its peers (its server waits three seconds before answering, theirs
0.3 s) shows it in what the switch counts (connections answered against those
closed: active ones, and new ones a second), so its effective weight falls
in bounded steps and it gets few new connections; once it answers as fast
as the others its weight climbs back to the configured one. Long-lived
connections stay intact across the moves.

The pool holds about a dozen connections at a time once all answer alike
(40 new a second, each held 0.3 s): a backend's count is then several
connections, where a count the switch got wrong by one (a connection it
saw answered and never closed) stays within the count's noise; at a
tenth of a second each backend held one or two, and one stale count read
as half again as slow, so the recovered backend could stay short of its
weight."""

from __future__ import annotations

import sys

from ryu_dsr.lab import TOOLS
from tests.integration.conftest import BACKENDS, VIP, fabric_fixture, wait_for

fabric = fabric_fixture("dsrlc", rest_port=18122, of_port=16722, settings={"stats_interval": 1})
URL = f"http://{VIP}/"
SLOW = "10.0.0.11"
MAX_MOVE = 0.2
HOLD_MS, SLOW_MS = 300, 3000  # what every answer waits: the pool's, and the slow backend's (ten times)


def status(fabric, ip: str) -> dict:
    return fabric.api("GET", f"/v1/pools/web/backends/{ip}")[1]["status"]


def open_loop(fabric, rate: int, seconds: float, log: str):
    """New connections at ``rate`` a second for ``seconds``, in the background."""
    return fabric.lab.spawn(
        "c1", sys.executable, str(TOOLS / "dsr_client.py"), URL, "--rate", str(rate), "--duration", str(seconds),
        "--timeout", "10", log=log,
    )  # fmt: skip


def steps(fabric) -> list[float]:
    """Each change of the pool's effective weights (the backends changed at
    one moment, from the pool's history): the part of the pool's effective
    weight it moved."""
    events = [
        e for e in fabric.api("GET", "/v1/pools/web/history")[1]["events"] if (e["from"] or "").startswith("weight ")
    ]
    weights = {b["ip"]: b["status"]["effective_weight"] for b in fabric.api("GET", "/v1/pools/web")[1]["backends"]}
    by_moment: dict[float, list[tuple[str, int, int]]] = {}
    for e in events:
        by_moment.setdefault(e["ago"], []).append((e["backend"], int(e["from"].split()[1]), int(e["to"].split()[1])))
    moved = []
    for ago in sorted(by_moment, reverse=True):  # newest first: replay the weights back
        changes = by_moment[ago]
        shifted = sum(abs(new - old) for _ip, old, new in changes)
        weights.update({ip: old for ip, old, _new in changes})
        moved.append(shifted / sum(weights.values()))
    return moved


def test_a_backend_that_holds_connections_longer_gets_fewer_new_ones_and_recovers(fabric):
    lab = fabric.lab
    hold = {}
    for name in BACKENDS:  # every answer waits: b11 three seconds, its peers 0.3 s
        hold[name] = lab.run_dir / f"hold-{name}.txt"
        hold[name].write_text(str(SLOW_MS if name == "b11" else HOLD_MS))
        fabric.servers[name].kill()
        fabric.servers[name].wait()
        fabric.servers[name] = lab.serve_http(name, hold_file=hold[name])
    fabric.create_web(health_check={"kind": "tcp", "port": 80, "interval": 1.0, "timeout": 0.9})
    # min_connections 2: when b11 answers fast again, the pool holds about 12 connections at a time
    policy = {
        "policy": "least_connections",
        "interval": 2,
        "max_move": MAX_MOVE,
        "hysteresis": 0.25,
        "min_connections": 2,
    }
    assert fabric.api("PATCH", "/v1/pools/web", {"adaptive": policy})[0] == 200
    streams = lab.spawn_client(
        "c1", URL, "--streams", "6", "--lines", "200", "--ms", "100", "--timeout", "5", log="lc-streams.json"
    )

    # b11 holds its connections ten times as long: its weight falls to what least connections gives it
    # (while the streams last, the rest of the pool holds them too, and b11 falls less far: wlc counts them)
    load = open_loop(fabric, 40, 35, "lc-load.json")
    wait_for(
        lambda: status(fabric, SLOW)["effective_weight"] <= 20,
        35,
        what=lambda: f"b11 down to 20 or less: {status(fabric, SLOW)}, its changes: {steps(fabric)}",
    )
    slowed = status(fabric, SLOW)
    assert slowed["effective_reason"].startswith("least connections: "), slowed
    assert "it holds a connection" in slowed["effective_reason"], slowed
    measured = open_loop(fabric, 20, 8, "lc-measured.json")
    assert measured.wait(30) == 0 and load.wait(40) == 0
    report, loaded = lab.client_report("lc-measured.json"), lab.client_report("lc-load.json")
    assert report["failed"] == 0 and loaded["failed"] == 0, (report, loaded)
    share = report["by_backend"].get("b11", 0) / report["ok"]
    assert share < 0.2, report  # static weights would give it a third
    assert streams.wait(60) == 0
    kept = lab.client_report("lc-streams.json")
    assert kept["intact"] == 6, kept

    # b11 answers as fast as its peers again: it climbs back to its configured weight
    hold["b11"].write_text(str(HOLD_MS))
    # (a tenth of its weight an interval: nine steps from the floor)
    recovering = open_loop(fabric, 40, 50, "lc-recovering.json")
    wait_for(
        lambda: status(fabric, SLOW)["effective_weight"] == 100,
        50,
        what=lambda: f"b11 back at its configured weight: {status(fabric, SLOW)}",
    )
    assert recovering.wait(60) == 0
    assert lab.client_report("lc-recovering.json")["failed"] == 0

    # no change moved more than max_move of the pool's weight
    moved = steps(fabric)
    assert len(moved) >= 4 and max(moved) <= MAX_MOVE + 0.02, moved

"""Issue: explain and show. Real connections through real Open vSwitch:
for each, the controller's trace names the backend that answered it, and
Open vSwitch's own ofproto/trace meets the same rules and outputs to the
same port (``dsrctl trace --check``); the status page, in a headless
browser, charts a drain as a falling share."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from html.parser import HTMLParser

from ryu_dsr.lab import browse, wait_no_hold
from tests.integration.conftest import BACKENDS, VIP, fabric_fixture

fabric = fabric_fixture("dsrtr", rest_port=18120, of_port=16720, settings={"stats_interval": 1})
URL = f"http://{VIP}/"


def trace(fabric, client_port: int, **extra) -> dict:
    c1 = fabric.lab.hosts["c1"]
    query = {"vip": "www", "client": c1.ip, "client_port": client_port, "client_mac": c1.mac, **extra}
    status, answer = fabric.api("GET", "/v1/trace?" + urllib.parse.urlencode(query))
    assert status == 200, answer
    return answer


def dsrctl_check(fabric, port: int, later: bool = False) -> tuple[int, dict | str]:
    c1 = fabric.lab.hosts["c1"]
    args = ["trace", "www", c1.ip, str(port), "--client-mac", c1.mac, "--check", *(["--later"] if later else [])]
    done = subprocess.run(
        [sys.executable, "-m", "ryu_dsr.ctl", "--api", fabric.base, "--json", *args],
        capture_output=True,
        text=True,
        env=fabric.lab.env,
        timeout=60,
    )
    return done.returncode, json.loads(done.stdout) if done.returncode == 0 else done.stderr


def served(fabric, count: int) -> list[tuple[int, str]]:
    report = fabric.lab.requests("c1", URL, count, "--ports")
    assert report["failed"] == 0, report
    return [(port, name) for port, name in report["ports"]]


def test_the_trace_names_the_backend_that_answered_each_connection(fabric):
    fabric.create_web()
    connections = served(fabric, 40)
    assert {name for _port, name in connections} == set(BACKENDS)
    for port, name in connections:
        answer = trace(fabric, port)
        assert answer["backend"] == f"10.0.0.{BACKENDS[name]}", (port, name, answer["verdict"])
        assert answer["hash"]["by"].startswith("the 5-tuple")
    # the switch's own trace agrees, rule by rule and port by port
    for port, _name in connections[:6]:
        code, checked = dsrctl_check(fabric, port)
        assert code == 0 and checked["check"]["faults"] == [], checked


def test_a_vip_hashed_by_client_address_is_traced_through_open_vswitchs_multipath(fabric):
    assert fabric.api("PATCH", "/v1/vips/www", {"hash": "source_ip"})[0] == 200
    connections = served(fabric, 10)
    [name] = {name for _port, name in connections}  # one client address: one backend
    answer = trace(fabric, connections[0][0])
    assert answer["backend"] == f"10.0.0.{BACKENDS[name]}"
    assert answer["hash"]["by"] == "the client's address (multipath nw_src)"
    code, checked = dsrctl_check(fabric, connections[0][0])
    assert code == 0 and checked["check"]["faults"] == [], checked


class Charts(HTMLParser):
    """The charts' SVG elements, by what they carry."""

    def __init__(self):
        super().__init__()
        self.shares, self.events, self.runs = {}, [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "path" and "data-shares" in attrs:
            self.shares[attrs["data-backend"]] = [float(v) for v in attrs["data-shares"].split(",") if v]
        elif tag == "line" and "data-event" in attrs:
            self.events.append(attrs["data-event"])
        elif tag == "rect" and "data-run" in attrs:
            self.runs.append(attrs["data-run"])


def chart_page(fabric) -> Charts:
    charts = Charts()
    charts.feed(browse(f"{fabric.base}/status?chart=web"))
    return charts


def test_the_status_page_charts_a_drain_as_a_falling_share(fabric):
    assert fabric.api("PATCH", "/v1/vips/www", {"hash": "5tuple"})[0] == 200
    for _ in range(3):  # three seconds of traffic over three backends
        served(fabric, 30)
        time.sleep(1.0)
    before = chart_page(fabric)
    assert set(before.shares) == {f"10.0.0.{n}" for n in BACKENDS.values()}
    assert sum(v > 0.1 for v in before.shares["10.0.0.12"]) >= 2, before.shares
    assert fabric.api("PATCH", "/v1/pools/web/backends/10.0.0.12", {"weight": 0})[0] == 200
    wait_no_hold(fabric.base)
    for _ in range(3):
        served(fabric, 30)
        time.sleep(1.0)
    after = chart_page(fabric)
    shares = after.shares["10.0.0.12"]
    assert max(shares[:-3]) > 0.1 and shares[-3:] == [0.0, 0.0, 0.0], shares  # it had a share; now none
    assert "10.0.0.12 up -> draining" in after.events
    assert after.runs and not any(run.startswith("10.0.0.12 ") for run in after.runs)  # it holds no slot


def test_connections_of_slots_in_a_handover_are_traced_as_the_switch_takes_them(fabric):
    """Right after the drain above, the slots that moved from 10.0.0.12 are
    in their window: a new connection goes to the slot's new backend, a
    later packet (an older connection's) to 10.0.0.12, each through the
    slot rule and the pool's rule of table MOVED, as Open vSwitch's own
    trace says rule by rule."""
    moved = []
    for port in range(41000, 41400):
        answer = trace(fabric, port)
        if answer["handover"]:
            moved.append((port, answer))
        if len(moved) == 3:
            break
    assert moved, "no slot in a handover"
    for port, answer in moved:
        assert answer["backend"] != "10.0.0.12"
        assert any(step["table"] == "MOVED" for step in answer["steps"]), answer["steps"]
        later = trace(fabric, port, packet="later")
        assert later["backend"] == "10.0.0.12", later["verdict"]
        for is_later in (False, True):
            code, checked = dsrctl_check(fabric, port, later=is_later)
            assert code == 0 and checked["check"]["faults"] == [], checked


def test_a_drained_backend_and_a_port_no_vip_serves_are_explained_and_agree_with_the_switch(fabric):
    connections = served(fabric, 20)
    assert "b12" not in {name for _port, name in connections}
    answer = trace(fabric, connections[0][0])
    assert any(words.startswith("10.0.0.12 is draining") for words in answer["why"])
    dropped = trace(fabric, 40000, port=81)
    assert dropped["backend"] is None and "no VIP serves" in dropped["verdict"]
    # a rule the switch lost is a fault the check reports
    lab = fabric.lab
    cookie = next(step["cookie"] for step in answer["steps"] if step["table"] == "SLOTS")
    lab.ofctl("del-flows", lab.bridge, f"table=2,cookie={cookie}/-1")
    code, said = dsrctl_check(fabric, connections[0][0])
    assert code == 1 and "FAULT: switch 0x1: the controller expects rules" in said, said

"""Port translation on real Open vSwitch: the backends listen on another
port than the VIP's. The switch rewrites the request's destination port and
the reply's source port (the reply crosses the switch at the backend's
edge), so clients that check where answers come from (TCP always; a
connected UDP socket) are served through the VIP's port alone."""

from __future__ import annotations

import json
import sys

from ryu_dsr.lab import TOOLS, wait_no_hold
from tests.integration.conftest import VIP, fabric_fixture

fabric = fabric_fixture("dsrp", rest_port=18103, of_port=16703)


def test_http_on_the_vips_port_reaches_backends_listening_on_another(fabric):
    lab = fabric.lab
    for name in ("b11", "b12", "b13"):
        fabric.servers[f"{name}-8080"] = lab.serve_http(name, 8080)
    fabric.create_web()
    alt = {"name": "alt", "ip": VIP, "protocol": "tcp", "port": 81, "pool": "web", "hash": "5tuple"}
    assert fabric.api("POST", "/v1/vips", alt)[0] == 201
    refused = lab.requests("c1", f"http://{VIP}:81/", 3, "--timeout", "1")
    assert refused["failed"] == 3, refused  # nobody listens on 81

    status, vip = fabric.api("PATCH", "/v1/vips/alt", {"backend_port": 8080})
    assert status == 200 and vip["backend_port"] == 8080
    report = lab.requests("c1", f"http://{VIP}:81/", 60)
    assert report["failed"] == 0 and set(report["by_backend"]) == {"b11", "b12", "b13"}, report
    # The untranslated VIP beside it is served as before.
    plain = lab.requests("c1", f"http://{VIP}/", 30)
    assert plain["failed"] == 0 and len(plain["by_backend"]) == 3, plain

    status, error = fabric.api("POST", "/v1/vips", alt | {"name": "clash", "port": 8080, "backend_port": None})
    assert status == 409 and "could not be told apart" in error["message"], error


def test_udp_answers_come_back_from_the_vips_port(fabric):
    lab = fabric.lab
    for name in ("b11", "b12", "b13"):
        fabric.servers[f"{name}-udp"] = lab.serve_udp(name, 5300, [VIP, lab.hosts[name].ip])
    dns = {"name": "dns", "ip": VIP, "protocol": "udp", "port": 53, "backend_port": 5300, "pool": "web"}
    assert fabric.api("POST", "/v1/vips", dns | {"hash": "5tuple"})[0] == 201
    wait_no_hold(fabric.base)
    out = lab.run("c1", sys.executable, str(TOOLS / "udp_load.py"), VIP, "53", "--streams", "12", "--seconds", "2")
    flows = json.loads(out.strip().splitlines()[-1])
    # A connected UDP socket takes answers only from VIP:53: every one came back.
    assert flows["intact"] == 12 and all(s["lost"] == 0 for s in flows["streams"]), flows
    answered_by = {b for s in flows["streams"] for b in s["backends"]}
    assert len(answered_by) >= 2, flows

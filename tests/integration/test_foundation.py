"""Issue: `ryu-manager ryu_dsr` balances a VIP over a pool on one Open vSwitch,
managed over REST. Real OVS, namespaces, ryu-manager, HTTP servers."""

from __future__ import annotations

import re
import signal
import subprocess
import time

from ryu_dsr.lab import browse, program
from tests.integration.conftest import BACKENDS, VIP, fabric_fixture, wait_for

URL = f"http://{VIP}/"


fabric = fabric_fixture("dsrf", rest_port=18090, of_port=16690, settings={"stats_interval": 1})


def test_pool_by_ip_only_and_vip_over_rest(fabric):
    fabric.create_web(backends=tuple(BACKENDS.values()))
    _, pool = fabric.api("GET", "/v1/pools/web")
    found = {b["ip"]: (b["status"]["mac"], b["status"]["location"]["port"]) for b in pool["backends"]}
    expected = {h.ip: (h.mac, h.ofport) for n, h in fabric.lab.hosts.items() if n in BACKENDS}
    assert found == expected  # MAC and switch port found by ARP from the switch
    # and Prometheus sees the same through ryu-manager's web server
    import urllib.request

    with urllib.request.urlopen(f"{fabric.base}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    assert 'ryu_dsr_switch_connected{switch="0000000000000001"} 1.0' in text
    for ip in expected:
        assert f'ryu_dsr_backend_state{{backend="{ip}",pool="web",state="up"}} 1.0' in text


def test_requests_reach_every_backend_and_replies_come_straight_from_it(fabric):
    capture = fabric.lab.spawn(
        "c1", "tcpdump", "-l", "-e", "-n", "-i", "eth0", f"tcp and src host {VIP}", log="c1-tcpdump.log"
    )
    time.sleep(1.0)
    report = fabric.lab.requests("c1", URL, 60)
    time.sleep(0.5)
    fabric.lab.stop(capture, signal.SIGINT)
    assert report["failed"] == 0
    assert set(report["by_backend"]) == set(BACKENDS)
    # each backend saw the client's real address, not a balancer's
    assert report["clients_seen"] == {"10.0.0.1": 60}
    lines = (fabric.lab.run_dir / "c1-tcpdump.log").read_text().splitlines()
    replies = [line for line in lines if f"{VIP}.80 > 10.0.0.1." in line]
    assert len(replies) >= 60
    source_macs = {line.split()[1] for line in replies}
    backend_macs = {fabric.mac_of(n) for n in BACKENDS}
    # from the VIP's address, from the backends' own MACs: no balancer on the way back
    assert source_macs == backend_macs


def test_a_large_change_goes_to_the_switch_as_bundles_and_the_vip_keeps_serving(fabric):
    """Issue 28: a PUT of 400 more VIPs is written in steps, each a bundle
    Open vSwitch applies at once; the switch then holds exactly the flows
    the controller keeps for it, and the web VIP serves on throughout."""
    _, before = fabric.api("GET", "/v1/switches")
    _, document = fabric.api("GET", "/v1/config")
    extra = [
        {"name": f"bulk{i}", "ip": f"10.9.{i // 200}.{i % 200 + 1}", "protocol": "tcp", "port": 80, "pool": "web"}
        for i in range(400)
    ]
    status, answer = fabric.api("PUT", "/v1/config", {**document, "vips": document["vips"] + extra})
    assert status == 200, answer
    _, after = fabric.api("GET", "/v1/switches")
    assert after[0]["in_line"] and after[0]["bundles"] > before[0]["bundles"]
    flows = [line for line in fabric.lab.ofctl("dump-flows", fabric.lab.bridge).splitlines() if "actions=" in line]
    # pins: the switch's own (the flow's own cookie and table, not a learn action's)
    learned = [line for line in flows if line.strip().startswith("cookie=0x4") and " table=2," in line]
    assert len(flows) - len(learned) == after[0]["flows"]
    assert fabric.lab.requests("c1", URL, 20)["failed"] == 0
    status, _ = fabric.api("PUT", "/v1/config", document)  # as it was
    assert status == 200
    _, back = fabric.api("GET", "/v1/switches")
    assert back[0]["in_line"] and back[0]["flows"] < after[0]["flows"] - 400


def test_the_switch_counts_each_backends_new_connections(fabric):
    """20 connections through the VIP: the switches' counters, polled every
    second, give the VIP 20 new connections and each backend as many as its
    server answered, and as many answers (SYN-ACK) from it."""

    def stats():
        _, pool = fabric.api("GET", "/v1/pools/web/stats")
        return pool["vips"]["www"], pool["backends"]

    time.sleep(2.5)  # a poll after the earlier tests' traffic
    vip_before, backends_before = stats()
    report = fabric.lab.requests("c1", URL, 20)
    assert report["failed"] == 0
    time.sleep(2.5)
    vip_after, backends_after = stats()
    assert vip_after["new_connections"] - vip_before["new_connections"] == 20
    assert vip_after["packets"] - vip_before["packets"] >= 20 * 4  # SYN, ACK, request, FIN at least
    opened = {
        ip: backends_after[ip]["new_connections"] - backends_before[ip]["new_connections"] for ip in backends_after
    }
    by_name = {f"10.0.0.{last}": name for name, last in BACKENDS.items()}
    assert {by_name[ip]: n for ip, n in opened.items() if n} == report["by_backend"]
    # and each backend answered them straight to the client, seen by the switch (SYN-ACK from the VIP)
    answered = {
        ip: backends_after[ip]["replies"]["answered"] - backends_before[ip]["replies"]["answered"]
        for ip in backends_after
    }
    assert {by_name[ip]: n for ip, n in answered.items() if n} == report["by_backend"]
    _, everything = fabric.api("GET", "/v1/stats")
    assert everything["polls"] > 0 and everything["vips"]["www"]["new_connections"] >= 20


def test_the_status_page_shows_the_vips_and_backends_and_its_counts_move(fabric):
    """The status page in a real headless browser (Debian's chromium): the
    VIP and every backend that exist are on it, and after 30 requests the
    backends' connection counts on the page have grown by 30."""
    from html.parser import HTMLParser

    class Cells(HTMLParser):
        """data-field cells by backend row, and the VIP lines."""

        def __init__(self):
            super().__init__()
            self.rows, self.vips, self.row, self.field = {}, set(), None, None

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "tr" and "data-backend" in attrs:
                self.row = self.rows.setdefault(attrs["data-backend"], {})
            elif tag == "td" and self.row is not None:
                self.field = attrs.get("data-field")
            elif "data-vip" in attrs:
                self.vips.add(attrs["data-vip"])

        def handle_data(self, data):
            if self.field:
                self.row[self.field] = data
                self.field = None

    def page() -> Cells:
        cells = Cells()
        cells.feed(browse(f"{fabric.base}/status"))
        return cells

    if fabric.api("GET", "/v1/pools/web")[0] == 404:
        fabric.create_web(backends=tuple(BACKENDS.values()))
    time.sleep(2.5)  # a poll after the earlier tests' traffic
    before = page()
    backends = {b["ip"]: b["status"]["state"] for b in fabric.api("GET", "/v1/pools/web")[1]["backends"]}
    assert {ip: row["state"] for ip, row in before.rows.items()} == backends
    assert "www" in before.vips
    assert fabric.lab.requests("c1", URL, 30)["failed"] == 0
    time.sleep(2.5)
    after = page()
    grown = sum(int(after.rows[ip]["new_connections"]) - int(before.rows[ip]["new_connections"]) for ip in backends)
    assert grown == 30


def test_hosts_ping_each_other(fabric):
    for name in BACKENDS:
        fabric.lab.run("c1", "ping", "-c", "1", "-W", "2", fabric.lab.hosts[name].ip)
    fabric.lab.run("b11", "ping", "-c", "1", "-W", "2", "10.0.0.12")


def test_deleting_a_backend_stops_new_requests_to_it(fabric):
    assert fabric.api("DELETE", "/v1/pools/web/backends/10.0.0.12")[0] == 204
    report = fabric.lab.requests("c1", URL, 60)
    assert report["failed"] == 0
    assert set(report["by_backend"]) == {"b11", "b13"}


def test_the_vip_is_served_while_the_controller_is_down_and_after_it_restarts(fabric):
    fabric.lab.stop(fabric.controller)
    down = fabric.lab.requests("c1", URL, 20)
    assert down["failed"] == 0 and set(down["by_backend"]) <= {"b11", "b13"}
    log_before = len(fabric.log())
    fabric.controller = fabric.start_controller()
    status, vip = fabric.api("GET", "/v1/vips/www")
    assert status == 200 and vip["ip"] == VIP and vip["status"]["backends_up"] == 2
    after = fabric.lab.requests("c1", URL, 40)
    assert after["failed"] == 0 and set(after["by_backend"]) == {"b11", "b13"}
    connected = wait_for(
        lambda: re.search(r"connected: .* (\d+) flows found", fabric.log()[log_before:]), what="reconnect"
    )
    assert int(connected.group(1)) > 10
    time.sleep(1.0)  # its ARP probes are answered meanwhile, by the same backends
    # restarted from its state file, it found the switch already right: nothing re-sent
    switch = wait_for(lambda: [sw for sw in fabric.api("GET", "/v1/switches")[1] if sw["in_line"]], what="in line")[0]
    assert switch["flow_mods"] == 0 and switch["flows"] > 10
    # the hash group and the learning meter it found were changed in place: no error, no resync
    time.sleep(0.5)
    switch = fabric.api("GET", "/v1/switches")[1][0]
    assert switch["errors"] == 0 and switch["resyncs"] == 0


def test_the_client_learned_the_vip_mac_from_the_switch(fabric):
    fabric.lab.run("c1", "ip", "neigh", "flush", "dev", "eth0")
    assert fabric.lab.requests("c1", URL, 1)["failed"] == 0
    neigh = fabric.lab.run("c1", "ip", "neigh", "show", VIP)
    assert "02:d5:0a:00:00:64" in neigh, neigh


def test_a_start_without_the_state_file_keeps_the_vip_until_the_state_is_adopted(fabric):
    saved = fabric.settings["state_file"]
    fabric.lab.stop(fabric.controller)
    fabric.settings["state_file"] = str(fabric.lab.run_dir / "lost-state.db")  # a new path: nothing saved there
    try:
        log_before = len(fabric.log())
        fabric.controller = fabric.start_controller()
        switch = wait_for(lambda: [sw for sw in fabric.api("GET", "/v1/switches")[1] if sw["in_line"]], what="in line")
        assert switch[0]["kept_owners"] > 0 and "does not know" in fabric.log()[log_before:]
        assert fabric.api("GET", "/v1/vips")[1] == []
        served = fabric.lab.requests("c1", URL, 20)
        assert served["failed"] == 0  # the VIP's rules were left in place
        status, answer = fabric.api("POST", "/v1/state/adopt", {})
        assert status == 200 and answer["owners_removed"] > 0
        assert fabric.lab.requests("c1", URL, 3, "--timeout", "1")["failed"] == 3  # now the state is the empty one
    finally:
        fabric.lab.stop(fabric.controller)
        fabric.settings["state_file"] = saved
        fabric.controller = fabric.start_controller()


def test_a_change_without_the_token_is_401_and_changes_nothing(fabric):
    import json
    import urllib.error
    import urllib.request

    before = fabric.api("GET", "/v1/config")[1]
    for headers in ({}, {"Authorization": "Bearer not-the-token-at-all-0000"}):
        request = urllib.request.Request(
            fabric.base + "/v1/pools",
            data=json.dumps({"name": "intruder"}).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        try:
            urllib.request.urlopen(request, timeout=10)
            raise AssertionError("accepted without the token")
        except urllib.error.HTTPError as error:
            assert error.code == 401
    assert fabric.api("GET", "/v1/config")[1] == before
    token_file = fabric.lab.run_dir / "api-token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    assert token_file.read_text().split(":", 1)[1].strip() not in fabric.log()


def test_dsrctl_runs_every_operation_and_says_why_it_fails(fabric, tmp_path):
    import json
    import os

    if fabric.api("GET", "/v1/pools/web")[0] == 404:
        fabric.create_web(backends=tuple(BACKENDS.values()))
    # the controller was restarted just before: the switch reconnects on its own backoff (up to 8 s)
    wait_for(lambda: [sw for sw in fabric.api("GET", "/v1/switches")[1] if sw["in_line"]], 20, what="the switch back")
    token_file = str(fabric.lab.run_dir / "api-token")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DSRCTL_")}

    def dsrctl(*args, token_file=token_file, api=fabric.base):
        done = subprocess.run(
            [program("dsrctl"), "--api", api, "--token-file", token_file, *args],
            capture_output=True,
            text=True,
            env=env,
        )
        return done.returncode, done.stdout, done.stderr

    code, out, _ = dsrctl("status")
    assert code == 0 and "www" in out and "0000000000000001" in out
    backends = [b["ip"] for b in fabric.api("GET", "/v1/pools/web")[1]["backends"]]
    assert backends and all(ip in out for ip in backends) and " up " in out
    for args in (
        ["pools"],
        ["pool", "web"],
        ["vips"],
        ["vip", "www"],
        ["switches"],
        ["topology"],
        ["stats"],
        ["config"],
    ):
        code, out, err = dsrctl(*args)
        assert code == 0 and out.strip(), (args, err)
    assert {p["name"] for p in json.loads(dsrctl("--json", "pools")[1])} >= {"web"}
    # how the switch keeps moved slots' new connections: no OVSDB manager here, so learn
    assert "handover: none (new connections of moved slots: 0000000000000001 learn)" in dsrctl("pool", "web")[1]
    # changes, one of each
    steps = [
        ["pool-add", "ctl", "10.0.0.31"],
        ["backend-add", "ctl", "10.0.0.32", "--weight", "5"],
        ["weight", "ctl", "10.0.0.32", "0"],
        ["vip-add", "ctlvip", "10.0.0.120", "tcp", "8080", "ctl", "--backend-port", "80"],
        ["vips"],
        ["vip-rm", "ctlvip"],
        ["backend-rm", "ctl", "10.0.0.32"],
        ["pool-rm", "ctl"],
    ]
    for args in steps:
        code, out, err = dsrctl(*args)
        assert code == 0, (args, err)
        if args == ["vips"]:  # the translated VIP, its backend port shown
            assert any(line.split()[:5] == ["ctlvip", "10.0.0.120", "tcp", "8080", "80"] for line in out.splitlines())
    assert fabric.api("GET", "/v1/pools/ctl")[0] == 404
    document = tmp_path / "config.json"
    document.write_text(json.dumps(fabric.api("GET", "/v1/config")[1]))
    code, out, _ = dsrctl("apply", str(document), "--dry-run")
    assert code == 0 and json.loads(out)["dry_run"] is True
    # failures: the API's refusal (exit 1, its message), no token (1), no API (2)
    code, _out, err = dsrctl("pool", "nope")
    assert code == 1 and "404" in err and "nope" in err
    code, _out, err = dsrctl("pool-add", "x", "10.0.0.33", token_file="/nonexistent")
    assert code == 1 and "401" in err
    code, _out, err = dsrctl("pools", api="http://127.0.0.1:1")
    assert code == 2 and "cannot reach" in err


def test_a_backend_whose_server_stopped_is_seen_resetting_its_connections(fabric):
    """The passive signal: the switch sees connections sent to a backend and
    the backend's answers. With its server stopped, the backend's kernel
    answers SYN with RST from the VIP: the backend's ARP check still passes,
    but its status shows it answered none, and the log says so."""
    if fabric.api("GET", "/v1/pools/web")[0] == 404:
        fabric.create_web(backends=tuple(BACKENDS.values()))
    ip = fabric.api("GET", "/v1/pools/web")[1]["backends"][0]["ip"]
    name = next(n for n, last in BACKENDS.items() if f"10.0.0.{last}" == ip)
    fabric.lab.stop(fabric.servers[name])
    try:
        client = fabric.lab.spawn_client(
            "c1", URL, "--count", "400", "--interval", "0.02", "--timeout", "1", log="p.json"
        )

        def passive():
            status = fabric.api("GET", f"/v1/pools/web/backends/{ip}")[1]["status"]
            return status if (status["passive"] or {}).get("answered_share") == 0.0 else None

        status = wait_for(passive, 15, 0.3, "the stopped server's backend seen answering nothing")
        assert status["state"] == "up" and status["passive"]["resets_per_s"] > 0  # its ARP check passes
        assert f"backend {ip} (" in fabric.log() and "answered 0% of the" in fabric.log()
        # as a failed check (per pool): the backend leaves the hash though its ARP check passes
        assert fabric.api("PATCH", "/v1/pools/web", {"health_check": {"passive": "fail"}})[0] == 200
        wait_for(
            lambda: f"backend {ip}: health failed (the switch saw it answer 0% of its new connections)" in fabric.log(),
            15,
            0.3,
            "the stopped server's backend failed by the passive signal",
        )
        client.wait(60)
    finally:
        fabric.api("PATCH", "/v1/pools/web", {"health_check": {"passive": "report"}})
        fabric.servers[name] = fabric.lab.serve_http(name)

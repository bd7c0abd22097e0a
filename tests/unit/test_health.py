"""In-band health checks: probes out by packet-out, answers in by packet-in."""

from __future__ import annotations

import pytest
from ryu_dsr.flows.frames import TCP_ACK, TCP_PSH, TCP_RST, TCP_SYN, Tcp, build_arp, build_tcp, parse_arp, parse_tcp
from ryu_dsr.flows.pipeline import Kind, Table, kind_of
from ryu_dsr.flows.rules import FlowDeleteByCookie, PacketOut, SetField
from ryu_dsr.rest import views

from ryu_dsr.model import InvalidInput
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import arp_request, tcp

PROBE_IP = "10.0.0.250"
PROBE_MAC = "02:d4:00:00:00:01"
VIP, VIP_MAC = "10.0.0.100", "02:d5:0a:00:00:64"


def checked(tmp_path, check, **settings):
    rig = make_rig(tmp_path, probe_ip=PROBE_IP, **settings)
    switch = rig.connect()
    rig.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS], "health_check": check})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    return rig, switch


def probes(rig):
    """Packet-outs sent since the last call, parsed."""
    out = [c for _, commands in rig.sent for c in commands if isinstance(c, PacketOut)]
    rig.sent.clear()
    return [(c.port, parse_tcp(c.data) or parse_arp(c.data)) for c in out]


def tick(rig, seconds):
    rig.clock.now += seconds
    rig.balancer.tick()


def answer(rig, syn: Tcp, flags, payload=b"", seq=1000):
    mac, port = BACKENDS[syn.dst] if syn.dst in BACKENDS else (syn.eth_dst, 2)
    reply = Tcp(
        syn.eth_dst,
        PROBE_MAC,
        syn.dst,
        syn.src,
        syn.dport,
        syn.sport,
        seq,
        (syn.seq + 1) & 0xFFFFFFFF if flags & TCP_SYN else syn.seq,
        flags,
        payload,
    )
    rig.balancer.packet_in(1, BACKENDS.get(syn.dst, (mac, port))[1], build_tcp(reply))


def state(rig, ip):
    return views.backend_json(rig.status, "web", ip)["status"]


def test_tcp_check_takes_a_refusing_backend_out_and_brings_it_back(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80})
    tick(rig, 0.01)
    sent = probes(rig)
    syns = {p.dst: (port, p) for port, p in sent if isinstance(p, Tcp)}
    assert set(syns) == set(BACKENDS)
    for ip, (port, syn) in syns.items():
        assert port == BACKENDS[ip][1] and syn.flags == TCP_SYN and syn.dport == 80
        assert (syn.src, syn.eth_src, syn.eth_dst) == (PROBE_IP, PROBE_MAC, BACKENDS[ip][0])
    # .11 accepts (answered by RST from us), .12 refuses
    answer(rig, syns["10.0.0.11"][1], TCP_SYN | TCP_ACK)
    assert [p.flags for _, p in probes(rig)] == [TCP_RST]
    answer(rig, syns["10.0.0.12"][1], TCP_RST | TCP_ACK)
    assert state(rig, "10.0.0.12")["state"] == "up"  # one failure is not enough (fall 2)
    assert state(rig, "10.0.0.12")["health"]["last_result"] == "failed: connection to 10.0.0.12:80 refused"
    tick(rig, 0.3)
    again = {p.dst: p for _, p in probes(rig) if isinstance(p, Tcp) and p.flags == TCP_SYN}
    rig.sent.clear()
    answer(rig, again["10.0.0.12"], TCP_RST | TCP_ACK)
    status = state(rig, "10.0.0.12")
    assert status["state"] == "unhealthy" and "2 check(s) failed" in status["reason"] and status["slots"] == 0
    # its connections move on: its pins are deleted
    assert any(isinstance(c, FlowDeleteByCookie) and kind_of(c.cookie) == Kind.PIN for _, cs in rig.sent for c in cs)
    for _ in range(2):
        tick(rig, 0.3)
        syn = next(p for _, p in probes(rig) if isinstance(p, Tcp) and p.dst == "10.0.0.12" and p.flags == TCP_SYN)
        answer(rig, syn, TCP_SYN | TCP_ACK)
    assert state(rig, "10.0.0.12")["state"] == "up" and state(rig, "10.0.0.12")["slots"] > 60


def test_an_unanswered_probe_fails_at_its_timeout(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 2})
    for _ in range(2):
        tick(rig, 0.05)
        tick(rig, 0.25)  # the probe times out; the next one starts
    assert state(rig, "10.0.0.13")["state"] == "unhealthy"
    assert "no answer in 0.2 s" in state(rig, "10.0.0.13")["reason"]


def test_a_switch_that_is_away_fails_none_of_its_backends(tmp_path):
    """Probes cannot go out through a disconnected switch: no failure is
    counted while it is away, and checks resume when it is back."""
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 2})
    tick(rig, 0.05)  # probes out
    rig.balancer.switch_disconnected(1)
    rig.sent.clear()
    for _ in range(20):
        tick(rig, 0.3)
    assert not [p for _, p in probes(rig) if isinstance(p, Tcp)]
    assert {state(rig, ip)["state"] for ip in BACKENDS} == {"up"}
    rig.connect()
    tick(rig, 0.3)
    assert {p.dst for _, p in probes(rig) if isinstance(p, Tcp)} == set(BACKENDS)


def test_probes_out_while_the_controller_did_not_run_end_with_no_result(tmp_path):
    """Stopped (SIGSTOP) or starved past the probes' timeout, the controller
    read no answer in time: those probes are not failures."""
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 1})
    tick(rig, 0.05)
    assert len([p for _, p in probes(rig) if isinstance(p, Tcp)]) == 3
    rig.clock.now += 10
    rig.balancer.stalled(10)  # what the shell calls when its tick comes this late
    rig.balancer.tick()
    assert {state(rig, ip)["state"] for ip in BACKENDS} == {"up"}
    tick(rig, 0.25)  # the probes of this tick are answered by no one: now they fail
    assert {state(rig, ip)["state"] for ip in BACKENDS} == {"unhealthy"}


def test_arp_check_is_the_default_and_needs_no_probe_address(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    tick(rig, 0.01)
    arps = [(port, p) for port, p in probes(rig) if not isinstance(p, Tcp)]
    checks = [(port, p) for port, p in arps if port != "flood"]  # resolution probes are flooded
    assert {p.tpa for _, p in checks} == set(BACKENDS) and len(checks) == 3
    assert all(port == BACKENDS[p.tpa][1] and p.spa == "0.0.0.0" for port, p in checks)  # to the backend's port
    for ip, (mac, port) in BACKENDS.items():
        if ip != "10.0.0.11":
            rig.answer_arp(ip, mac, port)
    tick(rig, 0.3)
    tick(rig, 0.3)
    assert state(rig, "10.0.0.11")["state"] == "unhealthy"
    assert state(rig, "10.0.0.12")["state"] == "up"
    assert views.pool_json(rig.status, "web")["health_check"]["kind"] == "arp"


def test_http_check_wants_the_expected_status(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "http", "port": 80, "path": "/health", "fall": 1})
    tick(rig, 0.01)
    syn = next(p for _, p in probes(rig) if isinstance(p, Tcp) and p.dst == "10.0.0.11")
    answer(rig, syn, TCP_SYN | TCP_ACK, seq=5000)
    request = next(p for _, p in probes(rig) if isinstance(p, Tcp))
    assert request.flags == TCP_ACK | TCP_PSH and request.ack == 5001
    assert request.payload.startswith(b"GET /health HTTP/1.0\r\n")
    response = Tcp(
        BACKENDS["10.0.0.11"][0],
        PROBE_MAC,
        "10.0.0.11",
        PROBE_IP,
        80,
        request.sport,
        5001,
        request.seq + len(request.payload),
        TCP_ACK | TCP_PSH,
        b"HTTP/1.0 503 Service Unavailable\r\n\r\n",
    )
    rig.balancer.packet_in(1, 2, build_tcp(response))
    status = state(rig, "10.0.0.11")
    assert status["state"] == "unhealthy"
    assert "GET /health on 10.0.0.11:80 answered 503, expected 200" in status["reason"]


def test_vip_target_probes_the_vip_address_with_the_backend_mac(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "target": "vip"})
    tick(rig, 0.01)
    syns = [p for _, p in probes(rig) if isinstance(p, Tcp)]
    assert {p.dst for p in syns} == {VIP}
    assert {p.eth_dst for p in syns} == {mac for mac, _ in BACKENDS.values()}


def test_vip_target_probes_every_vip_address_and_one_failing_takes_the_backend_out(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "target": "vip"})
    other = "10.0.0.101"
    rig.service.create_vip({"name": "www2", "ip": other, "protocol": "tcp", "port": 80, "pool": "web"})
    broken = BACKENDS["10.0.0.12"][0]  # 10.0.0.12 lost 10.0.0.101 from its lo
    seen = set()

    def round_(fixed: bool) -> None:
        tick(rig, 0.3)
        for _port, syn in probes(rig):
            if isinstance(syn, Tcp) and syn.flags == TCP_SYN:
                seen.add(syn.dst)
                refuse = syn.eth_dst == broken and syn.dst == other and not fixed
                answer(rig, syn, TCP_RST | TCP_ACK if refuse else TCP_SYN | TCP_ACK)
                rig.sent.clear()

    for _ in range(6):
        round_(fixed=False)
    assert seen == {VIP, other}
    status = state(rig, "10.0.0.12")
    assert status["state"] == "unhealthy" and f"connection to {other}:80 refused" in status["reason"]
    assert state(rig, "10.0.0.11")["state"] == state(rig, "10.0.0.13")["state"] == "up"
    for _ in range(4):
        round_(fixed=True)
    assert state(rig, "10.0.0.12")["state"] == "up"


def test_the_switch_answers_arp_for_the_probe_address(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80})
    reply = switch.send(arp_request("02:00:00:00:00:0b", "10.0.0.11", PROBE_IP), in_port=2)
    assert len(reply) == 1 and reply[0].port == 2
    assert (reply[0].packet["arp_sha"], reply[0].packet["arp_spa"]) == (PROBE_MAC, PROBE_IP)
    # and answers to the probe address reach the controller
    syn_ack = tcp("10.0.0.11", PROBE_IP, 80, 40000, "02:00:00:00:00:0b", PROBE_MAC)
    assert [o.port for o in switch.send(syn_ack, in_port=2)] == ["controller"]
    assert VIP_MAC  # the VIP keeps its own ARP answer
    assert switch.send(arp_request(CLIENT_MAC, "10.0.0.1", VIP), 1)[0].packet["arp_sha"] == VIP_MAC


def test_a_stale_or_foreign_answer_changes_nothing(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "fall": 1})
    tick(rig, 0.01)
    syn = next(p for _, p in probes(rig) if isinstance(p, Tcp) and p.dst == "10.0.0.11")
    wrong_ack = Tcp(syn.eth_dst, PROBE_MAC, syn.dst, syn.src, 80, syn.sport, 1, syn.seq + 7, TCP_RST, b"")
    rig.balancer.packet_in(1, 2, build_tcp(wrong_ack.__class__(**{**wrong_ack.__dict__, "src": "10.0.0.99"})))
    rig.balancer.packet_in(
        1, 2, build_arp(2, "02:00:00:00:00:99", PROBE_MAC, "02:00:00:00:00:99", "10.0.0.77", PROBE_MAC, "0.0.0.0")
    )
    assert state(rig, "10.0.0.11")["state"] == "up"


@pytest.mark.parametrize(
    ("check", "words"),
    [
        ({"kind": "icmp"}, "health_check.kind: must be one of: arp, tcp, http, none"),
        ({"kind": "tcp"}, "health_check.port: is required for a tcp check"),
        ({"kind": "tcp", "port": 70000}, "health_check.port: must be an integer from 1 to 65535"),
        ({"kind": "http", "port": 80, "path": "health"}, "health_check.path: must start with '/'"),
        ({"kind": "http", "port": 80, "expect_status": 99}, "health_check.expect_status"),
        ({"interval": 0.01}, "health_check.interval: must be a number from 0.05 to 3600"),
        ({"interval": 0.3, "timeout": 0.5}, "health_check.timeout: must not exceed the interval"),
        ({"rise": 0}, "health_check.rise"),
        ({"fall": 101}, "health_check.fall"),
        ({"kind": "arp", "target": "vip"}, "health_check.target: vip needs a tcp or http check"),
        ({"colour": 1}, "health_check.colour: unknown field"),
    ],
)
def test_health_check_rules(tmp_path, check, words):
    rig = make_rig(tmp_path, probe_ip=PROBE_IP)
    with pytest.raises(InvalidInput) as error:
        rig.service.create_pool({"name": "web", "health_check": check})
    assert words in str(error.value)
    assert list(rig.balancer.config.pools) == []


def test_tcp_checks_need_a_probe_address(tmp_path):
    rig = make_rig(tmp_path)
    with pytest.raises(InvalidInput, match="need the dsr.probe_ip setting"):
        rig.service.create_pool({"name": "web", "health_check": {"kind": "tcp", "port": 80}})
    rig.service.create_pool({"name": "web"})
    with pytest.raises(InvalidInput, match="health_check.kind"):
        rig.service.patch_pool("web", {"health_check": {"kind": "http", "port": 80}})
    assert views.pool_json(rig.status, "web")["health_check"]["kind"] == "arp"


def test_patching_a_check_keeps_the_fields_not_given(tmp_path):
    rig = make_rig(tmp_path, probe_ip=PROBE_IP)
    rig.service.create_pool({"name": "web", "health_check": {"kind": "tcp", "port": 8080, "fall": 3}})
    rig.service.patch_pool("web", {"health_check": {"interval": 1.0}})
    changed = views.pool_json(rig.status, "web")["health_check"]
    assert (changed["kind"], changed["port"], changed["fall"], changed["interval"]) == ("tcp", 8080, 3, 1.0)


def test_failed_backends_are_saved_and_a_restart_keeps_them_out_until_they_pass(tmp_path):
    """The state file keeps which backends failed their checks: a controller
    restarted on it (or a new master, from etcd) keeps them out of the hash
    from its first flow, trusts the others, and lets them back once they
    pass."""
    check = {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 2, "rise": 2}
    rig, _switch = checked(tmp_path, check)
    for _ in range(2):
        tick(rig, 0.05)
        tick(rig, 0.25)  # no backend answers: all fail
    saved = rig.balancer.store.load().health
    uids = {ip: b.uid for ip, b in rig.balancer.config.pools["web"].backends.items()}
    assert set(saved) == set(uids.values()) and "no answer" in saved[uids["10.0.0.13"]]
    for _ in range(2):  # two pass again
        tick(rig, 0.3)
        for syn in [p for _, p in probes(rig) if isinstance(p, Tcp) and p.flags == TCP_SYN]:
            if syn.dst in ("10.0.0.11", "10.0.0.12"):
                answer(rig, syn, TCP_SYN | TCP_ACK)
    assert set(rig.balancer.store.load().health) == {uids["10.0.0.13"]}
    rig.balancer.store.close()

    restarted = make_rig(tmp_path, probe_ip=PROBE_IP, clock=rig.clock)
    switch = restarted.connect()
    restarted.pass_hold()
    status = views.backend_json(restarted.status, "web", "10.0.0.13")["status"]
    assert status["health"]["healthy"] is False and "no answer" in status["health"]["last_result"]
    assert status["state"] == "unhealthy" and status["slots"] == 0
    assert [restarted.balancer.backends.health.healthy("web", ip) for ip in ("10.0.0.11", "10.0.0.12")] == [True, True]
    backend_macs = {ip: mac for ip, (mac, _port) in BACKENDS.items()}
    chosen = {
        action.value
        for rule in switch.rules(Table.SLOTS)
        for action in rule.actions
        if isinstance(action, SetField) and action.field == "eth_dst"
    }
    assert backend_macs["10.0.0.13"] not in chosen and chosen >= {backend_macs["10.0.0.11"], backend_macs["10.0.0.12"]}
    # It answers its checks again: back in the hash, and the saved failure is gone.
    for _ in range(3):
        tick(restarted, 0.3)
        for syn in [p for _, p in probes(restarted) if isinstance(p, Tcp) and p.flags == TCP_SYN]:
            answer(restarted, syn, TCP_SYN | TCP_ACK)
    assert views.backend_json(restarted.status, "web", "10.0.0.13")["status"]["state"] == "up"
    assert restarted.balancer.store.load().health == {}


def test_a_removed_backend_takes_its_saved_failure_with_it(tmp_path):
    check = {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 2}
    rig, _switch = checked(tmp_path, check)
    for _ in range(2):
        tick(rig, 0.05)
        tick(rig, 0.25)  # no backend answers: all fail
    uid = rig.balancer.config.pools["web"].backends["10.0.0.13"].uid
    assert uid in rig.balancer.store.load().health
    rig.service.delete_backend("web", "10.0.0.13")
    assert uid not in rig.balancer.store.load().health
    rig.service.delete_vip("www")
    rig.service.delete_pool("web")
    assert rig.balancer.store.load().health == {}


def spread(rig, switch, connections=90) -> dict[str, int]:
    """New TCP connections from the client to the VIP, counted by the
    backend whose MAC the switch sent them to (the hold of moved slots
    passed first)."""
    from collections import Counter

    from tests.simulator import syn

    rig.pass_hold()
    by_mac = {mac: ip for ip, (mac, _port) in BACKENDS.items()}
    seen: Counter = Counter()
    for sport in range(20000, 20000 + connections):
        outputs = switch.send(syn("10.0.0.1", VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1)
        seen.update(by_mac[o.packet["eth_dst"]] for o in outputs if o.packet["eth_dst"] in by_mac)
    return dict(seen)


def fail_all(rig):
    for _ in range(2):
        tick(rig, 0.05)
        tick(rig, 0.25)  # no backend answers its probe in time


def test_a_pool_whose_every_backend_fails_its_checks_fails_open(tmp_path):
    """No backend passes (a broken check, a saturated switch): rather than
    an empty table that serves nobody, every backend keeps taking new
    connections, each still reported unhealthy, the pool reported failing
    open. The first backend that passes again takes them all back."""
    from ryu_dsr.rest.metrics import render

    def scraped():
        return render(rig.status).decode()

    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 2, "rise": 2})
    fail_all(rig)
    pool = views.pool_json(rig.status, "web")
    assert pool["failing_open"] is True
    for backend in pool["backends"]:
        status = backend["status"]
        assert status["state"] == "unhealthy" and "no answer" in status["reason"], status
        assert "fails open" in status["reason"] and status["slots"] > 60, status
    assert set(spread(rig, switch)) == set(BACKENDS)
    assert 'ryu_dsr_pool_failing_open{pool="web"} 1.0' in scraped()
    assert views.vip_json(rig.status, "www")["status"]["backends_up"] == 0  # what alerts see
    for _ in range(2):  # .12 answers again
        tick(rig, 0.3)
        for syn_ in [p for _, p in probes(rig) if isinstance(p, Tcp) and p.flags == TCP_SYN]:
            if syn_.dst == "10.0.0.12":
                answer(rig, syn_, TCP_SYN | TCP_ACK)
    assert views.pool_json(rig.status, "web")["failing_open"] is False
    assert spread(rig, switch) == {"10.0.0.12": 90}
    assert state(rig, "10.0.0.11")["slots"] == 0 and "fails open" not in state(rig, "10.0.0.11")["reason"]
    assert 'ryu_dsr_pool_failing_open{pool="web"} 0.0' in scraped()


def test_with_fail_open_false_a_pool_whose_every_backend_fails_takes_no_connection(tmp_path):
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fail_open": False})
    fail_all(rig)
    pool = views.pool_json(rig.status, "web")
    assert pool["failing_open"] is False and pool["health_check"]["fail_open"] is False
    assert {b["status"]["slots"] for b in pool["backends"]} == {0}
    assert spread(rig, switch) == {}
    # Turned on while every backend fails: the same change fills the table.
    rig.service.patch_pool("web", {"health_check": {"fail_open": True}})
    assert views.pool_json(rig.status, "web")["failing_open"] is True
    assert set(spread(rig, switch)) == set(BACKENDS)


def test_fail_open_ignores_only_checks_not_a_backend_that_cannot_be_reached_or_drains(tmp_path):
    """Failing open puts back backends that failed their checks and nothing
    else: a drained backend still gets no new connection, and a pool whose
    only takers are drained does not fail open."""
    rig, switch = checked(tmp_path, {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2})
    rig.service.patch_backend("web", "10.0.0.13", {"weight": 0})
    fail_all(rig)
    assert views.pool_json(rig.status, "web")["failing_open"] is True
    assert set(spread(rig, switch)) == {"10.0.0.11", "10.0.0.12"}
    assert state(rig, "10.0.0.13")["slots"] == 0


def test_fail_open_must_be_a_boolean(tmp_path):
    rig, _switch = checked(tmp_path, {"kind": "arp"})
    before = views.pool_json(rig.status, "web")
    with pytest.raises(InvalidInput) as error:
        rig.service.patch_pool("web", {"health_check": {"fail_open": "yes"}})
    assert error.value.field == "health_check.fail_open" and "true or false" in str(error.value)
    assert views.pool_json(rig.status, "web") == before


def test_a_panic_threshold_fails_the_pool_open_before_every_backend_fails(tmp_path):
    """Partial fail-open (issue 30): with ``panic_threshold: 50``, when fewer
    than half the backends pass, all that can take connections do; with
    half or more passing, only those."""
    check = {"kind": "tcp", "port": 80, "interval": 0.3, "timeout": 0.2, "fall": 2, "rise": 2, "panic_threshold": 50}
    rig, _switch = checked(tmp_path, check)

    def round_answered_by(ips):
        tick(rig, 0.3)
        for syn in [p for _, p in probes(rig) if isinstance(p, Tcp) and p.flags == TCP_SYN]:
            if syn.dst in ips:
                answer(rig, syn, TCP_SYN | TCP_ACK)

    def slots():
        table = rig.balancer.desired.planner.table("web")
        return {ip: table.count(ip) for ip in BACKENDS}

    for _ in range(3):  # two of three stop answering: a third passes, under the threshold
        round_answered_by({"10.0.0.11"})
    assert rig.balancer.backends.fails_open(rig.balancer.config.pools["web"])
    assert all(count > 0 for count in slots().values())  # all take new connections
    reason = views.backend_json(rig.status, "web", "10.0.0.12")["status"]["reason"]
    assert "fewer than 50 % of the pool's backends pass, it fails open (panic threshold)" in reason
    for _ in range(3):  # a second one answers again: two of three pass, above the threshold
        round_answered_by({"10.0.0.11", "10.0.0.12"})
    assert not rig.balancer.backends.fails_open(rig.balancer.config.pools["web"])
    assert slots()["10.0.0.13"] == 0 and slots()["10.0.0.11"] > 0 and slots()["10.0.0.12"] > 0
    with pytest.raises(InvalidInput, match="needs fail_open"):
        rig.service.patch_pool("web", {"health_check": {"fail_open": False}})

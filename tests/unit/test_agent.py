"""Agent checks: backends report their own state and load (HAProxy's
agent-check), read in-band by the controller, and their effective weights
follow, bounded by the configured weight, with hysteresis."""

from __future__ import annotations

import pytest
from ryu_dsr.flows.frames import TCP_ACK, TCP_FIN, TCP_PSH, TCP_SYN, Tcp, build_tcp

from ryu_dsr.agent import FIRST_AGENT_PORT, Report, parse_line
from ryu_dsr.model import InvalidInput
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.unit.test_health import PROBE_IP, PROBE_MAC, VIP, probes, spread, tick

AGENT = {"port": 7777, "interval": 1.0, "timeout": 0.5, "step": 10}


def agented(tmp_path, agent=None, **pool):
    rig = make_rig(tmp_path, probe_ip=PROBE_IP)
    switch = rig.connect()
    body = {"name": "web", "backends": [{"ip": ip} for ip in BACKENDS], "health_check": {"kind": "none"}}
    rig.service.create_pool({**body, "agent_check": agent or AGENT, **pool})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    return rig, switch


def agents_say(rig, lines: dict[str, str]) -> None:
    """One round of agent probes, each backend's agent answering its line."""
    tick(rig, 1.0)
    syns = {p.dst: p for _, p in probes(rig) if isinstance(p, Tcp) and p.dport == AGENT["port"]}
    assert set(syns) == set(BACKENDS) and all(p.sport >= FIRST_AGENT_PORT for p in syns.values())
    for ip, syn in syns.items():
        mac, port = BACKENDS[ip]
        reply = Tcp(mac, PROBE_MAC, ip, PROBE_IP, syn.dport, syn.sport, 7000, syn.seq + 1, TCP_SYN | TCP_ACK, b"")
        rig.balancer.packet_in(1, port, build_tcp(reply))
        [ack] = [p for _, p in probes(rig) if isinstance(p, Tcp)]
        assert ack.flags & TCP_ACK and not ack.payload  # the agent speaks first
        said = lines[ip].encode() + b"\n"
        line = Tcp(mac, PROBE_MAC, ip, PROBE_IP, syn.dport, syn.sport, 7001, ack.seq, TCP_ACK | TCP_PSH | TCP_FIN, said)
        rig.balancer.packet_in(1, port, build_tcp(line))
        probes(rig)  # our reset


def test_an_agent_line_is_read_as_haproxy_reads_it():
    assert parse_line("75%", None) == Report("up", 75, "75%")
    assert parse_line("drain", Report("up", 50, "50%")) == Report("drain", 50, "drain")
    assert parse_line("up 60%", Report("down", 50, "down")) == Report("up", 60, "up 60%")
    assert parse_line("maint", None).state == "down" and parse_line("ready,100%", None) == Report(
        "up", 100, "ready,100%"
    )
    assert parse_line("150%", None).percent == 100  # the configured weight is the ceiling
    assert parse_line("hello", Report("up", 40, "40%")) is None  # not understood: the report stays


def test_a_backend_reporting_half_gets_about_half_the_share_of_its_peers(tmp_path):
    rig, switch = agented(tmp_path)
    agents_say(rig, {"10.0.0.11": "50%", "10.0.0.12": "100%", "10.0.0.13": "up"})
    tick(rig, 1.0)  # applied at the next interval (a sixth of the pool's weight: within one step)
    rig.settle()
    shares = spread(rig, switch, 900)
    assert 0.4 < shares["10.0.0.11"] / shares["10.0.0.12"] < 0.6, shares
    status = rig.status.backend_status("web", "10.0.0.11")
    assert rig.status.config.backend("web", "10.0.0.11").weight == 100  # configuration untouched
    effective = rig.core.backends.weights_now.of(
        rig.core.config.pools["web"], rig.core.config.backend("web", "10.0.0.11")
    )
    assert effective == (50, "its agent reports 50% of its weight")
    assert status["state"] == "up"


def test_drain_takes_no_new_connection_keeps_old_ones_and_down_takes_it_out(tmp_path):
    rig, switch = agented(tmp_path)
    rig.in_use()
    agents_say(rig, {"10.0.0.11": "drain", "10.0.0.12": "up", "10.0.0.13": "down"})
    assert rig.status.backend_state("web", rig.core.config.backend("web", "10.0.0.11")) == (
        "draining",
        "its agent said 'drain'",
    )
    assert rig.status.backend_state("web", rig.core.config.backend("web", "10.0.0.13"))[0] == "unhealthy"
    rig.settle()
    assert set(spread(rig, switch, 200)) == {"10.0.0.12"}
    # the drained backend still holds its established connections (a drain, as weight 0)
    assert rig.core.config.backend("web", "10.0.0.11").uid in rig.core.backends.holders["web"]
    agents_say(rig, {"10.0.0.11": "up", "10.0.0.12": "up", "10.0.0.13": "up"})
    rig.settle()
    assert set(spread(rig, switch, 300)) == set(BACKENDS)


def test_small_moves_are_held_back_and_a_silent_agent_changes_nothing(tmp_path):
    rig, switch = agented(tmp_path)
    agents_say(rig, {"10.0.0.11": "60%", "10.0.0.12": "up", "10.0.0.13": "up"})
    tick(rig, 1.0)
    rig.settle()
    table = list(rig.core.desired.planner.table("web"))
    for noisy in ("55%", "64%", "58%"):  # within the step of 10: no move
        agents_say(rig, {"10.0.0.11": noisy, "10.0.0.12": "up", "10.0.0.13": "up"})
        assert rig.core.desired.planner.table("web") == table
    assert rig.core.backends.weights_now.agent_share("web", "10.0.0.11") == 60
    agents_say(rig, {"10.0.0.11": "45%", "10.0.0.12": "up", "10.0.0.13": "up"})
    tick(rig, 1.0)
    assert rig.core.backends.weights_now.agent_share("web", "10.0.0.11") == 45
    moved = rig.core.desired.planner.table("web")
    assert moved != table
    for _ in range(3):  # no answer at all: the report stays, nothing moves
        tick(rig, 1.0)
        probes(rig)
    assert (
        rig.core.desired.planner.table("web") == moved
        and rig.core.backends.weights_now.agent_share("web", "10.0.0.11") == 45
    )


def test_reported_shares_are_applied_in_steps_of_at_most_max_move_and_drain_at_once(tmp_path):
    """A backend's agent says 10 %: its weight falls toward 10 of 100 in
    steps that move at most max_move of the pool's effective weight an
    interval (not 90 of 300 at once), its status saying how far it got; a
    drain applies at once."""
    rig, switch = agented(tmp_path, agent=AGENT | {"max_move": 0.1})
    pool = rig.core.config.pools["web"]
    weak = rig.core.config.backend("web", "10.0.0.11")
    agents_say(rig, {"10.0.0.11": "10%", "10.0.0.12": "up", "10.0.0.13": "up"})
    assert rig.core.backends.weights_now.of(pool, weak)[0] == 100  # reported, not applied yet
    weights, reasons = [], []
    for _ in range(6):
        tick(rig, 1.0)
        weight, why = rig.core.backends.weights_now.of(pool, weak)
        weights.append(weight)
        reasons.append(why)
    # a tenth of the pool's effective weight a step: 30 of 300, 27 of 270, 24 of 243, then the rest
    assert weights == [70, 43, 19, 10, 10, 10], weights
    assert reasons[0] == (
        "its agent reports 10% of its weight, 70% applied so far (at most 0.1 of the pool's weight moves an interval)"
    )
    assert reasons[-1] == "its agent reports 10% of its weight"
    status = rig.status.backend_status("web", "10.0.0.11")["agent"]
    assert (status["share"], status["reported"], status["said"]) == (10, 10, "10%")
    shares = spread(rig, switch, 600)
    assert shares.get("10.0.0.11", 0) < 0.12 * shares["10.0.0.12"], shares
    agents_say(rig, {"10.0.0.11": "drain", "10.0.0.12": "up", "10.0.0.13": "up"})
    rig.settle()
    assert "10.0.0.11" not in rig.core.desired.planner.table("web")


def test_an_agent_check_is_checked_naming_the_field(tmp_path):
    rig = make_rig(tmp_path, probe_ip=PROBE_IP)
    for bad, field, rule in (
        ({"interval": 1}, "agent_check.port", "is required"),
        ({"port": 0}, "agent_check.port", "from 1 to 65535"),
        ({"port": 7777, "interval": 1, "timeout": 2}, "agent_check.timeout", "must not exceed the interval"),
        ({"port": 7777, "step": 0}, "agent_check.step", "from 1 to 100"),
        ({"port": 7777, "max_move": 0}, "agent_check.max_move", "from 0.01 to 1"),
        ({"port": 7777, "colour": 1}, "agent_check.colour", "unknown field"),
    ):
        with pytest.raises(InvalidInput, match=rule) as refused:
            rig.service.create_pool({"name": "web", "backends": [], "agent_check": bad})
        assert refused.value.field == field
    assert not rig.status.config.pools  # nothing was made


def test_the_backend_status_shows_what_its_agent_said(tmp_path):
    rig, _switch = agented(tmp_path, agent=AGENT | {"max_move": 1})  # applied in one step
    agents_say(rig, {"10.0.0.11": "30%", "10.0.0.12": "garbage", "10.0.0.13": "up"})
    tick(rig, 1.0)  # applied at the next interval
    first = rig.status.backend_status("web", "10.0.0.11")
    assert first["agent"] == {"state": "up", "share": 30, "reported": 30, "said": "30%", "last_result": "said '30%'"}
    assert (first["effective_weight"], first["effective_reason"]) == (30, "its agent reports 30% of its weight")
    second = rig.status.backend_status("web", "10.0.0.12")["agent"]
    assert second["share"] == 100 and second["last_result"] == "not understood: 'garbage'"

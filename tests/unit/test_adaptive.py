"""Weights that follow the load the switch measures (least connections over
the hashed table): the policy as a pure function, then through the
controller and the simulator's switch."""

from __future__ import annotations

import math
import random

import pytest

from ryu_dsr.adaptive import adapt, shift, smooth
from ryu_dsr.model import Adaptive, InvalidInput
from ryu_dsr.traffic import Traffic
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import syn, tcp

WEIGHTS = {"a": 100, "b": 100, "c": 100}
POLICY = Adaptive(max_move=0.1, hysteresis=0.25, floor=0.1, min_connections=8)


def model(
    shares: dict[str, float], latency: dict[str, float], rate: float = 3000.0, noise: float = 0.0, rng=None
) -> tuple[dict[str, float], dict[str, float]]:
    """Active connections and new ones a second of each backend (Little's
    law): new connections a second by its share of the effective weight,
    times how long each lasts (counts off by up to ``noise``)."""
    effective = {ip: WEIGHTS[ip] * shares.get(ip, 1.0) for ip in WEIGHTS}
    total = sum(effective.values())
    rates = {ip: rate * effective[ip] / total for ip in WEIGHTS}
    jitter = (lambda: rng.uniform(1 - noise, 1 + noise)) if rng else (lambda: 1.0)
    return {ip: rates[ip] * latency[ip] * jitter() for ip in WEIGHTS}, rates


def test_a_slow_backend_settles_where_least_connections_would_and_gets_its_weight_back():
    shares: dict[str, float] = {}
    slow = {"a": 0.3, "b": 0.1, "c": 0.1}  # a holds each connection three times as long
    steps = []
    for _ in range(40):
        after = adapt(shares, *model(shares, slow), WEIGHTS, POLICY)
        steps.append(shift(shares, after, WEIGHTS))
        shares = after
    assert max(steps) <= POLICY.max_move + 1e-9  # never more than max_move of the weight at once
    assert shares["a"] == pytest.approx(1 / 3, abs=0.02) and shares["b"] == shares["c"] == 1.0, shares
    load, _rates = model(shares, slow)
    assert load["a"] == pytest.approx(load["b"], rel=0.05)  # wlc's balance: equal active connections per weight
    assert sum(1 for step in steps if step) <= 4  # it got there in a few steps and stayed
    well = {"a": 0.1, "b": 0.1, "c": 0.1}
    for _ in range(10):
        shares = adapt(shares, *model(shares, well), WEIGHTS, POLICY)
    assert shares == {"a": 1.0, "b": 1.0, "c": 1.0}  # recovered: all of its configured weight, never above


def test_noise_within_the_hysteresis_moves_nothing_and_a_shed_backend_stays_near_its_share():
    rng = random.Random(7)
    shares: dict[str, float] = {}
    for _ in range(200):  # equal backends, counts off by up to 10 %
        shares = adapt(shares, *model(shares, {"a": 0.1, "b": 0.1, "c": 0.1}, noise=0.1, rng=rng), WEIGHTS, POLICY)
    assert shares == {"a": 1.0, "b": 1.0, "c": 1.0}
    moves, seen = 0, []
    for _ in range(200):  # one three times slower, counts off by up to 5 % (the controller smooths them)
        after = adapt(shares, *model(shares, {"a": 0.3, "b": 0.1, "c": 0.1}, noise=0.05, rng=rng), WEIGHTS, POLICY)
        moves += after != shares
        shares = after
        seen.append(shares["a"])
    assert min(seen[10:]) >= 0.3 and max(seen[10:]) <= 0.4, seen
    assert moves <= 6 and shares["b"] == shares["c"] == 1.0, moves  # the first steps down, then calm


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson count (Knuth's way): how many connections a poll sees open."""
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count, product = count + 1, product * rng.random()
    return count


def counted_as_the_controller_does(
    rng: random.Random,
    shares: dict[str, float],
    held: dict[str, float],
    seen: dict,
    offered: float,
    interval: float,
    polls: int,
    queue: bool = False,
) -> tuple[dict, dict, dict]:
    """One interval of an open load of ``offered`` new connections a second
    spread by the shares, counted as the controller counts: each backend's
    connections open at each of ``polls`` polls (a Poisson count of its rate
    times how long it holds one: ``held``, or as a queue would with
    ``held`` its service time), their mean smoothed with the intervals
    before (``smooth``), its rate a Poisson count over the interval,
    smoothed likewise. The load, the rates and what the load is counted
    over, as ``adapt`` takes them."""
    effective = {ip: WEIGHTS[ip] * shares.get(ip, 1.0) for ip in WEIGHTS}
    total = sum(effective.values())
    load, rates, counted = {}, {}, {}
    for ip in WEIGHTS:
        rate = offered * effective[ip] / total
        time = held[ip]
        if queue:  # a server that takes ``held`` for each connection, one at a time (M/M/1)
            busy = rate * held[ip]
            time = held[ip] / (1 - busy) if busy < 0.95 else held[ip] * 20
        mean = sum(poisson(rng, rate * time) for _ in range(polls)) / polls
        smoothed = seen[ip] = smooth(seen.get(ip), mean, polls, interval)
        new = poisson(rng, rate * interval) / interval
        rates[ip] = seen[(ip, "rate")] = new if (ip, "rate") not in seen else (seen[(ip, "rate")] + new) / 2
        load[ip], counted[ip] = smoothed[0], smoothed[1:]
    return load, rates, counted


def test_a_few_connections_each_make_noisy_counts_that_shed_no_one_and_do_not_hold_back_a_recovery():
    """Equal backends, one or two connections open at a time each, counted
    as the controller does (two polls an interval): no share falls in 200
    intervals; a backend shed to the floor climbs back in a few steps."""
    policy = Adaptive(max_move=0.2, hysteresis=0.25, floor=0.1, min_connections=2)
    equal = dict.fromkeys(WEIGHTS, 0.1)
    for seed in range(5):
        rng, seen = random.Random(seed), {}
        shares: dict[str, float] = {}
        for _ in range(200):
            load, rates, counted = counted_as_the_controller_does(rng, shares, equal, seen, 40, 2, 2)
            shares = adapt(shares, load, rates, WEIGHTS, policy, counted)
            assert shares == dict.fromkeys(WEIGHTS, 1.0), (seed, shares)
        shares, seen, back = {"a": 0.1}, {}, None
        for step in range(25):
            load, rates, counted = counted_as_the_controller_does(rng, shares, equal, seen, 40, 2, 2)
            shares = adapt(shares, load, rates, WEIGHTS, policy, counted)
            if shares["a"] == 1.0:
                back = step
                break
        assert back is not None and back <= 20, (seed, shares)  # nine steps of a tenth, the rest waits on noise


def test_a_weak_backend_under_an_open_load_settles_and_the_table_does_not_flap():
    """One backend of three with a third of the others' capacity (a server
    that takes 0.1 s a connection against 0.033 s, one at a time), 40 new
    connections a second whatever the answers, counted as the controller
    does (five polls an interval). Its share settles near where ``wlc``
    would leave it, and stays: its counts are a connection or two, too few
    to show it slower in one poll, so before the noise was taken over all
    the polls it was counted in, it climbed back whenever not shown slower
    and was shed again: in this model it moved in 75 of 80 intervals."""
    policy = Adaptive(max_move=0.2, hysteresis=0.25, floor=0.1, min_connections=2)
    service = {"a": 0.1, "b": 1 / 30, "c": 1 / 30}
    for seed in range(5):
        rng, seen = random.Random(seed), {}
        shares: dict[str, float] = {}
        history = []
        for _ in range(120):
            load, rates, counted = counted_as_the_controller_does(rng, shares, service, seen, 40, 5, 5, queue=True)
            after = adapt(shares, load, rates, WEIGHTS, policy, counted)
            assert shift(shares, after, WEIGHTS) <= policy.max_move + 1e-9
            shares = after
            history.append(shares["a"])
        settled = history[40:]
        moves = sum(1 for before, after in zip(settled, settled[1:]) if before != after)
        assert moves <= 12, (seed, moves, settled)
        assert 0.15 <= sum(settled) / len(settled) <= 0.5, (seed, settled)  # a third of the CPU: about a third
        assert shares["b"] == shares["c"] == 1.0


def test_too_few_connections_tell_nothing_and_the_floor_holds():
    assert adapt({}, {"a": 5, "b": 0, "c": 0}, {"a": 5, "b": 5, "c": 5}, WEIGHTS, POLICY) == dict.fromkeys(WEIGHTS, 1.0)
    # a shed backend keeps its share through a quiet spell: what was learned under load holds
    quiet = adapt({"a": 0.3}, {"a": 1, "b": 1, "c": 1}, {"a": 1, "b": 1, "c": 1}, WEIGHTS, POLICY)
    assert quiet == {"a": 0.3, "b": 1.0, "c": 1.0}
    shares: dict[str, float] = {}
    for _ in range(100):  # a backend that never finishes a connection
        shares = adapt(shares, {"a": 1000, "b": 10, "c": 10}, {"a": 10, "b": 10, "c": 10}, WEIGHTS, POLICY)
    assert shares["a"] == pytest.approx(POLICY.floor)
    assert shares["b"] == shares["c"] == 1.0


def test_an_adaptive_policy_is_checked_naming_the_field(tmp_path):
    rig = make_rig(tmp_path)
    for bad, field, rule in (
        ({"policy": "random"}, "adaptive.policy", "must be one of: least_connections"),
        ({"max_move": 0}, "adaptive.max_move", "from 0.01 to 1"),
        ({"floor": 2}, "adaptive.floor", "from 0.01 to 1"),
        ({"interval": 0.5}, "adaptive.interval", "from 1 to 3600"),
        ({"speed": 1}, "adaptive.speed", "unknown field"),
    ):
        with pytest.raises(InvalidInput, match=rule) as refused:
            rig.service.create_pool({"name": "web", "backends": [], "adaptive": bad})
        assert refused.value.field == field
    assert not rig.status.config.pools


VIP, VIP_MAC = "10.0.0.100", "02:d5:0a:00:00:64"


def test_through_the_switch_a_backend_that_holds_its_connections_gets_fewer_new_ones(tmp_path):
    """Counted by the switch's rules: connections answered by each backend,
    and closed by the two fast ones; the one that closes none is steered
    away from, in steps, through the handover."""
    from ryu_dsr.flows.pipeline import Table

    rig = make_rig(tmp_path, stats_interval=1)
    switch = rig.connect()
    adaptive = {"interval": 1, "max_move": 0.2, "min_connections": 8}
    backends = [{"ip": ip} for ip in BACKENDS]
    rig.service.create_pool(
        {"name": "web", "backends": backends, "health_check": {"kind": "none"}, "adaptive": adaptive}
    )
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web", "hash": "5tuple"})
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    by_mac = {mac: ip for ip, (mac, _port) in BACKENDS.items()}
    slow = "10.0.0.11"
    port = iter(range(20000, 65000))
    poll = (Table.DECIDE, Table.CHOSEN, Table.REPLIES)
    rig.balancer.traffic_read(1, switch.flow_stats(poll))
    sent = {ip: 0 for ip in BACKENDS}
    for _ in range(12):
        for _ in range(60):
            sport = next(port)
            [out] = switch.send(syn("10.0.0.2", VIP, sport, 80, CLIENT_MAC, VIP_MAC), 1)
            ip = by_mac[out.packet["eth_dst"]]
            sent[ip] += 1
            mac, at = BACKENDS[ip]
            answer = dict(tcp(VIP, "10.0.0.2", 80, sport, mac, CLIENT_MAC), tcp_flags=0x012)
            switch.send(answer, at)
            if ip != slow:  # the fast ones finish their connections; the slow one holds them
                switch.send(dict(tcp(VIP, "10.0.0.2", 80, sport, mac, CLIENT_MAC), tcp_flags=0x011), at)
        rig.clock.now += 1
        rig.balancer.traffic_read(1, switch.flow_stats(poll))
        rig.balancer.tick()
        rig.pass_hold()
    status = rig.status.backend_status("web", slow)
    assert status["effective_weight"] < 60, status
    assert status["effective_reason"].startswith("least connections:")
    assert rig.status.backend_status("web", "10.0.0.12")["effective_weight"] == 100
    late = {ip: 0 for ip in BACKENDS}
    for _ in range(300):
        [out] = switch.send(syn("10.0.0.3", VIP, next(port), 80, CLIENT_MAC, VIP_MAC), 1)
        late[by_mac[out.packet["eth_dst"]]] += 1
    assert late[slow] < 0.6 * late["10.0.0.12"], late


def test_connections_closed_twice_over_do_not_hide_those_open_later(tmp_path):
    """A backend's FIN sent again (a retransmission) closes no second
    connection: after a thousand such, the five it holds open are still
    counted as five (summed over its lifetime they would count as none, and
    the backend would look faster than it is to least connections)."""
    from ryu_dsr.flows.pipeline import Table

    rig = make_rig(tmp_path)
    switch = rig.connect()
    rig.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS]})
    rig.service.create_vip({"name": "www", "ip": VIP, "protocol": "tcp", "port": 80, "pool": "web"})
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    mac, at = BACKENDS["10.0.0.11"]
    poll = (Table.REPLIES,)
    traffic = Traffic()
    now = 0.0
    sport = iter(range(20000, 65000))
    for _ in range(10):
        for _ in range(100):  # answered, and closed: its FIN sent twice
            port = next(sport)
            switch.send(dict(tcp(VIP, "10.0.0.2", 80, port, mac, CLIENT_MAC), tcp_flags=0x012), at)
            for _ in range(2):
                switch.send(dict(tcp(VIP, "10.0.0.2", 80, port, mac, CLIENT_MAC), tcp_flags=0x011), at)
        now += 1
        traffic.read(1, switch.flow_stats(poll), now)
        assert traffic.active(mac) == 0
    for _ in range(5):  # answered, still open
        switch.send(dict(tcp(VIP, "10.0.0.2", 80, next(sport), mac, CLIENT_MAC), tcp_flags=0x012), at)
    traffic.read(1, switch.flow_stats(poll), now + 1)
    assert traffic.active(mac) == 5
    assert traffic.answered(mac) == 1005


def test_a_backend_removed_and_added_again_starts_at_its_full_weight(tmp_path):
    """What least connections learned of a backend goes with it: added
    again (a new server behind the old address), it takes its configured
    weight, not the share the old one was shed to."""
    rig = make_rig(tmp_path)
    rig.connect()
    adaptive = {"interval": 1, "max_move": 0.2, "min_connections": 8}
    rig.service.create_pool(
        {
            "name": "web",
            "backends": [{"ip": ip} for ip in BACKENDS],
            "health_check": {"kind": "none"},
            "adaptive": adaptive,
        }
    )
    rig.resolve_all()
    rig.settle()
    weights = rig.core.backends.weights_now
    weights.shares[("web", "10.0.0.11")] = 0.3  # as the policy leaves a slow backend
    assert rig.status.effective_weight("web", rig.core.config.backend("web", "10.0.0.11")) == 30
    rig.service.delete_backend("web", "10.0.0.11")
    rig.service.add_backend("web", {"ip": "10.0.0.11"})
    rig.resolve_all()
    rig.settle()
    assert rig.status.effective_weight("web", rig.core.config.backend("web", "10.0.0.11")) == 100

"""The history behind the status page's charts: bounded, fed by the
traffic polls and the backends' state changes, read per pool."""

from __future__ import annotations

from ryu_dsr.flows.pipeline import Chosen, Decide, Kind, Replies, Table, owner

from ryu_dsr.history import History
from ryu_dsr.traffic import Counts, Traffic
from tests.conftest import BACKENDS, CLIENT_MAC, make_rig
from tests.simulator import syn

VIP, VIP_MAC = "10.0.0.100", "02:d5:0a:00:00:64"
POLLED = (Table.DECIDE, Table.CHOSEN, Table.REPLIES)


def test_a_drain_shows_as_a_falling_share_and_a_state_change(tmp_path):
    rig = make_rig(tmp_path, stats_interval=5)
    switch = rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.learn(CLIENT_MAC, 1)
    rig.settle()
    port = iter(range(20000, 60000))

    def traffic(n: int) -> None:
        for _ in range(n):
            switch.send(syn("10.0.0.2", VIP, next(port), 80, CLIENT_MAC, VIP_MAC), 1)
        rig.clock.now += 5
        rig.balancer.traffic_read(1, switch.flow_stats(POLLED))

    traffic(0)  # the first poll: the counters' start
    for _ in range(3):
        traffic(60)
    rig.service.patch_backend("web", "10.0.0.12", {"weight": 0})
    rig.settle()
    for _ in range(3):
        traffic(60)
    history = rig.status.history("web")
    samples = {b["ip"]: b["samples"] for b in history["backends"]}
    assert sum(s[1] for ip in BACKENDS for s in samples[ip]) == 360  # every new connection, once
    drained = samples["10.0.0.12"]
    assert drained and all(s[1] > 0 for s in drained) and drained[-1][0] < history["backends"][0]["samples"][-1][0]
    assert -5.0 < samples["10.0.0.11"][-1][0] <= 0  # the newest bucket: the last poll's
    [event] = [e for e in history["events"] if e["to"] == "draining"]
    assert event["backend"] == "10.0.0.12" and event["from"] == "up"
    runs = history["slot_map"]["runs"]
    assert sum(length for _ip, _first, length in runs) == history["slot_map"]["slots"]
    assert "10.0.0.12" not in {ip for ip, _first, _length in runs}
    assert history["switches"][0]["dpid"] == 1 and history["switches"][0]["samples"][-1][1] > 0


def test_rings_keep_the_window_and_touch_only_what_grew():
    history = History(window=60, bucket=5)
    grown = {("backend", "02:00:00:00:00:0b"): Counts(packets=3, new_connections=2), ("vip", 7): Counts(packets=9)}
    for step in range(100):
        history.polled(1000.0 + step * 5, grown if step % 2 else {}, 1, 10, 0)
    assert set(history.backends) == {"02:00:00:00:00:0b"}  # the VIP's growth is not kept
    assert len(history.backends["02:00:00:00:00:0b"]) == 12  # 60 s of 5 s buckets, no more
    assert len(history.switch(1, 1495.0)) == 12
    samples = history.backend("02:00:00:00:00:0b", 1495.0)
    assert len(samples) == 7 and all(-60 <= ago <= 0 for ago, _c, _p in samples)  # 60 s, both ends; no older
    assert {c for _a, c, _p in samples} == {2}


def test_a_change_of_effective_weight_is_an_event(tmp_path):
    rig = make_rig(tmp_path)
    rig.connect()
    rig.setup_web()
    rig.resolve_all()
    rig.service.patch_backend("web", "10.0.0.13", {"weight": 40})
    [event] = [e for e in rig.status.history("web")["events"] if e["from"] == "weight 100"]
    assert (event["backend"], event["to"], event["reason"]) == ("10.0.0.13", "weight 40", "its configured weight")


def test_a_polls_end_walks_the_backends_not_every_vip():
    """At 10,000 VIPs a poll's end (its growth kept, the backends' open
    connections, the charts' samples) touches the backends that grew, not
    every VIP; a flow gone from the switch still starts again from 0."""
    vip_rules = [(Table.DECIDE, Decide.COUNT_SYN, owner(Kind.VIP, uid) << 32, None, None) for uid in range(1, 10001)]
    macs = [f"02:00:00:00:00:{n:02x}" for n in range(1, 4)]
    host = owner(Kind.HOST, 0) << 32
    backend_rules = [(Table.CHOSEN, Chosen.COUNT_SYN, host, mac, None) for mac in macs]
    backend_rules += [(Table.REPLIES, Replies.SYN_ACK, host, mac, None) for mac in macs]
    traffic, history = Traffic(), History(window=60.0, bucket=5.0)

    def poll(now: float, packets: int, rules: list, first: int | None = None) -> None:
        """Every rule at ``packets``, but the first at ``first``."""
        counts = [packets] * len(rules)
        if first is not None:
            counts[0] = first
        traffic.read(1, [(*rule, n, n * 60) for rule, n in zip(rules, counts)], now)
        history.polled(now, traffic.hosts_grown[1], 1, len(rules), 0)

    poll(0.0, 0, vip_rules + backend_rules)
    poll(10.0, 5, vip_rules + backend_rules)
    assert len(traffic.rates[1][0]) == 10000 + 6  # every VIP's rate is there to ask for
    assert set(traffic.hosts_grown[1]) == {(kind, mac) for kind in ("backend", "reply") for mac in macs}
    assert set(history.backends) == set(macs) and traffic.active(macs[0]) == 5
    poll(20.0, 7, vip_rules[1:] + backend_rules)  # VIP 1's rule is gone from the switch
    poll(30.0, 9, vip_rules + backend_rules, first=6)  # made again: its counter starts from 0 (not 5)
    assert traffic.of("vip", 1)["rates"]["packets"] == 0.6 and traffic.of("vip", 2)["rates"]["packets"] == 0.2

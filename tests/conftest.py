"""Shared fixtures: a Balancer wired to in-memory switches, its effects
carried out at once (packet-outs and every step of rules applied to the
simulator's switches)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from ryu_dsr.flows.frames import build_arp
from ryu_dsr.flows.pipeline import Kind, Slots, Table, kind_of, services_mark, slots_mark, uid_of

from ryu_dsr.core import Balancer
from ryu_dsr.effects import Effects
from ryu_dsr.service import Service
from ryu_dsr.settings import Settings
from ryu_dsr.status import Status
from ryu_dsr.store import SqliteStore
from tests.simulator import FakeSwitch

CLIENT_MAC = "02:00:00:00:00:01"
BACKENDS = {
    "10.0.0.11": ("02:00:00:00:00:0b", 2),
    "10.0.0.12": ("02:00:00:00:00:0c", 3),
    "10.0.0.13": ("02:00:00:00:00:0d", 4),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Driven:
    """A balancer as a shell drives it: each event's effects are carried
    out before it returns (other calls and attributes pass through)."""

    def __init__(self, balancer: Balancer, carry_out) -> None:
        self._balancer = balancer
        self._carry_out = carry_out

    def __getattr__(self, name: str):
        value = getattr(self._balancer, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            result = value(*args, **kwargs)
            if isinstance(result, Effects):
                self._carry_out(result)
                return None
            return result

        return call


@dataclass
class Rig:
    core: Balancer
    clock: Clock
    switches: dict[int, FakeSwitch] = field(default_factory=dict)
    sent: list = field(default_factory=list)
    reads: list = field(default_factory=list)  # switches whose flow table the balancer asked to read
    write_fault: Exception | None = None  # set: every write to a switch fails with it (as a broken connection)
    answer_counts: bool = True  # the switches answer the check of a move's slots (False: they stay silent)

    def __post_init__(self) -> None:
        self.balancer = Driven(self.core, self.carry_out)
        self.service = Service(self.core, self.carry_out)
        self.status = Status(self.core)

    def carry_out(self, effects: Effects) -> None:
        for dpid, packet_out in effects.packet_outs:
            self._apply(dpid, [packet_out])
        for dpid in sorted(effects.writes):  # as a shell's writer: steps until in line, a failure resyncs
            try:
                while self.core.switches.pending(dpid):
                    commands = self.core.switches.step(dpid, self.core.rules.rules_of)
                    if self.write_fault is not None:
                        raise self.write_fault
                    if commands:
                        self._apply(dpid, commands)
            except OSError as error:
                self.carry_out(self.core.write_failed(dpid, f"{type(error).__name__}: {error}"))
        for dpid, pool_uid in sorted(effects.counts):  # asked once the writes went (the hold), as the shell does
            switch = self.switches.get(dpid)
            if switch is not None and self.answer_counts:
                self.carry_out(self.core.slots_counted(dpid, pool_uid, switch.slot_counts(pool_uid)))
        self.reads += sorted(effects.reads)

    def _apply(self, dpid: int, commands: list) -> None:
        self.sent.append((dpid, list(commands)))
        switch = self.switches.get(dpid)
        if switch is not None:
            switch.apply(commands)

    def connect(
        self, dpid: int = 1, mode: str = "ovs", ports: tuple[int, ...] = (), port_names: dict[int, str] | None = None
    ) -> FakeSwitch:
        """A switch connects; with ``ports`` it says which it has (a fabric:
        new ports wait for discovery before they flood), with ``port_names``
        their names."""
        switch = self.switches.setdefault(dpid, FakeSwitch(list(ports) or [1, 2, 3, 4, 5]))
        self.balancer.switch_connected(dpid, mode, switch.installed(), ports=ports, port_names=port_names)
        return switch

    def in_use(self, dpid: int = 1) -> None:
        """Every slot rule on the switch carried a packet, as in a service
        in use: the check of a move then hands each moved slot over (a
        slot that carried none would move at once)."""
        switch = self.switches[dpid]
        for rule in switch.rules(Table.SLOTS):
            if rule.priority == Slots.SLOT and kind_of(rule.cookie) == Kind.POOL:
                switch.counts.setdefault(rule.key, [0, 0])[0] += 1

    def answer_arp(self, ip: str, mac: str, port: int, dpid: int = 1) -> None:
        probe = self.balancer.settings.probe_mac
        self.balancer.packet_in(dpid, port, build_arp(2, mac, probe, mac, ip, probe, "0.0.0.0"))

    def learn(self, mac: str, port: int, dpid: int = 1) -> None:
        """A frame from ``mac`` reached the controller (an L2 table miss)."""
        frame = bytes.fromhex("ffffffffffff" + mac.replace(":", "") + "0800") + bytes(46)
        self.balancer.packet_in(dpid, port, frame)

    def settle(self) -> None:
        """Let every handover window pass: the steady state. Every flow the
        controller keeps for a switch is named by its cookie as the owner
        that made it (the switch's index keeps no owner per flow: after a
        restart the cookie is all there is)."""
        settings = self.balancer.settings
        self.clock.now += max(settings.handover_window, settings.udp_handover_window) + 1
        self.resolve_all()  # the backends answered their checks meanwhile
        self.balancer.tick()
        for switch in self.core.switches.values():
            index = switch.rules
            for who, keys in index.owner_keys.items():
                named = {key: index.owner(key) for key in keys}
                assert all(owner == who for owner in named.values()), (who, named)
            # Each pool's marks, computed now, are what the switch holds: a
            # restart would find every pool's flows vouched for; the sums of
            # slot cookies kept as flows come and go are the switch's own.
            held = self.switches[switch.dpid].installed() if switch.dpid in self.switches else index.installed
            sums: dict[int, int] = {}
            for cookie in held.values():
                if kind_of(cookie) in (Kind.POOL, Kind.HANDOVER):
                    sums[uid_of(cookie)] = (sums.get(uid_of(cookie), 0) + cookie) & ((1 << 64) - 1)
            assert sums == {
                uid: index.slot_sum(uid) for uid in sums | index.slot_sums if index.slot_sum(uid) or uid in sums
            }
            for pool in self.core.config.pools.values() if switch.mode == "ovs" and not switch.transit else ():
                marks = [
                    m
                    for who in (slots_mark(pool.uid), services_mark(pool.uid))
                    for m in self.core.rules.rules_of(switch, who)
                ]
                assert {m.key: m.cookie for m in marks} == {m.key: index.installed.get(m.key) for m in marks}, pool
                # and its handover rules (one set per backend) are what it would compute now
                moved = self.core.rules.rules_of(switch, (Kind.HANDOVER, pool.uid))
                assert {r.key: r.cookie for r in moved} == {r.key: held.get(r.key) for r in moved}, pool

    def pass_hold(self) -> None:
        """Let the hold of the slots that just moved pass (new connections
        follow the slot's new backend from then on)."""
        from ryu_dsr.slots import HOLD

        self.clock.now += HOLD
        self.resolve_all()
        self.balancer.tick()

    def resolve_all(self, dpid: int = 1) -> None:
        for ip, (mac, port) in BACKENDS.items():
            self.answer_arp(ip, mac, port, dpid)

    def setup_web(self, hash_fields: str = "5tuple", protocol: str = "tcp", port: int | None = 80) -> None:
        self.service.create_pool({"name": "web", "backends": [{"ip": ip} for ip in BACKENDS]})
        self.service.create_vip(
            {"name": "web", "ip": "10.0.0.100", "protocol": protocol, "port": port, "pool": "web", "hash": hash_fields}
        )


def make_rig(tmp_path, clock: Clock | None = None, **settings) -> Rig:
    clock = clock or Clock()
    values = {"state_file": str(tmp_path / "state.db")}
    values.update(settings)
    balancer = Balancer(Settings.from_mapping(values), SqliteStore(values["state_file"]), clock=clock, wall=clock)
    return Rig(balancer, clock)


@pytest.fixture
def rig(tmp_path) -> Rig:
    return make_rig(tmp_path)

"""What the controller knows of the connected switches: each one's mode,
ports and learned hosts, the rules it holds (``RuleSync``), whether its
writes are failing; and which switches may connect at all."""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ryu_dsr.flows.pipeline import Kind, Owner, kind_of, uid_of
from ryu_dsr.flows.rules import Command, FlowAdd, FlowDelete, FlowDeleteByCookie, Rule
from ryu_dsr.sync import RuleSync

LOG = logging.getLogger("ryu_dsr")
REFUSAL_LOG_SECONDS = 60.0  # a refused switch keeps reconnecting: logged once a minute


@dataclass
class Switch:
    dpid: int
    mode: str  # 'ovs' or 'plain'
    description: str = ""
    ports_down: set[int] = field(default_factory=set)
    hosts: OrderedDict[str, int] = field(default_factory=OrderedDict)  # mac -> port, oldest first
    rules: RuleSync = field(default_factory=RuleSync)
    failure: str | None = None  # why the last write failed, until a resync succeeds
    resyncing: bool = False
    errors: int = 0  # writes that failed and OpenFlow errors
    resyncs: int = 0
    flow_mods: int = 0  # flow adds and deletes sent since it connected
    bundles: int = 0  # steps of flow changes sent as one bundle each (Open vSwitch)
    kept: set = field(default_factory=set)  # owners of rules from a lost state, left alone until adopted
    transit: bool = False  # every port a link: no VIP rules here
    packet_ins: Counter = field(default_factory=Counter)  # reason -> frames the switch sent the controller
    tracking: str = "learn"  # how its handovers keep new TCP connections: 'conntrack' or 'learn'
    # whether it answers IPv6 Neighbor Solicitations itself (Open vSwitch's nd_reserved and
    # nd_options_type, userspace datapath only); False once it refused them: the controller answers
    neighbour_answers: bool = True
    tracking_reason: str = ""  # why
    gre_port: int | None = None  # its GRE port (the gre_port setting names it), for gre backends

    def learn(self, mac: str, port: int, max_hosts: int) -> list[str]:
        """Learn ``mac`` on ``port``: the MACs whose forwarding changed
        (this one, and any evicted to keep ``max_hosts``)."""
        if self.hosts.get(mac) == port:
            self.hosts.move_to_end(mac)
            return []
        self.hosts[mac] = port
        self.hosts.move_to_end(mac)
        changed = [mac]
        while len(self.hosts) > max_hosts:
            changed.append(self.hosts.popitem(last=False)[0])
        return changed

    def link_up(self, port: int | None) -> bool:
        return port not in self.ports_down

    @property
    def in_line(self) -> bool:
        """It holds every change made so far."""
        return not (self.rules.pending or self.resyncing or self.failure)


class Switches(dict[int, Switch]):
    """The connected switches by datapath id."""

    def __init__(self, allowed: set[int] | None, clock: Callable[[], float]) -> None:
        super().__init__()
        self.allowed = allowed  # datapath ids that may connect; None: any
        self.clock = clock
        self.refused_at: dict[int, float] = {}  # dpid -> when its refusal was last logged
        self.refused = 0
        self.write_failures = 0
        self.openflow_errors = 0

    def admits(self, dpid: int) -> bool:
        """Whether a switch that connects is taken (``switches``); a refusal
        is counted, and logged once a minute per switch."""
        if self.allowed is None or dpid in self.allowed:
            return True
        self.refused += 1
        now = self.clock()
        if now - self.refused_at.get(dpid, -REFUSAL_LOG_SECONDS) >= REFUSAL_LOG_SECONDS:
            self.refused_at[dpid] = now
            LOG.warning("switch %016x refused: not in dsr.switches; its connection is closed", dpid)
        return False

    @property
    def plain(self) -> bool:
        """Whether a switch in plain OpenFlow 1.3 mode is connected (pools then keep a plain slot table too)."""
        return any(switch.mode == "plain" for switch in self.values())

    def link_up(self, dpid: int | None, port: int | None) -> bool:
        """Whether a switch port is up; a switch not connected says nothing against it."""
        switch = self.get(dpid) if dpid is not None else None
        return switch is None or switch.link_up(port)

    def mark(self, owners: Iterable[Owner]) -> set[int]:
        """These owners' rules must be computed again on every switch; the
        switches that now have work."""
        owners = set(owners)
        if not owners:
            return set()
        for switch in self.values():
            switch.rules.mark(owners)
        return self.busy()

    def busy(self) -> set[int]:
        return {dpid for dpid, switch in self.items() if switch.rules.pending}

    def delete_pins(self, uids: set[int]) -> set[int]:
        """Delete these backends' pins on every switch (after the slot rules
        that stop making new ones); the switches that now have work."""
        if not uids:
            return set()
        for switch in self.values():
            switch.rules.pins_to_delete |= uids
        return set(self)

    # -- writing --

    def pending(self, dpid: int) -> bool:
        switch = self.get(dpid)
        return switch is not None and switch.rules.pending and not switch.resyncing

    def step(self, dpid: int, rules_of: Callable[[Switch, Owner], list[Rule]]) -> list[Command]:
        """The next step of commands that bring one switch in line: only the
        owners marked dirty are computed (``rules_of``)."""
        switch = self.get(dpid)
        if switch is None:
            return []
        commands = switch.rules.step(lambda who: rules_of(switch, who))
        switch.flow_mods += sum(1 for c in commands if isinstance(c, (FlowAdd, FlowDelete, FlowDeleteByCookie)))
        return commands

    def failed(self, dpid: int, reason: str, refused: bool = False) -> bool:
        """A write failed (``refused``: the switch refused a message):
        counted; True when the switch must now be read again (a resync)."""
        switch = self.get(dpid)
        if switch is None:
            return False
        switch.errors += 1
        switch.failure = reason
        if refused:
            self.openflow_errors += 1
        else:
            self.write_failures += 1
        if switch.resyncing:
            return False
        switch.resyncing = True
        switch.resyncs += 1
        LOG.warning("switch %016x: resync from its flow table", dpid)
        return True

    def writable(self, dpid: int) -> bool:
        """Taken, not being read again, its last write not failed: what is
        written to it now holds."""
        switch = self.get(dpid)
        return switch is not None and not switch.resyncing and not switch.failure

    def failing(self, dpid: int) -> bool:
        switch = self.get(dpid)
        return switch is not None and bool(switch.failure)

    def flow_mods(self, dpid: int) -> int:
        switch = self.get(dpid)
        return switch.flow_mods if switch else 0

    def counts_traffic(self, dpid: int) -> bool:
        """Whether the switch holds counting rules (Open vSwitch mode)."""
        switch = self.get(dpid)
        return switch is not None and switch.mode == "ovs"

    def unconfirmed(self) -> dict[int, str]:
        """Switches whose rules are not yet in line with the desired state,
        and why (for a REST change that could not be confirmed)."""
        out = {}
        for dpid, switch in self.items():
            if switch.failure:
                out[dpid] = f"its last write failed ({switch.failure}); resyncing"
            elif switch.rules.pending or switch.resyncing:
                out[dpid] = "still writing"
        return out

    def progress(self) -> tuple:
        """Changes as writers make progress (a REST change waits while it does)."""
        return tuple((switch.flow_mods, switch.rules.rules_computed) for switch in self.values())


def lost_state(installed: dict[tuple, int], held: Iterable[Owner], desired: set[Owner]) -> tuple[set[Owner], int]:
    """The VIP, address, guard, slot and mark owners a switch holds rules of
    (``held``: the owners its flows name) that the desired state does not
    name (somebody's lost state), and the highest object id among the
    flows (new objects must not take theirs)."""
    lost = (Kind.VIP, Kind.POOL, Kind.HANDOVER, Kind.ADDRESS, Kind.GUARD, Kind.MARK)
    kept = {who for who in held if who[0] in lost and who not in desired}
    counted = {int(kind) for kind in lost} | {int(Kind.PIN)}
    highest = max((uid_of(cookie) for cookie in installed.values() if kind_of(cookie) in counted), default=0)
    return kept, highest

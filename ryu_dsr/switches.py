"""What the controller knows of one connected switch: its mode, its ports,
the hosts learned behind them, and the rules it holds (``RuleSync``)."""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from ryu_dsr.sync import RuleSync


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
    kept: set = field(default_factory=set)  # owners of rules from a lost state, left alone until adopted
    transit: bool = False  # every port a link: no VIP rules here
    packet_ins: Counter = field(default_factory=Counter)  # reason -> frames the switch sent the controller

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

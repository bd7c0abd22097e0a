"""The L2 fabric as the controller runs it: the switches' links and edge
ports (``fabric.Fabric``, a networkx graph), the hosts learned at the edge,
new ports held from flooding until discovery could see them, and the
discovery frames themselves. Pure: time comes in; packet-outs and what
changed go out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ryu_dsr.fabric import Fabric, discovery_frame, load_links
from ryu_dsr.flows.rules import PacketOut
from ryu_dsr.switches import Switch

LOG = logging.getLogger("ryu_dsr")
DISCOVERY_SECONDS = 1.0  # discovery frames out of every port of every switch, this often


class L2:
    def __init__(self, settings: Any, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.clock = clock
        self.fabric = Fabric()  # switches and the links between them
        if settings.topology_file:
            self.fabric.declare(load_links(settings.topology_file))
        self.host_at: dict[str, tuple[int, int]] = {}  # MAC -> (switch, edge port) where it was learned
        self.flood_holds: dict[int, float] = {}  # dpid -> when its newest ports may flood
        self.discovered_at = -DISCOVERY_SECONDS  # when discovery frames last went out

    # -- switches and ports --

    def switch_up(self, switch: Switch, ports: set[int]) -> list[PacketOut]:
        """A switch connected with these ports up; its discovery frames."""
        self.fabric.switch_up(switch.dpid, ports, self.clock())
        self._hold_flooding(switch.dpid)
        return self.discovery(switch)

    def switch_down(self, dpid: int) -> bool:
        """A switch left; whether the fabric's links changed."""
        for mac in [mac for mac, (on, _port) in self.host_at.items() if on == dpid]:
            del self.host_at[mac]
        self.flood_holds.pop(dpid, None)
        return bool(self.fabric.switch_down(dpid))

    def port_up(self, switch: Switch, port: int) -> list[PacketOut]:
        self.fabric.port_up(switch.dpid, port, self.clock())
        self._hold_flooding(switch.dpid)
        return self.discovery(switch)

    def port_down(self, switch: Switch, port: int) -> tuple[list[str], bool]:
        """A port went down: the MACs learned behind it (forgotten), and
        whether the fabric's links changed."""
        forgotten = [mac for mac, on in switch.hosts.items() if on == port]
        for mac in forgotten:
            self.forget_host(switch, mac)
        return forgotten, bool(self.fabric.port_down(switch.dpid, port))

    def _hold_flooding(self, dpid: int) -> None:
        """New ports flood only after a discovery round could show them to
        be links: the switch's flood rule is rewritten when the hold ends."""
        until = self.fabric.held_until(dpid)
        if until is not None and until > self.clock():
            self.flood_holds[dpid] = max(until, self.flood_holds.get(dpid, 0.0))

    def holds_flooding(self, dpid: int) -> bool:
        """Flooding is by explicit ports once the switch is in a fabric, or
        while a port of it is new (it may be a link not yet seen)."""
        return self.fabric.in_fabric(dpid) or dpid in self.flood_holds

    def flood_out(self, dpid: int) -> int | str | tuple[int, ...]:
        """Where a frame the controller sends to every host goes: every port
        of a switch alone, the edge ports of a switch in a fabric (the other
        switches send their own copy)."""
        if not self.fabric.in_fabric(dpid):
            return "flood"
        ports = set(self.fabric.flood_ports(dpid, self.clock()))
        return tuple(sorted(ports & self.fabric.edge_ports(dpid)))

    # -- discovery --

    def discovery(self, switch: Switch) -> list[PacketOut]:
        """A discovery frame out of every port of the switch: the switch at
        the other end of a link hands it back (packet-in)."""
        return [
            PacketOut(discovery_frame(self.settings.probe_mac, switch.dpid, port), port)
            for port in sorted(self.fabric.ports.get(switch.dpid, {}))
        ]

    def link_seen(self, sender: tuple[int, int], dpid: int, port: int) -> bool:
        """A discovery frame from ``sender`` (switch, port) came in at (dpid,
        port); True when the link is new."""
        if self.fabric.link_seen(*sender, dpid, port, self.clock()):
            LOG.info("link: switch %016x port %d - switch %016x port %d", *sender, dpid, port)
            return True
        return False

    def tick(self, switches: Mapping[int, Switch]) -> tuple[list[tuple[int, PacketOut]], bool, list[int]]:
        """Discovery frames when a round is due; whether links timed out;
        the switches whose flooding hold ended now."""
        now = self.clock()
        frames: list[tuple[int, PacketOut]] = []
        changed = False
        if now - self.discovered_at >= DISCOVERY_SECONDS:
            self.discovered_at = now
            for switch in switches.values():
                frames += [(switch.dpid, frame) for frame in self.discovery(switch)]
            if self.fabric.expire(now):
                LOG.info("links not seen for %.1f s are gone", self.fabric.link_timeout)
                changed = True
        released = []
        for dpid, until in list(self.flood_holds.items()):
            if until <= now and dpid in switches:
                del self.flood_holds[dpid]
                released.append(dpid)
        return frames, changed, released

    # -- hosts --

    def learn(self, switch: Switch, mac: str, port: int, switches: Mapping[int, Switch]) -> list[str]:
        """A frame from ``mac`` came in at ``port``: the MACs whose
        forwarding changed (this one, those evicted to keep ``max_hosts``).
        Multicast sources and the controller's own probes are not hosts."""
        if int(mac[:2], 16) & 1 or mac == self.settings.probe_mac:
            return []
        changed = switch.learn(mac, port, self.settings.max_hosts)
        for each in changed:
            if each in switch.hosts:
                before = self.host_at.get(each)
                self.host_at[each] = (switch.dpid, switch.hosts[each])
                moved_from = switches.get(before[0]) if before and before[0] != switch.dpid else None
                if moved_from is not None:  # the host moved to another switch
                    moved_from.hosts.pop(each, None)
            elif self.host_at.get(each, (None,))[0] == switch.dpid:
                del self.host_at[each]
        return changed

    def forget_host(self, switch: Switch, mac: str) -> None:
        switch.hosts.pop(mac, None)
        if self.host_at.get(mac, (None,))[0] == switch.dpid:
            del self.host_at[mac]

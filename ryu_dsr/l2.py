"""The L2 fabric as the controller runs it: the switches' links and edge
ports (``fabric.Fabric``, a networkx graph), the hosts learned at the edge,
new ports held from flooding until discovery could see them, the discovery
frames themselves (sealed: ``discovery.Discovery``), the ports' roles and
the ports held down for flapping (``flaps.Damping``). Pure: time comes in;
packet-outs and what changed go out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from ryu_dsr.discovery import REFUSALS, Discovery
from ryu_dsr.fabric import Fabric, load_links, parse_port_roles
from ryu_dsr.flaps import Damping
from ryu_dsr.flows.rules import PacketOut
from ryu_dsr.switches import Switch

LOG = logging.getLogger("ryu_dsr")
DISCOVERY_SECONDS = 1.0  # discovery frames out of every port of every switch, this often


class L2:
    def __init__(self, settings: Any, clock: Callable[[], float], wall: Callable[[], float], key: bytes) -> None:
        self.settings = settings
        self.clock = clock
        self.fabric = Fabric()  # switches and the links between them
        if settings.topology_file:
            self.fabric.declare(load_links(settings.topology_file))
        self.fabric.pinned = parse_port_roles(settings.port_roles, "dsr.port_roles")
        self.sealed = Discovery(key, settings.probe_mac, wall)
        self.damping = Damping()
        self.roles: dict[tuple[int, int], str] = {}  # (dpid, port) -> its role when last told (not unknown)
        self.role_changes = 0
        self.host_frames_on_links = 0  # frames from hosts not known elsewhere that came in at a link port
        self.told: set[tuple[str, int, int]] = set()  # (what, dpid, port) already logged as a warning
        self.port_macs: dict[str, tuple[int, int]] = {}  # the switches' own ports' MACs -> (dpid, port)
        self.host_at: dict[str, tuple[int, int]] = {}  # MAC -> (switch, edge port) where it was learned
        self.flood_holds: dict[int, float] = {}  # dpid -> when its newest ports may flood
        self.discovered_at = -DISCOVERY_SECONDS  # when discovery frames last went out

    # -- switches and ports --

    def switch_up(self, switch: Switch, ports: set[int], macs: Mapping[int, str]) -> list[PacketOut]:
        """A switch connected with these ports up (``macs``: every port's
        own MAC address); its discovery frames."""
        for port, mac in macs.items():
            self.port_mac(switch.dpid, port, mac)
        held = {port for port in ports if self.damping.is_held((switch.dpid, port))}
        for port in held:
            self.damping.held[(switch.dpid, port)] = True
        self.fabric.switch_up(switch.dpid, ports - held, self.clock())
        self._hold_flooding(switch.dpid)
        return self.discovery(switch)

    def switch_down(self, dpid: int) -> bool:
        """A switch left; whether the fabric's links changed."""
        for mac in [mac for mac, (on, _port) in self.host_at.items() if on == dpid]:
            del self.host_at[mac]
        self.flood_holds.pop(dpid, None)
        self.sealed.forget(dpid)
        for mac in [mac for mac, end in self.port_macs.items() if end[0] == dpid]:
            del self.port_macs[mac]
        for end in [end for end in self.roles if end[0] == dpid]:
            del self.roles[end]
        return bool(self.fabric.switch_down(dpid))

    def port_mac(self, dpid: int, port: int, mac: str) -> None:
        """A switch port's own MAC address: frames from it (the kernel's
        IPv6 chatter on a port that is a network interface: router
        solicitations, MLD, duplicate address detection) come from the
        switch at the other end of a link, not from a host."""
        self.port_macs[mac.lower()] = (dpid, port)

    def port_up(self, switch: Switch, port: int) -> list[PacketOut]:
        """A port came up: its discovery frames, none while it is held down."""
        if self.damping.is_held((switch.dpid, port)):
            self.damping.held[(switch.dpid, port)] = True
            return []
        self.fabric.port_up(switch.dpid, port, self.clock())
        self._hold_flooding(switch.dpid)
        return self.discovery(switch)

    def port_down(self, switch: Switch, port: int) -> tuple[list[str], bool]:
        """A port went down: the MACs learned behind it (forgotten), and
        whether the fabric's links changed. A flap of the port."""
        forgotten = [mac for mac, on in switch.hosts.items() if on == port]
        for mac in forgotten:
            self.forget_host(switch, mac)
        end = (switch.dpid, port)
        self.told = {told for told in self.told if told[1:] != end}  # a new cable: tell again
        if self.damping.is_held(end):
            self.damping.held[end] = False
            return forgotten, False
        if self.damping.flap(end, self.clock()):
            self._held(end)
        changed = bool(self.fabric.port_down(switch.dpid, port))
        self._role(end)
        return forgotten, changed

    def _held(self, end: tuple[int, int]) -> None:
        LOG.warning(
            "switch %016x port %d flaps: held down (no link, no flooding, no hosts) until about %.0f s from now",
            *end,
            self.damping.until(end, self.clock()) - self.clock(),
        )

    def _hold_flooding(self, dpid: int) -> None:
        """New ports flood only after a discovery round could show them to
        be links: the switch's flood rule is rewritten when the hold ends."""
        until = self.fabric.held_until(dpid)
        if until is not None and until > self.clock():
            self.flood_holds[dpid] = max(until, self.flood_holds.get(dpid, 0.0))

    def holds_flooding(self, dpid: int) -> bool:
        """Flooding is by explicit ports once the switch is in a fabric, or
        while a port of it is new (it may be a link not yet seen), or held
        down."""
        return (
            self.fabric.in_fabric(dpid) or dpid in self.flood_holds or any(end[0] == dpid for end in self.damping.held)
        )

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
            PacketOut(self.sealed.frame(switch.dpid, port), port)
            for port in sorted(self.fabric.ports.get(switch.dpid, {}))
        ]

    def frame_in(self, dpid: int, port: int, data: bytes) -> tuple[bool, list[PacketOut]]:
        """A discovery frame came in at (dpid, port): whether the fabric's
        links changed, and the frame to send back out of the port when only
        one way of the link is heard yet (so both ends report it at once).
        A frame that fails its checks, or would make a link of a host port,
        is refused, counted and logged."""
        sender = self.sealed.check(data)  # counts its own refusals
        if isinstance(sender, str):
            self._refused(sender, dpid, port)
            return False, []
        if self.damping.is_held(sender) or self.damping.is_held((dpid, port)):
            verdict = "held_down"
        else:
            verdict = self.fabric.link_seen(*sender, dpid, port, self.clock())
        if verdict in ("held_down", "unknown_switch", "host_port"):
            self.sealed.refused[verdict] += 1
            self._refused(verdict, dpid, port, sender)
            return False, []
        self.sealed.accepted += 1
        if verdict == "new":
            LOG.info("link: switch %016x port %d - switch %016x port %d (heard both ways)", *sender, dpid, port)
            self._role(sender)
            self._role((dpid, port))
            return True, []
        if verdict == "one_way":  # heard one way: a frame back at once, so both ends report the link now
            return False, [PacketOut(self.sealed.frame(dpid, port), port)]
        return False, []

    def _refused(self, reason: str, dpid: int, port: int, sender: tuple[int, int] | None = None) -> None:
        """A warning the first time a port refuses frames for a reason."""
        if (reason, dpid, port) in self.told:
            return
        self.told.add((reason, dpid, port))
        named = f" naming switch {sender[0]:016x} port {sender[1]}" if sender else ""
        LOG.warning(
            "discovery frame refused at switch %016x port %d%s: %s (counted in /v1/topology; logged once per port)",
            dpid,
            port,
            named,
            reason,
        )

    def _role(self, end: tuple[int, int]) -> None:
        """Log a port's change of role."""
        role = self.fabric.role(*end) if end[1] in self.fabric.ports.get(end[0], {}) else "unknown"
        before = self.roles.get(end, "unknown")
        if role == before:
            return
        self.role_changes += 1
        if role == "unknown":
            del self.roles[end]
        else:
            self.roles[end] = role
        log = LOG.warning if {before, role} == {"host", "link"} else LOG.info
        log("switch %016x port %d: role %s -> %s", *end, before, role)

    def tick(self, switches: Mapping[int, Switch]) -> tuple[list[tuple[int, PacketOut]], bool, list[int]]:
        """Discovery frames when a round is due; whether links timed out or
        held ports came back; the switches whose flooding hold ended now."""
        now = self.clock()
        frames: list[tuple[int, PacketOut]] = []
        changed = False
        if now - self.discovered_at >= DISCOVERY_SECONDS:
            self.discovered_at = now
            for end, up in self.damping.release(now):
                LOG.info("switch %016x port %d is quiet again: %s", *end, "back in the fabric" if up else "still down")
                if up and end[0] in switches:
                    self.fabric.port_up(*end, now)
                    self._hold_flooding(end[0])
                    changed = True
            for switch in switches.values():
                frames += [(switch.dpid, frame) for frame in self.discovery(switch)]
            gone = self.fabric.expire(now)
            if gone:
                LOG.info("links not heard both ways for %.1f s are gone", self.fabric.link_timeout)
                changed = True
            for link in gone:  # a link no longer heard flapped at both ends
                for end in ((link[0], link[1]), (link[2], link[3])):
                    if self.damping.flap(end, now):
                        self._held(end)
                        self.damping.held[end] = True
                        self.fabric.port_down(*end)
                    self._role(end)
        released = []
        for dpid, until in list(self.flood_holds.items()):
            if until <= now and dpid in switches:
                del self.flood_holds[dpid]
                released.append(dpid)
        return frames, changed, released

    def ports_of(self, dpid: int) -> dict:
        """A switch's ports for the topology view: roles (other than
        unknown), pinned ones, held down ones with when they come back."""
        now = self.clock()
        return {
            "roles": {str(port): role for (on, port), role in sorted(self.roles.items()) if on == dpid},
            "pinned": {str(port): role for (on, port), role in sorted(self.fabric.pinned.items()) if on == dpid},
            "held_down": {
                str(port): round(self.damping.until((on, port), now) - now, 1)
                for (on, port) in sorted(self.damping.held)
                if on == dpid
            },
        }

    def discovery_counts(self) -> dict:
        return {
            "accepted": self.sealed.accepted,
            "refused": {reason: self.sealed.refused[reason] for reason in REFUSALS},
            "role_changes": self.role_changes,
            "host_frames_on_links": self.host_frames_on_links,
            "flaps": self.damping.flaps,
            "held_down": self.damping.holds,
        }

    # -- hosts --

    def learn(self, switch: Switch, mac: str, port: int, switches: Mapping[int, Switch]) -> list[str]:
        """A frame from ``mac`` came in at ``port``: the MACs whose
        forwarding changed (this one, those evicted to keep ``max_hosts``).
        Multicast sources, the controller's own probes and the switches'
        own ports are not hosts."""
        if int(mac[:2], 16) & 1 or mac == self.settings.probe_mac or mac in self.port_macs:
            return []
        end = (switch.dpid, port)
        if self.damping.is_held(end):
            return []
        if not self.fabric.learns(*end):
            if mac not in self.host_at:
                self.host_frames_on_links += 1
                if ("host_on_link", *end) not in self.told:
                    self.told.add(("host_on_link", *end))
                    LOG.warning("switch %016x port %d is a link but a frame from unknown host %s came in", *end, mac)
            return []
        if self.fabric.host_seen(*end):
            self._role(end)
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

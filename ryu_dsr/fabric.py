"""The fabric: switches, the links between them and the edge ports where
hosts attach, in one networkx graph. Pure: time comes in, answers go out.

Links are found by the controller's own discovery frames (each switch sends
one out of every port; the switch at the other end hands it back with its
own datapath id and port; ``discovery.py`` makes and checks them), or
declared in a static file. A link is believed only when frames have come
both ways over it, and never on a port where hosts were seen: each port has
a role, ``host`` (hosts seen there, until the port goes down) or ``link``
(a link is believed there), or an operator pins it (``port_roles``). From
the graph:

- ``next_port(at, to)``: the port a switch forwards out of towards another
  switch, on a shortest path (ties broken by datapath id, so every switch
  agrees);
- ``flood_ports(dpid)``: where broadcast and unknown destinations go: the
  switch's edge ports and its links on a spanning tree of the graph, so
  flooding never goes round a loop;
- ``transit(dpid)``: a switch whose every port is a link (a spine) takes no
  client traffic in and holds no VIP or slot rule.

A port floods only once it has been probed for ``hold`` seconds without
showing a link: before that it could be a link not yet seen, and flooding
on it could close a loop.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import networkx

from ryu_dsr.model import InvalidInput

ROLES = ("host", "link")  # what a port can be pinned as

Link = tuple[int, int, int, int]  # (dpid, port, dpid, port), lower dpid first


def link_key(a: int, pa: int, b: int, pb: int) -> Link:
    return (a, pa, b, pb) if (a, pa) <= (b, pb) else (b, pb, a, pa)


@dataclass
class Fabric:
    hold: float = 1.0  # seconds a new port is probed before it floods
    link_timeout: float = 3.5  # a discovered link not seen for this long is gone
    static: bool = False  # links come from a file, not from discovery
    graph: networkx.MultiGraph = field(default_factory=networkx.MultiGraph)
    ports: dict[int, dict[int, float]] = field(default_factory=dict)  # dpid -> port -> since when it is up
    seen: dict[Link, float] = field(default_factory=dict)  # link -> when it was last seen
    # (sender dpid, port, receiver dpid, port) -> when a frame last came that way
    heard: dict[Link, float] = field(default_factory=dict)
    pinned: dict[tuple[int, int], str] = field(default_factory=dict)  # (dpid, port) -> role an operator set
    hosts_seen: set[tuple[int, int]] = field(default_factory=set)  # ports where hosts were seen since up
    declared: set[Link] = field(default_factory=set)  # static links
    version: int = 0  # grows with every change of ports or links (callers cache what they derive)
    _paths: dict[int, dict[int, int]] | None = None  # cache: destination -> switch -> port towards it
    _tree: set[Link] | None = None
    _link_ports: dict[int, set[int]] | None = None  # cache: switch -> its ports that are links

    # ---------------------------------------------------------------- state

    def switch_up(self, dpid: int, ports: set[int], now: float) -> None:
        self.ports[dpid] = dict.fromkeys(ports, now)
        self.graph.add_node(dpid)
        for link in self.declared:
            if dpid in (link[0], link[2]) and link[0] in self.ports and link[2] in self.ports:
                self._add(link)
        self._changed()

    def switch_down(self, dpid: int) -> list[Link]:
        """The links that went with the switch."""
        self.ports.pop(dpid, None)
        self.hosts_seen = {end for end in self.hosts_seen if end[0] != dpid}
        self.heard = {way: when for way, when in self.heard.items() if dpid not in (way[0], way[2])}
        gone = [link for link in self.links() if dpid in (link[0], link[2])]
        for link in gone:
            self._remove(link)
        if dpid in self.graph:
            self.graph.remove_node(dpid)
        self._changed()
        return gone

    def port_up(self, dpid: int, port: int, now: float) -> None:
        if dpid in self.ports and port not in self.ports[dpid]:
            self.ports[dpid][port] = now
            self._changed()

    def port_down(self, dpid: int, port: int) -> list[Link]:
        """The port stops (its link too, at once: no wait for a timeout)."""
        if dpid in self.ports:
            self.ports[dpid].pop(port, None)
        self.hosts_seen.discard((dpid, port))
        for way in [w for w in self.heard if (dpid, port) in ((w[0], w[1]), (w[2], w[3]))]:
            del self.heard[way]
        gone = [link for link in self.links() if (dpid, port) in ((link[0], link[1]), (link[2], link[3]))]
        for link in gone:
            self._remove(link)
        self._changed()
        return gone

    def link_seen(self, a: int, pa: int, b: int, pb: int, now: float) -> str:
        """A checked discovery frame from (a, pa) came in at (b, pb). What
        it did: ``new`` (the link is believed now: frames came both ways),
        ``known``, ``one_way`` (the other way is not heard yet), or why it
        is refused (``unknown_switch``, ``host_port``); ``static`` when the
        links come from a file."""
        if self.static:
            return "static"
        if a == b or a not in self.ports or b not in self.ports:
            return "unknown_switch"
        if self.role(a, pa) == "host" or self.role(b, pb) == "host":
            return "host_port"
        self.heard[(a, pa, b, pb)] = now
        back = self.heard.get((b, pb, a, pa))
        if back is None or now - back > self.link_timeout:
            return "one_way"
        link = link_key(a, pa, b, pb)
        if link in self.seen:
            self.seen[link] = min(now, back)
            return "known"
        # a port has one link: an older one on either end is gone
        for old in [k for k in self.links() if k != link and _shares_port(k, link)]:
            self._remove(old)
        self._add(link)
        self.seen[link] = min(now, back)
        self._changed()
        return "new"

    def host_seen(self, dpid: int, port: int) -> bool:
        """A host was seen at (dpid, port); True when that makes it a host
        port (until it goes down: no frame makes it a link meanwhile)."""
        if (dpid, port) in self.hosts_seen or dpid not in self.ports or port not in self.ports[dpid]:
            return False
        self.hosts_seen.add((dpid, port))
        return True

    def role(self, dpid: int, port: int) -> str:
        """``host``, ``link`` or ``unknown`` (neither seen yet); a pinned
        role first."""
        pinned = self.pinned.get((dpid, port))
        if pinned:
            return pinned
        if (dpid, port) in self.hosts_seen:
            return "host"
        return "link" if port in self.link_ports(dpid) else "unknown"

    def learns(self, dpid: int, port: int) -> bool:
        """Hosts are learned at this port: it is neither a link nor pinned as one."""
        return port not in self.link_ports(dpid) and self.pinned.get((dpid, port)) != "link"

    def expire(self, now: float) -> list[Link]:
        """Discovered links not seen for ``link_timeout`` seconds."""
        for way in [way for way, when in self.heard.items() if now - when > self.link_timeout]:
            del self.heard[way]
        gone = [link for link in self.seen if link not in self.heard or _back(link) not in self.heard]
        gone = [link for link in gone if link not in self.declared]
        for link in gone:
            self._remove(link)
        if gone:
            self._changed()
        return gone

    def declare(self, links: list[Link]) -> None:
        """Static links (a file): they hold while both switches are up."""
        self.static = True
        self.declared = {link_key(*link) for link in links}

    def _add(self, link: Link) -> None:
        a, pa, b, pb = link
        self.graph.add_edge(a, b, key=link, ports={a: pa, b: pb})
        self.seen.setdefault(link, 0.0)

    def _remove(self, link: Link) -> None:
        self.seen.pop(link, None)
        if self.graph.has_edge(link[0], link[2], key=link):
            self.graph.remove_edge(link[0], link[2], key=link)

    def _changed(self) -> None:
        self.version += 1
        self._paths = None
        self._tree = None
        self._link_ports = None

    # -------------------------------------------------------------- reading

    def links(self) -> list[Link]:
        return sorted(key for _a, _b, key in self.graph.edges(keys=True))

    def link_ports(self, dpid: int) -> set[int]:
        """The switch's ports that lead to other switches (computed once per
        change of the graph: packet-ins and rule computations ask often)."""
        if self._link_ports is None:
            self._link_ports = {}
            for a, pa, b, pb in self.links():
                self._link_ports.setdefault(a, set()).add(pa)
                self._link_ports.setdefault(b, set()).add(pb)
        return self._link_ports.get(dpid, set())

    def edge_ports(self, dpid: int) -> set[int]:
        return set(self.ports.get(dpid, {})) - self.link_ports(dpid)

    def transit(self, dpid: int) -> bool:
        """Every port of the switch is a link: nothing enters the fabric here."""
        ports = self.ports.get(dpid)
        return bool(ports) and not self.edge_ports(dpid)

    def in_fabric(self, dpid: int) -> bool:
        """The switch has at least one link."""
        return dpid in self.graph and self.graph.degree(dpid) > 0

    def next_port(self, at: int, to: int) -> int | None:
        """The port ``at`` sends out of towards switch ``to`` (shortest path
        by hops); None when ``to`` cannot be reached or is ``at``."""
        if at == to:
            return None
        return self._towards(to).get(at)

    def _towards(self, to: int) -> dict[int, int]:
        if self._paths is None:
            self._paths = {}
        if to not in self._paths:
            hops: dict[int, int] = {}
            if to in self.graph:
                # breadth first from the destination; neighbours and links in order, so all switches agree
                frontier, reached = [to], {to}
                while frontier:
                    following = []
                    for node in frontier:
                        for neighbour in sorted(self.graph.neighbors(node)):
                            if neighbour in reached:
                                continue
                            reached.add(neighbour)
                            link = min(self.graph[node][neighbour])
                            hops[neighbour] = self.graph[node][neighbour][link]["ports"][neighbour]
                            following.append(neighbour)
                    frontier = following
            self._paths[to] = hops
        return self._paths[to]

    def tree(self) -> set[Link]:
        """The links of a spanning tree of the graph (breadth first from the
        lowest datapath id of each part): flooding goes over these only."""
        if self._tree is None:
            tree: set[Link] = set()
            reached: set[int] = set()
            for root in sorted(self.graph.nodes):
                if root in reached:
                    continue
                reached.add(root)
                frontier = [root]
                while frontier:
                    following = []
                    for node in frontier:
                        for neighbour in sorted(self.graph.neighbors(node)):
                            if neighbour not in reached:
                                reached.add(neighbour)
                                tree.add(min(self.graph[node][neighbour]))
                                following.append(neighbour)
                    frontier = following
            self._tree = tree
        return self._tree

    def flood_ports(self, dpid: int, now: float) -> tuple[int, ...]:
        """Edge ports probed for ``hold`` seconds, and spanning-tree links."""
        ports = self.ports.get(dpid, {})
        links = self.link_ports(dpid)
        tree = {p for link in self.tree() for d, p in ((link[0], link[1]), (link[2], link[3])) if d == dpid}
        edge = {p for p, since in ports.items() if p not in links and (self.static or now - since >= self.hold)}
        return tuple(sorted(edge | tree))

    def held_until(self, dpid: int) -> float | None:
        """When the last port of the switch still in its hold may flood."""
        if self.static:
            return None
        links = self.link_ports(dpid)
        pending = [since + self.hold for p, since in self.ports.get(dpid, {}).items() if p not in links]
        return max(pending) if pending else None

    def to_json(self) -> dict:
        return {
            "switches": [
                {
                    "dpid": dpid,
                    "ports": sorted(self.ports.get(dpid, {})),
                    "edge_ports": sorted(self.edge_ports(dpid)),
                    "transit": self.transit(dpid),
                }
                for dpid in sorted(self.graph.nodes)
            ],
            "links": [
                {"a": {"dpid": a, "port": pa}, "b": {"dpid": b, "port": pb}, "tree": (a, pa, b, pb) in self.tree()}
                for a, pa, b, pb in self.links()
            ],
            "source": "static" if self.static else "discovery",
        }


def _back(link: Link) -> Link:
    return (link[2], link[3], link[0], link[1])


def _shares_port(one: Link, other: Link) -> bool:
    ends = {(one[0], one[1]), (one[2], one[3])}
    return bool(ends & {(other[0], other[1]), (other[2], other[3])})


def load_links(path: str) -> list[Link]:
    """Static links from a JSON file: ``{"links": [{"a": {"dpid": 1, "port":
    5}, "b": {"dpid": 2, "port": 1}}, ...]}``; dpids as integers or hex
    strings."""
    try:
        body = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise InvalidInput("dsr.topology_file", f"cannot read {path}: {error}") from None
    if not isinstance(body, dict) or not isinstance(body.get("links"), list):
        raise InvalidInput("dsr.topology_file", 'must be a JSON object with a list "links"')
    links = []
    for number, item in enumerate(body["links"]):
        where = f"dsr.topology_file links[{number}]"
        try:
            ends = [(_dpid(item[side]["dpid"]), int(item[side]["port"])) for side in ("a", "b")]
        except (KeyError, TypeError, ValueError):
            raise InvalidInput(where, 'must be {"a": {"dpid": D, "port": P}, "b": {...}}') from None
        if ends[0][0] == ends[1][0] or any(not 1 <= port <= 0xFFFFFF00 for _d, port in ends):
            raise InvalidInput(where, "must join two different switches by ports from 1 to 4294967040")
        links.append(link_key(*ends[0], *ends[1]))
    return links


def _dpid(value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, str):
        return int(value, 16)
    if isinstance(value, int) and value > 0:
        return value
    raise ValueError(value)


def parse_port_roles(text: str, where: str) -> dict[tuple[int, int], str]:
    """Ports pinned to a role: ``DPID:PORT=host`` or ``=link``, comma
    separated (datapath ids in hex, as Open vSwitch shows them)."""
    pinned: dict[tuple[int, int], str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"(?:0x)?([0-9a-fA-F]{1,16}):([0-9]{1,10})=(host|link)", item)
        if not match or not 1 <= int(match[2]) <= 0xFFFFFF00:
            raise InvalidInput(
                where, f"{item!r} is not DPID:PORT=host or DPID:PORT=link (like 0000000000000001:3=host)"
            )
        pinned[(int(match[1], 16), int(match[2]))] = match[3]
    return pinned

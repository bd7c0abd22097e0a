"""What the controller knows, read-only, for everyone who shows it: the REST
views, ``/metrics``, the status page (and through them ``dsrctl``).

Nothing here changes state; every answer costs what it shows (one pool,
one backend, the switches), never a pass over the whole state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ryu_dsr import trace
from ryu_dsr.core import Balancer, utc_stamp
from ryu_dsr.model import ROUTED, Backend, Config, Vip


@dataclass(frozen=True)
class SwitchFacts:
    """One connected switch as an operator sees it."""

    dpid: int
    mode: str
    description: str
    flows: int
    hosts: int
    ports_down: tuple[int, ...]
    errors: int
    resyncs: int
    flow_mods: int
    bundles: int
    kept_owners: int
    in_line: bool  # it holds every change made so far
    last_poll: tuple[float, int] | None  # seconds from request to counted, counting flows read
    packet_ins: dict[str, int]

    def to_json(self) -> dict:
        return {
            "dpid": self.dpid,
            "mode": self.mode,
            "description": self.description,
            "flows": self.flows,
            "hosts": self.hosts,
            "ports_down": list(self.ports_down),
            "errors": self.errors,
            "resyncs": self.resyncs,
            "flow_mods": self.flow_mods,
            "bundles": self.bundles,
            "kept_owners": self.kept_owners,
            "in_line": self.in_line,
            "last_poll": None
            if self.last_poll is None
            else {"seconds": round(self.last_poll[0], 4), "flows": self.last_poll[1]},
            "packet_ins": dict(self.packet_ins),
        }


class Status:
    """A read-only face of one balancer."""

    def __init__(self, balancer: Balancer) -> None:
        self._balancer = balancer

    @property
    def config(self) -> Config:
        """The desired state (read it; changes go through ``Service``)."""
        return self._balancer.config

    @property
    def counters(self) -> dict[str, int]:
        return dict(self._balancer.counters)

    @property
    def polls(self) -> int:
        """Traffic polls read so far."""
        return self._balancer.traffic.polls

    def trace(self, query: dict[str, str]) -> dict:
        """Where a client's packet to a VIP goes and why (``ryu_dsr.trace``)."""
        return trace.trace(self._balancer, trace.parse_query(self.config, query))

    # -- switches --

    def switches(self) -> list[SwitchFacts]:
        b = self._balancer
        return [
            SwitchFacts(
                dpid=sw.dpid,
                mode=sw.mode,
                description=sw.description,
                flows=len(sw.rules.installed),
                hosts=len(sw.hosts),
                ports_down=tuple(sorted(sw.ports_down)),
                errors=sw.errors,
                resyncs=sw.resyncs,
                flow_mods=sw.flow_mods,
                bundles=sw.bundles,
                kept_owners=len(sw.kept),
                in_line=sw.in_line,
                last_poll=b.traffic.took.get(sw.dpid),
                packet_ins=dict(sw.packet_ins),
            )
            for sw in b.switches.values()
        ]

    def topology(self) -> dict:
        """Switches (their ports' roles, pinned and held down ones), links
        (and whether each is on the flooding tree), the hosts at the edge
        (learned ones, and backends where they were found) and what
        discovery took and refused."""
        b = self._balancer
        out = b.l2.fabric.to_json()
        hosts = {
            mac: {"mac": mac, "dpid": dpid, "port": port, "backends": []} for mac, (dpid, port) in b.l2.host_at.items()
        }
        for ip, (mac, dpid, port) in sorted(b.backends.places.items()):
            if mac is None or dpid is None:
                continue
            hosts.setdefault(mac, {"mac": mac, "dpid": dpid, "port": port, "backends": []})["backends"].append(ip)
        out["hosts"] = sorted(hosts.values(), key=lambda h: (h["dpid"], h["port"], h["mac"]))
        for switch in out["switches"]:
            switch.update(b.l2.ports_of(switch["dpid"]))
        out["discovery"] = b.l2.discovery_counts()
        return out

    def discovery(self) -> dict:
        """Discovery frames taken and refused (by reason), port role changes
        and flaps."""
        return self._balancer.l2.discovery_counts()

    # -- pools and backends --

    def slots(self, pool_name: str) -> int:
        return len(self._balancer.desired.planner.table(pool_name))

    def slot_counts(self, pool_name: str) -> Counter:
        """Slots of the pool's table by the backend they send to."""
        return Counter(self._balancer.desired.planner.table(pool_name))

    def failing_open(self, pool_name: str) -> bool:
        return pool_name in self._balancer.backends.failing_open

    def backend_state(self, pool_name: str, backend: Backend) -> tuple[str, str]:
        """(state, reason) of a backend of a pool now."""
        return self._balancer.backends.state(pool_name, backend)

    def healthy(self, pool_name: str, ip: str) -> bool:
        return self._balancer.backends.health.healthy(pool_name, ip)

    def pinned(self, backend: Backend) -> int:
        return self._balancer.traffic.pinned(backend.uid)

    def active(self, backend: Backend) -> int:
        """The backend's open connections as the switches counted them."""
        return self._balancer.traffic.active(self._balancer.backends.place(backend)[0])

    def backend_status(self, pool_name: str, ip: str) -> dict:
        b = self._balancer
        backend = b.config.backend(pool_name, ip)
        mac, dpid, port = b.backends.place(backend)
        state, reason = b.backends.state(pool_name, backend)
        change = b.backends.transitions.get((pool_name, ip))
        health = b.backends.health.status(pool_name, ip)
        return {
            "state": state,
            "reason": reason,
            "since": change[2] if change and change[0] == state else None,
            "health": {
                "check": b.config.pools[pool_name].health_check.kind,
                "healthy": health.healthy if health else True,
                "last_result": health.last_result if health else "not checked yet",
            },
            "resolved": mac is not None,
            "mac": mac,
            "location": None if dpid is None else {"dpid": dpid, "port": port},
            "slots": b.desired.planner.table(pool_name).count(ip),
            "handover_slots": len(self._active_moves(pool_name, old=ip)),
            "pinned_connections": b.traffic.pinned(backend.uid),
            "active_connections": b.traffic.active(mac),
            "arp_for_vip": self._arp_for_vip(ip),
            "passive": b.traffic.passive(mac) if mac else None,
            "claim": b.backends.locator.claim_status(ip),
            "routed": self._routed(pool_name, backend),
            **self._effective(pool_name, backend),
            "agent": self._agent(pool_name, ip),
        }

    def _agent(self, pool_name: str, ip: str) -> dict | None:
        """What the backend's agent said last and what was applied (None: no agent check)."""
        b = self._balancer
        if b.config.pools[pool_name].agent_check is None:
            return None
        report = b.backends.agents.report(pool_name, ip)
        health = b.backends.agents.status(pool_name, ip)
        return {
            "state": b.backends.agents.says(pool_name, ip),
            "share": b.backends.weights_now.agent_share(pool_name, ip),
            "reported": report.percent if report else None,
            "said": report.line if report else None,
            "last_result": health.last_result if health else "not asked yet",
        }

    def effective_weight(self, pool_name: str, backend: Backend) -> int:
        return self._balancer.backends.weights_now.of(self._balancer.config.pools[pool_name], backend)[0]

    def _effective(self, pool_name: str, backend: Backend) -> dict:
        """The weight the slot table is made from now, and why it is not the
        configured one (its agent's report, a slow start), or None."""
        weight, why = self._balancer.backends.weights_now.of(self._balancer.config.pools[pool_name], backend)
        return {"effective_weight": weight, "effective_reason": why}

    def _routed(self, pool_name: str, backend: Backend) -> dict | None:
        """A dscp backend: its gateway and the DSCP values it must map back,
        VIP address by VIP address (what ``dsr_backend.py --dscp`` takes); a
        gre backend: its gateway and the tunnel."""
        gateway = self._balancer.backends.gateway(backend)
        if gateway is None:
            return None
        if backend.forwarding == "gre":
            return {"gateway": gateway, "tunnel": "gre"}
        config = self._balancer.config
        vips = (config.vips[name] for name in config.vips_by_pool.get(pool_name, ()))
        return {"gateway": gateway, "dscp": {vip.ip: vip.dscp for vip in sorted(vips, key=lambda v: v.ip)}}

    def _arp_for_vip(self, ip: str) -> dict | None:
        seen = self._balancer.backends.vip_arp.get(ip)
        return None if seen is None else {"address": seen[0], "last_seen": utc_stamp(seen[1])}

    def _active_moves(self, pool_name: str, old: str | None = None) -> list:
        """The pool's moves whose handover rules are in force now (from
        backend ``old`` only, if given)."""
        b = self._balancer
        return [
            move
            for slot, move in b.desired.planner.moves.get(pool_name, {}).items()
            if (old is None or move.old == old) and b.rules.handover_of(pool_name, slot) is not None
        ]

    def history(self, pool_name: str) -> dict:
        """A pool's recent past for the charts: each backend's new
        connections and packets per bucket, its state changes, the slot
        map now (runs of slots by backend, and the slots in a handover), and
        the switches' flow counts and write errors."""
        b = self._balancer
        pool = b.config.pool(pool_name)
        history, now = b.history, b.clock()
        table = b.desired.planner.table(pool_name)
        runs: list[list] = []
        for slot, ip in enumerate(table):
            if runs and runs[-1][0] == ip:
                runs[-1][2] += 1
            else:
                runs.append([ip, slot, 1])
        handover = sorted(
            slot
            for slot, move in b.desired.planner.moves.get(pool_name, {}).items()
            if b.rules.handover_of(pool_name, slot) is not None
        )
        return {
            "pool": pool_name,
            "window": history.window,
            "bucket": history.bucket,
            "backends": [
                {
                    "ip": ip,
                    "weight": backend.weight,
                    "state": b.backends.state(pool_name, backend)[0],
                    "samples": history.backend(b.backends.place(backend)[0], now),
                }
                for ip, backend in pool.backends.items()
            ],
            "events": history.pool_events(pool_name, now),
            "slot_map": {"slots": len(table), "runs": runs, "handover": handover},
            "switches": [{"dpid": dpid, "samples": history.switch(dpid, now)} for dpid in sorted(b.switches)],
        }

    def handover_by_backend(self, pool_name: str) -> dict[str, int]:
        """Slots of the pool in a handover now, by the backend they keep
        connections on (one pass over the pool's moves)."""
        return dict(Counter(move.old for move in self._active_moves(pool_name)))

    def handover(self, pool_name: str) -> dict:
        """The pool's slots in a handover now: those still checked (their
        counters being read), those in the hold (learn), when the last one
        ends at the latest, and how each switch keeps new connections."""
        b = self._balancer
        planner = b.desired.planner
        active = self._active_moves(pool_name)
        now = b.wall()
        edges = [sw for sw in b.switches.values() if sw.mode == "ovs" and not sw.transit]
        hold = not edges or any(sw.tracking == "learn" for sw in edges)
        ends = max((move.since + planner.window for move in active), default=None)
        return {
            "slots": len(active),
            "checking": sum(1 for move in active if not move.checked),
            "holding": sum(1 for move in active if planner.holding(move, now, hold)),
            "ends": utc_stamp(ends) if ends is not None else None,
            "quiet": b.settings.handover_quiet,
            "tracking": [
                {"dpid": sw.dpid, "method": sw.tracking, "reason": sw.tracking_reason}
                for sw in sorted(edges, key=lambda x: x.dpid)
            ],
        }

    # -- traffic, from the switches' counters --

    def vip_totals(self, vip: Vip) -> tuple[int, int, int]:
        """Packets, bytes and new connections to a VIP so far (no rates: a
        scrape's cheap read)."""
        counts = self._balancer.traffic.vips.get(vip.uid)
        return (0, 0, 0) if counts is None else (counts.packets, counts.bytes, counts.new_connections)

    def vip_traffic(self, name: str) -> dict:
        return self._balancer.traffic.of("vip", self._balancer.config.vip(name).uid)

    def backend_traffic(self, pool_name: str, ip: str) -> dict:
        """Requests sent to a backend and, as ``replies``, what it sent back
        from VIP addresses (SYN-ACKs: connections answered; resets)."""
        b = self._balancer
        backend = b.config.backend(pool_name, ip)
        mac = b.backends.place(backend)[0]
        # a dscp backend: what was routed to it; its replies are its gateway's (all it routes back)
        sent = b.traffic.of("routed", backend.uid) if backend.forwarding in ROUTED else b.traffic.of("backend", mac)
        return sent | {
            "replies": b.traffic.of("reply", mac),
            "pinned_connections": b.traffic.pinned(backend.uid),
        }

    def mac_traffic(self, ip: str) -> tuple[dict, dict]:
        """What went to and came from a backend address's MAC (over all its pools)."""
        b = self._balancer
        backends = [b.config.pools[name].backends[ip] for name in sorted(b.config.pools_by_backend.get(ip, ()))]
        mac = b.backends.place(backends[0])[0] if backends else None
        routed = [backend.uid for backend in backends if backend.forwarding in ROUTED]
        if not routed:
            return b.traffic.of("backend", mac), b.traffic.of("reply", mac)
        # a dscp backend: what was routed to it, in each of its pools (its replies are its gateway's)
        sent = [b.traffic.of("routed", uid) for uid in routed]
        total = {name: sum(part[name] for part in sent) for name in sent[0] if name != "rates"}
        total["rates"] = {name: round(sum(part["rates"][name] for part in sent), 3) for name in sent[0]["rates"]}
        return total, b.traffic.of("reply", mac)

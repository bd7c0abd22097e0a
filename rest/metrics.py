"""Prometheus text at ``/metrics``: what the controller knows of its
switches, pools, backends and VIPs, read from its state at each scrape.

Every metric is declared once below, with its help text and labels. The
cost of a scrape follows the objects it reports (one line per backend of a
pool, per VIP, per switch), not the flows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ryu_dsr.model import BACKEND_STATES
from ryu_dsr.status import Status

CONTENT_TYPE = CONTENT_TYPE_LATEST
PREFIX = "ryu_dsr_"

# name: (kind, help, labels)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "switch_connected": ("gauge", "1 while the switch is connected and taken", ("switch",)),
    "switch_flows": ("gauge", "flows the controller holds on the switch (learned pins excluded)", ("switch",)),
    "switch_hosts": ("gauge", "MAC addresses learned on the switch", ("switch",)),
    "switch_in_line": ("gauge", "1 when the switch holds every change made so far", ("switch",)),
    "switch_flow_mods": ("counter", "flow changes sent to the switch since it connected", ("switch",)),
    "switch_openflow_errors": ("counter", "OpenFlow errors the switch sent since it connected", ("switch",)),
    "switch_resyncs": ("counter", "times the switch was compared whole with its flow table", ("switch",)),
    "switch_stats_poll_seconds": (
        "gauge",
        "seconds the last traffic counter poll of the switch took, from request to counted",
        ("switch",),
    ),
    "switch_packet_ins": (
        "counter",
        "frames the switch sent the controller, by reason (learning, arp_request, health_probe, vip_arp_claim)",
        ("switch", "reason"),
    ),
    "switch_stats_poll_flows": ("gauge", "counting flows the last traffic counter poll read", ("switch",)),
    "switch_kept_owners": ("gauge", "rule owners kept on the switch from an unknown earlier state", ("switch",)),
    "discovery_frames": (
        "counter",
        "link-discovery frames that came back: accepted, or refused by reason (bad_code: forged; stale; replayed; "
        "host_port: would make a link of a port where hosts are; unknown_switch; held_down; malformed)",
        ("result",),
    ),
    "port_role_changes": ("counter", "times a switch port changed role (unknown, host, link)", ()),
    "port_flaps": ("counter", "times a switch port went down or its link stopped being heard", ()),
    "ports_held_down": ("counter", "times a flapping port was held down", ()),
    "cluster_master": ("gauge", "1 while this controller is master of the switches (etcd cluster)", ("node",)),
    "cluster_candidates": ("gauge", "controllers standing in the etcd cluster, the master included", ()),
    "cluster_etcd_healthy": ("gauge", "1 while etcd answered this controller's last call", ()),
    "pools": ("gauge", "pools configured", ()),
    "vips": ("gauge", "VIPs configured", ()),
    "pool_slots": ("gauge", "slots in the pool's consistent-hash table", ("pool",)),
    "pool_handover_slots": ("gauge", "slots of the pool in a handover (connections kept where they were)", ("pool",)),
    "pool_failing_open": (
        "gauge",
        "1 when no backend of the pool passes its checks and all take new connections (health_check.fail_open)",
        ("pool",),
    ),
    "backend_state": (
        "gauge",
        "1 for the backend's state (up, draining, unhealthy, down, unresolved)",
        ("pool", "backend", "state"),
    ),
    "backend_healthy": ("gauge", "1 when the backend's health checks pass", ("pool", "backend")),
    "backend_weight": ("gauge", "the backend's configured weight (0: draining)", ("pool", "backend")),
    "backend_slots": ("gauge", "slots of the pool's table that send to the backend", ("pool", "backend")),
    "backend_handover_slots": ("gauge", "moved slots that still send the backend its connections", ("pool", "backend")),
    "backend_pinned_connections": (
        "gauge",
        "connections held to the backend by pins (those of slots in a handover; the rest are not counted one by one)",
        ("pool", "backend"),
    ),
    "vip_backends_up": ("gauge", "backends of the VIP's pool that take new connections", ("vip", "pool")),
    "vip_backends": ("gauge", "backends of the VIP's pool", ("vip", "pool")),
    "vip_packets": ("counter", "request packets to the VIP, counted by the switches", ("vip", "pool")),
    "vip_bytes": ("counter", "request bytes to the VIP, counted by the switches", ("vip", "pool")),
    "vip_new_connections": (
        "counter",
        "TCP connections opened to the VIP (SYN), counted by the switches",
        ("vip", "pool"),
    ),
    "backend_packets": ("counter", "VIP request packets sent to the backend (its MAC, all its pools)", ("backend",)),
    "backend_bytes": ("counter", "VIP request bytes sent to the backend (its MAC, all its pools)", ("backend",)),
    "backend_new_connections": (
        "counter",
        "TCP connections sent to the backend (its MAC, all its pools)",
        ("backend",),
    ),
    "backend_reply_packets": ("counter", "packets the backend sent from VIP addresses (its replies)", ("backend",)),
    "backend_reply_bytes": ("counter", "bytes the backend sent from VIP addresses (its replies)", ("backend",)),
    "backend_answered": ("counter", "connections the backend answered from a VIP address (SYN-ACK)", ("backend",)),
    "backend_resets": ("counter", "resets the backend sent from a VIP address (RST)", ("backend",)),
    "changes": ("counter", "changes of desired state accepted (REST, declared file)", ()),
    "write_failures": ("counter", "writes to a switch that failed (each answered by a resync)", ()),
    "openflow_errors": ("counter", "OpenFlow errors sent by any switch", ()),
    "switches_refused": ("counter", "connections of switches not in dsr.switches, refused", ()),
}


def _family(name: str) -> GaugeMetricFamily | CounterMetricFamily:
    kind, text, labels = METRICS[name]
    maker = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
    return maker(PREFIX + name, text, labels=list(labels))


class StatusCollector:
    """A prometheus_client collector over what the controller knows (its
    ``Status``)."""

    def __init__(self, status: Status, cluster: Any = None) -> None:
        self.status = status
        self.cluster = cluster  # () -> GET /v1/cluster's body, or None

    def describe(self) -> list:
        return [_family(name) for name in METRICS]

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        status = self.status
        families = {name: _family(name) for name in METRICS}

        def add(name: str, labels: tuple[str, ...], value: float) -> None:
            families[name].add_metric(list(labels), value)

        for switch in status.switches():
            dpid = (f"{switch.dpid:016x}",)
            add("switch_connected", dpid, 1)
            add("switch_flows", dpid, switch.flows)
            add("switch_hosts", dpid, switch.hosts)
            add("switch_in_line", dpid, 1 if switch.in_line else 0)
            add("switch_flow_mods", dpid, switch.flow_mods)
            add("switch_openflow_errors", dpid, switch.errors)
            add("switch_resyncs", dpid, switch.resyncs)
            for reason, count in sorted(switch.packet_ins.items()):
                add("switch_packet_ins", (*dpid, reason), count)
            if switch.last_poll is not None:
                add("switch_stats_poll_seconds", dpid, switch.last_poll[0])
                add("switch_stats_poll_flows", dpid, switch.last_poll[1])
            add("switch_kept_owners", dpid, switch.kept_owners)
        discovery = status.discovery()
        add("discovery_frames", ("accepted",), discovery["accepted"])
        for reason, count in discovery["refused"].items():
            add("discovery_frames", (reason,), count)
        add("port_role_changes", (), discovery["role_changes"])
        add("port_flaps", (), discovery["flaps"])
        add("ports_held_down", (), discovery["held_down"])
        cluster = self.cluster() if self.cluster is not None else None
        if cluster is not None and cluster["mode"] == "etcd":
            add("cluster_master", (cluster["node"],), 1 if cluster["role"] == "master" else 0)
            add("cluster_candidates", (), len(cluster["members"]))
            add("cluster_etcd_healthy", (), 1 if cluster["etcd"]["healthy"] else 0)
        config = status.config
        add("pools", (), len(config.pools))
        add("vips", (), len(config.vips))
        up_by_pool = {}
        for name, pool in config.pools.items():
            counts = status.slot_counts(name)
            add("pool_slots", (name,), status.slots(name))
            handovers = status.handover_by_backend(name)
            add("pool_handover_slots", (name,), sum(handovers.values()))
            add("pool_failing_open", (name,), 1 if status.failing_open(name) else 0)
            up = 0
            for ip, backend in pool.backends.items():
                state, _reason = status.backend_state(name, backend)
                up += state == "up"
                for each in BACKEND_STATES:
                    add("backend_state", (name, ip, each), 1 if each == state else 0)
                add("backend_healthy", (name, ip), 1 if status.healthy(name, ip) else 0)
                add("backend_weight", (name, ip), backend.weight)
                add("backend_slots", (name, ip), counts.get(ip, 0))
                add("backend_handover_slots", (name, ip), handovers.get(ip, 0))
                add("backend_pinned_connections", (name, ip), status.pinned(backend))
            up_by_pool[name] = (up, len(pool.backends))
        for name, vip in config.vips.items():
            up, total = up_by_pool.get(vip.pool, (0, 0))
            add("vip_backends_up", (name, vip.pool), up)
            add("vip_backends", (name, vip.pool), total)
            traffic = status.vip_traffic(name)
            for what in ("packets", "bytes", "new_connections"):
                add(f"vip_{what}", (name, vip.pool), traffic[what])
        for ip in sorted(config.pools_by_backend):
            traffic, replies = status.mac_traffic(ip)
            for what in ("packets", "bytes", "new_connections"):
                add(f"backend_{what}", (ip,), traffic[what])
            add("backend_reply_packets", (ip,), replies["packets"])
            add("backend_reply_bytes", (ip,), replies["bytes"])
            add("backend_answered", (ip,), replies["answered"])
            add("backend_resets", (ip,), replies["resets"])
        counters = status.counters
        for name in ("changes", "write_failures", "openflow_errors", "switches_refused"):
            add(name, (), counters.get(name, 0))
        yield from families.values()


def registry_for(status: Status, cluster: Any = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(status, cluster))
    return registry


def metrics_text(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)

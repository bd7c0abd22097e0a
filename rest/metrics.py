"""Prometheus text at ``/metrics``: what the controller knows of its
switches, pools, backends and VIPs, read from its state at each scrape.

Every metric is declared once below, with its help text and labels. The
cost of a scrape follows the objects it reports (one line per backend of a
pool, per VIP, per switch), not the flows. The text is written here, not
through prometheus_client's objects: at 10,000 VIPs their label checks and
formatting were four fifths of a scrape's half second. Names of pools and
VIPs and addresses need no escapes (the model allows none of the
characters that would); free text does (``labels``).
"""

from __future__ import annotations

from collections.abc import Callable

from ryu_dsr.model import BACKEND_STATES
from ryu_dsr.pacing import Lateness, Pacer, no_pause
from ryu_dsr.status import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # Prometheus' text format
PREFIX = "ryu_dsr_"
TRAFFIC = ("packets", "bytes", "new_connections")


# name: (kind, help, labels)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "switch_connected": ("gauge", "1 while the switch is connected and taken", ("switch",)),
    "switch_flows": ("gauge", "flows the controller holds on the switch (learned pins excluded)", ("switch",)),
    "switch_hosts": ("gauge", "MAC addresses learned on the switch", ("switch",)),
    "switch_in_line": ("gauge", "1 when the switch holds every change made so far", ("switch",)),
    "switch_flow_mods": ("counter", "flow changes sent to the switch since it connected", ("switch",)),
    "switch_bundles": ("counter", "steps of flow changes sent to the switch as one bundle", ("switch",)),
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
    "discovery_host_frames_on_links": (
        "counter",
        "frames from a host not known elsewhere that came in at a link port (logged once per port)",
        (),
    ),
    "port_role_changes": ("counter", "times a switch port changed role (unknown, host, link)", ()),
    "port_flaps": ("counter", "times a switch port went down or its link stopped being heard", ()),
    "ports_held_down": ("counter", "times a flapping port was held down", ()),
    "loop_late_seconds": (
        "gauge",
        "the longest the controller's loop woke up late over the last 10-20 s (while something held it, "
        "REST and OpenFlow waited as long)",
        (),
    ),
    "loop_late_working_seconds": (
        "gauge",
        "of the loop's longest lateness over the last 10-20 s, the part the controller itself worked (its CPU "
        "time meanwhile; the rest, the machine ran something else)",
        (),
    ),
    "loop_stalls": ("counter", "times the controller's loop woke up more than 20 ms late", ()),
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
    "backend_effective_weight": (
        "gauge",
        "the weight the pool's slot table is made from now (below the configured one in a slow start)",
        ("pool", "backend"),
    ),
    "backend_slots": ("gauge", "slots of the pool's table that send to the backend", ("pool", "backend")),
    "backend_handover_slots": ("gauge", "moved slots that still send the backend its connections", ("pool", "backend")),
    "backend_pinned_connections": (
        "gauge",
        "connections held to the backend by pins (those of slots in a handover; the rest are not counted one by one)",
        ("pool", "backend"),
    ),
    "backend_active_connections": (
        "gauge",
        "the backend's open connections as the switches counted them (answered from a VIP address, not yet closed or reset)",
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


class Scrape:
    """One scrape's text, family by family (every family's samples
    together, in the order of ``METRICS``)."""

    def __init__(self) -> None:
        self.lines: dict[str, list[str]] = {name: [] for name in METRICS}

    def add(self, name: str, labels: str, value: float) -> None:
        """A sample; ``labels`` is ``{...}`` text already (see ``labels``)."""
        self.lines[name].append(f"{_SAMPLE[name]}{labels} {_number(value)}\n")

    def text(self, pace: Callable[[], None] = no_pause) -> bytes:
        parts = []
        for name, lines in self.lines.items():
            parts.append(_HEADER[name].encode())
            parts.append("".join(lines).encode())
            pace()
        return b"".join(parts)


def labels(**values: object) -> str:
    """``{name="value",...}`` with the text format's escapes, names in
    alphabetical order (as prometheus_client wrote them, and as the samples
    written by hand below have them)."""
    return "{" + ",".join(f'{key}="{_escape(str(values[key]))}"' for key in sorted(values)) + "}"


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def _number(value: float) -> str:
    """As prometheus_client wrote them: 1.0, 158.0, 0.25."""
    return repr(float(value))


_SAMPLE = {name: PREFIX + name + ("_total" if kind == "counter" else "") for name, (kind, _h, _l) in METRICS.items()}
_HEADER = {
    name: f"# HELP {_SAMPLE[name]} {_escape(text)}\n# TYPE {_SAMPLE[name]} {kind}\n"
    for name, (kind, text, _labels) in METRICS.items()
}


def render(
    status: Status,
    cluster: Callable[[], dict | None] | None = None,
    pause: Callable[[], None] = no_pause,
    lateness: Lateness | None = None,
) -> bytes:
    """The scrape's text. ``pause`` is called every few milliseconds of work
    (``Pacer``) so that a controller of thousands of VIPs goes on serving
    meanwhile (the shell passes a yield to its other green threads); what
    changes during a scrape is read as it is when reached."""
    pace = pause if isinstance(pause, Pacer) else Pacer(pause)
    scrape = Scrape()
    add = scrape.add
    for switch in status.switches():
        dpid = f'{{switch="{switch.dpid:016x}"}}'
        add("switch_connected", dpid, 1)
        add("switch_flows", dpid, switch.flows)
        add("switch_hosts", dpid, switch.hosts)
        add("switch_in_line", dpid, 1 if switch.in_line else 0)
        add("switch_flow_mods", dpid, switch.flow_mods)
        add("switch_bundles", dpid, switch.bundles)
        add("switch_openflow_errors", dpid, switch.errors)
        add("switch_resyncs", dpid, switch.resyncs)
        for reason, count in sorted(switch.packet_ins.items()):
            add("switch_packet_ins", labels(switch=f"{switch.dpid:016x}", reason=reason), count)
        if switch.last_poll is not None:
            add("switch_stats_poll_seconds", dpid, switch.last_poll[0])
            add("switch_stats_poll_flows", dpid, switch.last_poll[1])
        add("switch_kept_owners", dpid, switch.kept_owners)
    discovery = status.discovery()
    add("discovery_frames", '{result="accepted"}', discovery["accepted"])
    for reason, count in discovery["refused"].items():
        add("discovery_frames", f'{{result="{reason}"}}', count)
    add("discovery_host_frames_on_links", "", discovery["host_frames_on_links"])
    add("port_role_changes", "", discovery["role_changes"])
    add("port_flaps", "", discovery["flaps"])
    add("ports_held_down", "", discovery["held_down"])
    if lateness is not None:
        add("loop_late_seconds", "", lateness.recent())
        add("loop_late_working_seconds", "", lateness.recent_working())
        add("loop_stalls", "", lateness.stalls)
    body = cluster() if cluster is not None else None
    if body is not None and body["mode"] == "etcd":
        add("cluster_master", labels(node=body["node"]), 1 if body["role"] == "master" else 0)
        add("cluster_candidates", "", len(body["members"]))
        add("cluster_etcd_healthy", "", 1 if body["etcd"]["healthy"] else 0)
    config = status.config
    add("pools", "", len(config.pools))
    add("vips", "", len(config.vips))
    up_by_pool = {}
    for name, pool in list(config.pools.items()):  # names and values are checked: no escapes needed
        counts = status.slot_counts(name)
        of_pool = f'{{pool="{name}"}}'
        add("pool_slots", of_pool, status.slots(name))
        handovers = status.handover_by_backend(name)
        add("pool_handover_slots", of_pool, sum(handovers.values()))
        add("pool_failing_open", of_pool, 1 if status.failing_open(name) else 0)
        up = 0
        for ip, backend in pool.backends.items():
            state, _reason = status.backend_state(name, backend)
            up += state == "up"
            of_backend = f'{{backend="{ip}",pool="{name}"}}'
            for each in BACKEND_STATES:
                add("backend_state", f'{{backend="{ip}",pool="{name}",state="{each}"}}', 1 if each == state else 0)
            add("backend_healthy", of_backend, 1 if status.healthy(name, ip) else 0)
            add("backend_weight", of_backend, backend.weight)
            add("backend_effective_weight", of_backend, status.effective_weight(name, backend))
            add("backend_slots", of_backend, counts.get(ip, 0))
            add("backend_handover_slots", of_backend, handovers.get(ip, 0))
            add("backend_pinned_connections", of_backend, status.pinned(backend))
            add("backend_active_connections", of_backend, status.active(backend))
            pace()
        up_by_pool[name] = (up, len(pool.backends))
    vip_lines = {what: scrape.lines[f"vip_{what}"] for what in ("backends_up", "backends", *TRAFFIC)}
    vip_samples = {what: _SAMPLE[f"vip_{what}"] for what in vip_lines}
    for name, vip in list(config.vips.items()):
        up, total = up_by_pool.get(vip.pool, (0, 0))
        of_vip = f'{{pool="{vip.pool}",vip="{name}"}} '
        traffic = status.vip_totals(vip)
        vip_lines["backends_up"].append(f"{vip_samples['backends_up']}{of_vip}{float(up)!r}\n")
        vip_lines["backends"].append(f"{vip_samples['backends']}{of_vip}{float(total)!r}\n")
        for what, value in zip(TRAFFIC, traffic):
            vip_lines[what].append(f"{vip_samples[what]}{of_vip}{float(value)!r}\n")
        pace()
    for ip in sorted(config.pools_by_backend):
        traffic, replies = status.mac_traffic(ip)
        of_ip = f'{{backend="{ip}"}}'
        for what in TRAFFIC:
            add(f"backend_{what}", of_ip, traffic[what])
        add("backend_reply_packets", of_ip, replies["packets"])
        add("backend_reply_bytes", of_ip, replies["bytes"])
        add("backend_answered", of_ip, replies["answered"])
        add("backend_resets", of_ip, replies["resets"])
        pace()
    counters = status.counters
    for name in ("changes", "write_failures", "openflow_errors", "switches_refused"):
        add(name, "", counters.get(name, 0))
    return scrape.text(pace)

"""A lab on this machine: Open vSwitch in userspace and hosts in network
namespaces. Used by the demo, the integration tests and the benchmarks.

Everything a lab creates carries its prefix (namespaces ``PREFIX-NAME``,
veths ``PREFIX-NAME``, bridge ``PREFIX-br0``) and lives in one run directory,
so ``Lab.destroy`` and ``Lab.clear_leftovers`` can remove exactly that, even
after an interrupted run.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ryu_dsr.auth import read_token
from ryu_dsr.flows.pipeline import Kind, Table

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
TOOLS = Path(__file__).resolve().parents[1] / "tools"


def program(name: str) -> str:
    """A command of the environment this Python runs in (the project's
    .venv: its bin beside the interpreter), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else (shutil.which(name) or name)


def sh(*args: str, check: bool = True, env: dict | None = None, timeout: float = 60) -> str:
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    mac: str
    ofport: int
    veth: str


class Lab:
    def __init__(
        self,
        prefix: str = "dsr",
        run_dir: str | os.PathLike | None = None,
        subnet: str = "10.0.0",
        subnet6: str = "2001:db8",
    ) -> None:
        self.prefix = prefix
        self.run_dir = Path(run_dir or f"/run/ryu_dsr-lab-{prefix}")
        self.subnet = subnet
        self.subnet6 = subnet6
        self.bridge = f"{prefix}-br0"
        self.hosts: dict[str, Host] = {}
        self.bridges: dict[str, int] = {}  # bridge -> its next free OpenFlow port
        self.links: dict[str, tuple[str, str]] = {}  # link name -> its two veth ends (one per bridge)
        self.env = dict(
            os.environ, OVS_RUNDIR=str(self.run_dir), OVS_LOGDIR=str(self.run_dir), OVS_DBDIR=str(self.run_dir)
        )
        self.procs: list[subprocess.Popen] = []

    # ---------------------------------------------------------- Open vSwitch

    def ovs(self, *args: str, check: bool = True) -> str:
        return sh(*args, check=check, env=self.env)

    def vsctl(self, *args: str) -> str:
        return self.ovs("ovs-vsctl", f"--db=unix:{self.run_dir}/db.sock", "--timeout=20", *args)

    def ab(self, address: str, requests: int, concurrency: int, host: str = "c1", path: str = "/") -> dict:
        """ApacheBench without keep-alive (each request a new connection) from
        ``host`` to http://ADDRESS/PATH: per_second, failed (errors and
        non-2xx answers), done, and the p50 and p99 of the requests' times
        (ms)."""
        url = f"http://{address}{path}"
        out = self.run(host, "ab", "-q", "-r", "-n", str(requests), "-c", str(concurrency), url, timeout=900)
        number = lambda name: float((re.search(rf"{name}:\s+([\d.]+)", out) or [0, 0])[1])  # noqa: E731
        within = lambda share: float((re.search(rf"^\s*{share}%\s+(\d+)", out, re.M) or [0, "nan"])[1])  # noqa: E731
        return {
            "per_second": number("Requests per second"),
            "failed": int(number("Failed requests") + number("Non-2xx responses")),
            "done": int(number("Complete requests")),
            "p50_ms": within(50),
            "p99_ms": within(99),
        }

    def pin_flows(self) -> list[str]:
        """The pins learned in the slot table, as ovs-ofctl prints them."""
        flows = self.ofctl("dump-flows", self.bridge, f"table={int(Table.SLOTS)}").splitlines()
        return [f for f in flows if (c := re.search(r"cookie=0x([0-9a-f]+)", f)) and int(c[1], 16) >> 56 == Kind.PIN]

    def conntrack_timeouts(self, zone: int, seconds: int) -> None:
        """A timeout policy for one connection-tracking zone of the userspace
        datapath: every TCP state lasts ``seconds`` (handover_tracking =
        conntrack sees one direction only, which keeps entries in SYN_SENT,
        30 s by default)."""
        self.vsctl(
            "--",
            "--id=@m",
            "create",
            "Datapath",
            "datapath_version=0",
            "--",
            "set",
            "Open_vSwitch",
            ".",
            "datapaths:netdev=@m",
        )
        states = ("syn_sent", "syn_recv", "established", "fin_wait", "time_wait", "close")
        self.vsctl("add-zone-tp", "netdev", f"zone={zone}", *[f"tcp_{state}={seconds}" for state in states])

    def serve_ovsdb(self, port: int) -> str:
        """Let a controller reach this Open vSwitch's OVSDB at
        127.0.0.1:``port`` (a manager target, as an operator sets with
        ``ovs-vsctl set-manager``); the ``ovsdb_remote`` that reaches it."""
        self.vsctl("set-manager", f"ptcp:{port}:127.0.0.1")
        deadline = time.time() + 10
        while time.time() < deadline:
            if f":{port} " in sh("ss", "-ltnH", check=False):
                return f"tcp:{{address}}:{port}"
            time.sleep(0.05)
        raise RuntimeError(f"OVSDB does not listen on {port}")

    def zone_timeouts(self, zone: int) -> dict[str, int]:
        """The timeout policy of a connection-tracking zone of the netdev
        datapath, as ovs-vsctl lists it ({} when it has none)."""
        out = self.vsctl("list-zone-tp", "netdev")
        for line in out.splitlines():
            if line.startswith(f"Zone:{zone},"):
                return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line.split(",", 1)[1])}
        return {}

    def ofctl(self, *args: str) -> str:
        return self.ovs("ovs-ofctl", "-O", "OpenFlow13", *args)

    def start_switch(self, controller_port: int = 6653, dpid: int = 1) -> None:
        """Start ovsdb-server and ovs-vswitchd (userspace datapath) and one
        bridge that answers to the controller at 127.0.0.1:controller_port."""
        self.clear_leftovers()
        # The userspace datapath owns one tap device per machine (ovs-netdev):
        # a second ovs-vswitchd cannot create its bridges, and a killed one
        # may leave the device behind.
        running = sh("pgrep", "-a", "-x", "ovs-vswitchd", check=False).strip()
        if running:
            raise RuntimeError(
                f"another Open vSwitch is running on this machine ({running}); userspace datapaths cannot share "
                "it: stop that one first (for the demo: make demo-stop)"
            )
        sh("ip", "link", "del", "ovs-netdev", check=False)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        d = self.run_dir
        self.ovs("ovsdb-tool", "create", f"{d}/conf.db", OVS_SCHEMA)
        self.ovs(
            "ovsdb-server",
            f"{d}/conf.db",
            f"--remote=punix:{d}/db.sock",
            "--remote=db:Open_vSwitch,Open_vSwitch,manager_options",  # as ovs-ctl starts it: set-manager works
            f"--pidfile={d}/ovsdb-server.pid",
            "--detach",
            f"--log-file={d}/ovsdb-server.log",
        )
        self.vsctl("--no-wait", "init")
        self._start_vswitchd()
        self.add_bridge(self.bridge, dpid, controller_port)

    def add_bridge(self, bridge: str, dpid: int, controller_port: int) -> None:
        """One more bridge (a switch of a fabric) on the running Open vSwitch."""
        self.vsctl(
            "add-br",
            bridge,
            "--",
            "set",
            "bridge",
            bridge,
            "datapath_type=netdev",
            "protocols=OpenFlow13",
            "fail_mode=secure",
            f"other-config:datapath-id={dpid:016x}",
        )
        self.vsctl("set-controller", bridge, f"tcp:127.0.0.1:{controller_port}")
        # Connection to the controller: retry fast so restarts are short.
        self.vsctl("set", "controller", bridge, "max_backoff=1000", "inactivity_probe=5000")
        self.bridges[bridge] = 1

    def _attach(self, bridge: str, veth: str) -> int:
        """Add ``veth`` to ``bridge`` at its next OpenFlow port number."""
        ofport = self.bridges[bridge]
        self.bridges[bridge] += 1
        sh("ethtool", "-K", veth, "tx", "off", check=False)  # userspace datapath: the kernel computes checksums
        self.vsctl("add-port", bridge, veth, "--", "set", "interface", veth, f"ofport_request={ofport}")
        return ofport

    def link_bridges(self, name: str, a: str, b: str) -> tuple[int, int]:
        """A veth pair between two bridges (a cable between two switches);
        returns the OpenFlow port on each."""
        ends = (f"{self.prefix}-{name}a"[:15], f"{self.prefix}-{name}b"[:15])
        sh("ip", "link", "add", ends[0], "type", "veth", "peer", "name", ends[1])
        for end in ends:
            # a cable's ends are switch ports, not hosts: no IPv6 chatter from the kernel on them (router
            # solicitations and MLD reports from a peer not yet connected would make a host port of the far end)
            sh("sysctl", "-qw", f"net.ipv6.conf.{end}.disable_ipv6=1")
            sh("ip", "link", "set", end, "up")
        self.links[name] = ends
        return self._attach(a, ends[0]), self._attach(b, ends[1])

    def leaf_spine(self, leaves: dict[str, int], spines: dict[str, int], controller_port: int) -> dict[str, str]:
        """A leaf-spine fabric on the running Open vSwitch: a bridge per
        switch (name -> dpid), every leaf cabled to every spine (link
        ``<leaf digit><spine digit>``); returns switch name -> bridge."""
        bridges = {name: f"{self.prefix}-{name}" for name in (*leaves, *spines)}
        for name, dpid in {**leaves, **spines}.items():
            self.add_bridge(bridges[name], dpid, controller_port)
        for leaf in leaves:
            for spine in spines:
                self.link_bridges(f"{leaf[-1]}{spine[-1]}", bridges[leaf], bridges[spine])
        return bridges

    def cut_link(self, name: str) -> None:
        """Pull the cable: both switches see their port go down."""
        sh("ip", "link", "set", self.links[name][0], "down")

    def restore_link(self, name: str) -> None:
        """Put the cable back."""
        sh("ip", "link", "set", self.links[name][0], "up")

    def link_packets(self) -> int:
        """Frames sent on every link so far (both directions)."""
        total = 0
        for ends in self.links.values():
            for end in ends:
                total += int(Path(f"/sys/class/net/{end}/statistics/tx_packets").read_text())
        return total

    def _start_vswitchd(self) -> None:
        d = self.run_dir
        self.ovs(
            "ovs-vswitchd",
            f"unix:{d}/db.sock",
            f"--pidfile={d}/ovs-vswitchd.pid",
            "--detach",
            f"--log-file={d}/ovs-vswitchd.log",
        )

    def kill_vswitchd(self) -> None:
        """kill -9 ovs-vswitchd: the datapath and every flow are gone (the
        bridges and ports stay in ovsdb)."""
        pid = int((self.run_dir / "ovs-vswitchd.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        deadline = time.time() + 10
        while time.time() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def start_vswitchd(self) -> None:
        """Start ovs-vswitchd again after ``kill_vswitchd``: it rebuilds the
        bridges and ports from ovsdb, with no flows, and connects to the
        controller."""
        (self.run_dir / "ovs-vswitchd.pid").unlink(missing_ok=True)
        self._start_vswitchd()

    def add_host(
        self, name: str, ip_last: int, mac: str | None = None, bridge: str | None = None, ip6: bool = False
    ) -> Host:
        """A namespace with one veth into the bridge (the first one, or
        ``bridge``), at SUBNET.ip_last/24 and, with ``ip6``, at
        SUBNET6::ip_last/64 too (``address6``)."""
        ns = f"{self.prefix}-{name}"
        veth = f"{self.prefix}-{name}"[:15]
        peer = f"{veth[:12]}-p"
        mac = mac or f"02:00:00:00:{ip_last // 256:02x}:{ip_last % 256:02x}"
        ip = f"{self.subnet}.{ip_last}"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        self.in_ns(ns, "ip", "link", "set", peer, "name", "eth0")
        self.in_ns(ns, "ip", "link", "set", "eth0", "address", mac)
        self.in_ns(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        if ip6:  # no duplicate address detection: usable at once
            self.in_ns(ns, "ip", "-6", "addr", "add", f"{self.address6(ip_last)}/64", "dev", "eth0", "nodad")
        self.in_ns(ns, "ip", "link", "set", "eth0", "up")
        self.in_ns(ns, "ip", "link", "set", "lo", "up")
        sh("ip", "link", "set", veth, "up")
        # Userspace datapath: checksums must be computed by the kernel.
        self.in_ns(ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        ofport = self._attach(bridge or self.bridge, veth)
        host = Host(name, ns, ip, mac, ofport, veth)
        self.hosts[name] = host
        return host

    def make_router(self, name: str) -> None:
        """Turn host ``name`` (on the switch) into a Linux router: forwarding
        on, reverse-path filtering off (DSR replies leave from the VIP, an
        address of the switch's segment, through it)."""
        for key in ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"):
            self.run(name, "sysctl", "-qw", key)
        for key in ("all", "default", "eth0"):
            self.run(name, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")

    def add_routed_host(self, name: str, router: str, subnet: int, ip6: bool = False) -> Host:
        """A namespace behind ``router`` (not on the switch): a point-to-point
        veth in 192.168.SUBNET.0/24 (the router .1, the host .2; with ``ip6``
        also 2001:db8:SUBNET::/64, ::1 and ::2), the host's default route
        through the router."""
        ns, veth, peer = f"{self.prefix}-{name}", f"{self.prefix}-{name}-r"[:15], f"{self.prefix}-{name}-h"[:15]
        mac = f"02:00:00:00:{subnet:02x}:02"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", veth, "netns", self.hosts[router].ns)
        sh("ip", "link", "set", peer, "netns", ns)
        self.run(router, "ip", "addr", "add", f"192.168.{subnet}.1/24", "dev", veth)
        self.run(router, "ip", "link", "set", veth, "up")
        self.run(router, "sysctl", "-qw", f"net.ipv4.conf.{veth}.rp_filter=0")
        self.run(router, "ethtool", "-K", veth, "tx", "off", check=False)
        self.in_ns(ns, "ip", "link", "set", peer, "name", "eth0")
        self.in_ns(ns, "ip", "link", "set", "eth0", "address", mac)
        self.in_ns(ns, "ip", "addr", "add", f"192.168.{subnet}.2/24", "dev", "eth0")
        self.in_ns(ns, "ip", "link", "set", "eth0", "up")
        self.in_ns(ns, "ip", "link", "set", "lo", "up")
        self.in_ns(ns, "ethtool", "-K", "eth0", "tx", "off", check=False)
        self.in_ns(ns, "ip", "route", "add", "default", "via", f"192.168.{subnet}.1")
        if ip6:
            self.run(router, "ip", "-6", "addr", "add", f"2001:db8:{subnet}::1/64", "dev", veth, "nodad")
            self.in_ns(ns, "ip", "-6", "addr", "add", f"2001:db8:{subnet}::2/64", "dev", "eth0", "nodad")
            self.in_ns(ns, "ip", "-6", "route", "add", "default", "via", f"2001:db8:{subnet}::1")
        host = Host(name, ns, f"192.168.{subnet}.2", mac, 0, veth)
        self.hosts[name] = host
        return host

    # -- GRE (forwarding "gre"): the switch's tunnel, its underlay, and far ends --

    def add_gre_port(self, name: str = "dsr-gre", bridge: str | None = None) -> int:
        """The switch's GRE port for gre backends, as an operator adds it
        (one port for every backend: the tunnel's destination is set per
        flow; the request travels as an IP packet, no Ethernet header);
        returns its OpenFlow port."""
        bridge = bridge or self.bridge
        ofport = 90
        self.vsctl(
            "add-port", bridge, name, "--", "set", "interface", name, "type=gre", "options:remote_ip=flow",
            "options:packet_type=legacy_l3", f"ofport_request={ofport}",
        )  # fmt: skip
        return ofport

    def add_tunnel_underlay(self, address: str, gateway: str, prefixes: list[str]) -> str:
        """Where the switch's tunnel leaves from: Open vSwitch's userspace
        tunnels route by their own table, through a bridge that holds the
        tunnel's source address (``address``, on the switch's segment) and
        is patched into the switch; routes to ``prefixes`` via ``gateway``.
        Returns the bridge's name."""
        phy = f"{self.prefix}-phy"
        self.vsctl("add-br", phy, "--", "set", "bridge", phy, "datapath_type=netdev", "fail_mode=standalone")
        self.bridges[phy] = 1
        inner, outer = f"{self.prefix}-pu"[:15], f"{self.prefix}-ps"[:15]
        self.vsctl("add-port", phy, inner, "--", "set", "interface", inner, "type=patch", f"options:peer={outer}")
        self.vsctl(
            "add-port", self.bridge, outer, "--", "set", "interface", outer, "type=patch", f"options:peer={inner}",
            "ofport_request=91",
        )  # fmt: skip
        sh("ip", "addr", "add", f"{address}/24", "dev", phy)
        sh("ip", "link", "set", phy, "up")
        for prefix in prefixes:
            sh("ip", "route", "add", prefix, "via", gateway, "dev", phy)
        return phy

    def add_gre_host(self, name: str, router: str, subnet: int, tunnel_source: str, ip6: bool = False) -> Host:
        """A backend host behind ``router`` that takes GRE as an Open
        vSwitch-based host would (this kernel has no ip_gre to do it as
        Linux's gre0 does): its rack's bridge holds the router's side, the
        host's namespace (192.168.SUBNET.2, default route through the
        router, .1) and the host's tunnel end, which decapsulates GRE from
        ``tunnel_source`` sent to the host's address and hands the inner
        packet to the host (either family: with ``ip6`` the host and the
        router's side also hold 2001:db8:SUBNET::2 and ::1, the host's IPv6
        default route through the router)."""
        rack = f"{self.prefix}-k{subnet}"
        self.vsctl("add-br", rack, "--", "set", "bridge", rack, "datapath_type=netdev", "fail_mode=standalone")
        self.bridges[rack] = 1
        ip, gw = f"192.168.{subnet}.2", f"192.168.{subnet}.1"
        up, down = f"{self.prefix}-r{subnet}"[:15], f"{self.prefix}-r{subnet}p"[:15]
        sh("ip", "link", "add", up, "type", "veth", "peer", "name", down)
        sh("ip", "link", "set", down, "netns", self.hosts[router].ns)
        self.run(router, "ip", "addr", "add", f"{gw}/24", "dev", down)
        self.run(router, "ip", "link", "set", down, "up")
        self.run(router, "sysctl", "-qw", f"net.ipv4.conf.{down}.rp_filter=0")
        self.run(router, "ethtool", "-K", down, "tx", "off", check=False)
        sh("ip", "link", "set", up, "up")
        self._attach(rack, up)
        host = self.add_host(name, subnet, mac=f"02:00:00:00:{subnet:02x}:02", bridge=rack)
        self.run(name, "ip", "-4", "addr", "flush", "dev", "eth0")  # its link-local address stays (IPv6 ND)
        self.run(name, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
        self.run(name, "ip", "route", "add", "default", "via", gw)
        if ip6:
            self.run(router, "ip", "-6", "addr", "add", f"2001:db8:{subnet}::1/64", "dev", down, "nodad")
            self.run(name, "ip", "-6", "addr", "add", f"2001:db8:{subnet}::2/64", "dev", "eth0", "nodad")
            self.run(name, "ip", "-6", "route", "add", "default", "via", f"2001:db8:{subnet}::1")
        host.ip = ip
        # the host's tunnel end: its address on the rack bridge's own port (no local route, so
        # that the switch's tunnel is routed through the router, not here), and a GRE port
        sh("ip", "addr", "add", f"{ip}/32", "dev", rack)
        sh("ip", "link", "set", rack, "up")
        sh("ip", "route", "del", "local", ip, "dev", rack, "table", "local", check=False)
        end = f"{self.prefix}-g{subnet}"[:15]
        self.vsctl(
            "add-port", rack, end, "--", "set", "interface", end, "type=gre", f"options:remote_ip={tunnel_source}",
            f"options:local_ip={ip}", "options:packet_type=legacy_l3",
        )  # fmt: skip
        rack_mac = Path(f"/sys/class/net/{rack}/address").read_text().strip()
        self.ofctl("add-flow", rack, "priority=0,actions=NORMAL")
        for inner in ("ip", "ipv6"):  # the request inside, of either family
            self.ofctl("add-flow", rack, f"priority=100,in_port={end},{inner},actions=mod_dl_src:{rack_mac},"
                       f"mod_dl_dst:{host.mac},output:{host.ofport}")  # fmt: skip
        self.set_gre_decap(name, True)
        return host

    def set_gre_decap(self, name: str, on: bool) -> None:
        """Whether the GRE host ``name`` takes GRE sent to it (off: as a host
        whose gre0 is down, the tunnel's packets are dropped)."""
        subnet = int(self.hosts[name].ip.split(".")[2])
        rack, ip = f"{self.prefix}-k{subnet}", self.hosts[name].ip
        match = f"priority=200,ip,nw_proto=47,nw_dst={ip}"
        if on:
            rack_mac = Path(f"/sys/class/net/{rack}/address").read_text().strip()
            self.ofctl("add-flow", rack, f"{match},actions=mod_dl_dst:{rack_mac},LOCAL")
        else:
            self.ofctl("del-flows", rack, "--strict", match)
            self.ofctl("add-flow", rack, f"{match},actions=drop")

    def address6(self, ip_last: int) -> str:
        """The IPv6 address of host ``ip_last`` (its last group reads as the IPv4 one's last byte)."""
        return f"{self.subnet6}::{ip_last}"

    def in_ns(self, ns: str, *args: str, check: bool = True, timeout: float = 60) -> str:
        return sh("ip", "netns", "exec", ns, *args, check=check, timeout=timeout)

    def run(self, host: str, *args: str, check: bool = True, timeout: float = 60) -> str:
        return self.in_ns(self.hosts[host].ns, *args, check=check, timeout=timeout)

    def spawn(self, host: str, *args: str, log: str | None = None) -> subprocess.Popen:
        out = open(self.run_dir / (log or f"{host}.log"), "ab")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.hosts[host].ns, *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def capture(self, host: str, expression: str, log: str, *options: str, interface: str = "eth0") -> subprocess.Popen:
        """tcpdump on ``host``'s ``interface`` (line-buffered, numeric,
        ``options`` more), its output in ``log``; returns once it listens."""
        proc = self.spawn(host, "tcpdump", "-i", interface, "-l", "-n", *options, expression, log=log)
        path = self.run_dir / log
        deadline = time.time() + 10
        while "listening on" not in (path.read_text(errors="replace") if path.exists() else ""):
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError(f"tcpdump on {host} did not start: {path.read_text(errors='replace')}")
            time.sleep(0.05)
        return proc

    def requests(self, host: str, url: str, count: int, *extra: str, timeout: float = 120) -> dict:
        """``count`` GETs of ``url`` from ``host`` (tools/dsr_client.py),
        each on a new connection; returns its JSON report."""
        out = self.run(
            host, sys.executable, str(TOOLS / "dsr_client.py"), url, "--count", str(count), *extra, timeout=timeout
        )
        return json.loads(out)

    def spawn_client(self, host: str, url: str, *args: str, log: str) -> subprocess.Popen:
        """tools/dsr_client.py in the background; ``client_report(log)`` reads
        its JSON report once it has exited."""
        return self.spawn(host, sys.executable, str(TOOLS / "dsr_client.py"), url, *args, log=log)

    def client_report(self, log: str) -> dict:
        return json.loads((self.run_dir / log).read_text().strip().splitlines()[-1])

    def set_link(self, host: str, up: bool) -> None:
        sh("ip", "link", "set", self.hosts[host].veth, "up" if up else "down")

    def make_backend(self, host: str, vips: list[str]) -> None:
        """DSR set-up of a backend host with the project's own tool."""
        self.run(host, sys.executable, str(TOOLS / "dsr_backend.py"), "apply", *[f"--vip={v}" for v in vips])

    def serve_http(
        self, host: str, port: int = 80, bind: str = "0.0.0.0", hold_file: Path | None = None
    ) -> subprocess.Popen:
        """tools/echo_server.py on ``host``; every answer waits the
        milliseconds ``hold_file`` holds, if given."""
        hold = ("--hold-file", str(hold_file)) if hold_file else ()
        proc = self.spawn(
            host, sys.executable, str(TOOLS / "echo_server.py"), host, str(port), bind, *hold, log=f"{host}-http.log"
        )
        self._wait_listening(host, port, "HTTP server")
        return proc

    def serve_haproxy(self, host: str, port: int = 80) -> subprocess.Popen:
        """HAProxy answering every HTTP request itself (200, a short body):
        a backend fast enough that the network is what a benchmark sees."""
        conf = self.run_dir / f"{host}-haproxy.cfg"
        conf.write_text(
            "global\n maxconn 8000\ndefaults\n mode http\n timeout client 5s\n timeout server 5s\n"
            f" timeout connect 5s\nfrontend web\n bind :::{port} v4v6\n"
            f" http-request return status 200 content-type text/plain string {host}\n"
        )
        proc = self.spawn(host, "haproxy", "-f", str(conf), "-db", log=f"{host}-haproxy.log")
        self._wait_listening(host, port, "HAProxy")
        return proc

    def serve_udp(self, host: str, port: int, addresses: list[str]) -> subprocess.Popen:
        """tools/udp_echo.py: answers each datagram, from the address it was sent to."""
        proc = self.spawn(
            host, sys.executable, str(TOOLS / "udp_echo.py"), host, str(port), *addresses, log=f"{host}-udp.log"
        )
        deadline = time.time() + 10
        while time.time() < deadline:
            if f":{port} " in self.run(host, "ss", "-lunH", check=False):
                return proc
            time.sleep(0.05)
        raise RuntimeError(f"UDP server on {host} did not start")

    def _wait_listening(self, host: str, port: int, what: str) -> None:
        deadline = time.time() + 10
        while time.time() < deadline:
            if f":{port} " in self.run(host, "ss", "-ltnH", check=False):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{what} on {host} did not start")

    # ---------------------------------------------------------- controller

    def use_tls(self, of_port: int) -> dict[str, str]:
        """OpenFlow over TLS between the bridge and the controller, with
        certificates made by ``ovs-pki`` (one CA for switches, one for
        controllers); returns ryu-manager's options for its side."""
        pki, d = self.run_dir / "pki", self.run_dir
        if not (d / "sc-cert.pem").exists():
            sh("ovs-pki", f"--dir={pki}", "--force", "init", timeout=120)
            for name, kind in (("ctl", "controller"), ("sc", "switch")):
                sh("sh", "-c", f"cd {d} && ovs-pki --dir={pki} --force req+sign {name} {kind}", timeout=120)
        self.vsctl("set-ssl", f"{d}/sc-privkey.pem", f"{d}/sc-cert.pem", f"{pki}/controllerca/cacert.pem")
        self.vsctl("set-controller", self.bridge, f"ssl:127.0.0.1:{of_port}")
        self.vsctl("set", "controller", self.bridge, "max_backoff=1000", "inactivity_probe=5000")
        return {
            "ctl_privkey": f"{d}/ctl-privkey.pem",
            "ctl_cert": f"{d}/ctl-cert.pem",
            "ca_certs": f"{pki}/switchca/cacert.pem",
            "ofp_ssl_listen_port": str(of_port),
        }

    def start_controller(
        self,
        conf: dict[str, object],
        rest_port: int = 8080,
        of_port: int = 6653,
        log_name: str = "ryu-manager.log",
        ryu_options: dict[str, str] | None = None,
        conf_name: str = "ryu_dsr.conf",
    ) -> subprocess.Popen:
        """``ryu-manager --config-file FILE ryu_dsr`` with a [dsr] section
        from ``conf`` (and ryu-manager's own ``ryu_options``); returns once
        the REST API answers."""
        conf_file = self.run_dir / conf_name
        lines = [
            "[DEFAULT]",
            "wsapi_host = 127.0.0.1",
            f"wsapi_port = {rest_port}",
            f"ofp_tcp_listen_port = {of_port}",
            *[f"{key} = {value}" for key, value in (ryu_options or {}).items()],
            "",
            "[dsr]",
        ]
        conf = {"token_file": str(self.run_dir / "api-token"), **conf}
        lines += [f"{key} = {value}" for key, value in conf.items()]
        conf_file.write_text("\n".join(lines) + "\n")
        ryu_manager = program("ryu-manager")
        out = open(self.run_dir / log_name, "ab")
        proc = subprocess.Popen(
            [ryu_manager, "--config-file", str(conf_file), "ryu_dsr"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(self.run_dir),
        )
        self.procs.append(proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"ryu-manager exited with {proc.returncode}; see {self.run_dir / log_name}")
            try:
                rest(f"http://127.0.0.1:{rest_port}", "GET", "/v1/vips")
                token = read_token(conf["token_file"]) if conf.get("auth", "token") == "token" else None
                if token:
                    TOKENS[f"http://127.0.0.1:{rest_port}"] = token
                else:
                    TOKENS.pop(f"http://127.0.0.1:{rest_port}", None)
                return proc
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("ryu-manager did not start its REST API in 30 s")

    # ---------------------------------------------------------- a cluster

    def etcd_pki(self) -> dict[str, str]:
        """Certificates for etcd over TLS, made with openssl: a CA, etcd's
        server certificate (for 127.0.0.1), a client certificate of that CA
        (common name ryu_dsr) and one of another CA (a stranger)."""
        d = self.run_dir / "etcd-pki"
        files = {
            "ca": d / "ca.pem",
            "server": d / "server.pem",
            "server_key": d / "server-key.pem",
            "client": d / "client.pem",
            "client_key": d / "client-key.pem",
            "stranger": d / "stranger.pem",
            "stranger_key": d / "stranger-key.pem",
        }
        if not files["client"].exists():
            d.mkdir(parents=True, exist_ok=True)
            for ca in ("ca", "other-ca"):
                sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN=lab {ca}",
                   "-keyout", str(d / f"{ca}-key.pem"), "-out", str(d / f"{ca}.pem"), timeout=120)  # fmt: skip
            for name, ca, cn, extension in (
                ("server", "ca", "etcd", "subjectAltName=IP:127.0.0.1"),
                ("client", "ca", "ryu_dsr", "extendedKeyUsage=clientAuth"),
                ("stranger", "other-ca", "ryu_dsr", "extendedKeyUsage=clientAuth"),
            ):
                (d / f"{name}.ext").write_text(extension + "\n")
                sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}",
                   "-keyout", str(d / f"{name}-key.pem"), "-out", str(d / f"{name}.csr"), timeout=120)  # fmt: skip
                sh("openssl", "x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / f"{ca}.pem"),
                   "-CAkey", str(d / f"{ca}-key.pem"), "-CAcreateserial", "-days", "2",
                   "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"), timeout=120)  # fmt: skip
        return {name: str(path) for name, path in files.items()}

    def start_etcd(self, port: int, tls: bool = False) -> subprocess.Popen:
        """etcd (Debian's etcd-server) on loopback, its data in the run
        directory (kept across restarts); returns once it answers. ``tls``:
        clients reach it over https and must show a certificate of
        ``etcd_pki``'s CA (--client-cert-auth)."""
        data = self.run_dir / "etcd"
        out = open(self.run_dir / "etcd.log", "ab")
        scheme = "https" if tls else "http"
        secure = []
        if tls:
            pki = self.etcd_pki()
            secure = [
                f"--cert-file={pki['server']}",
                f"--key-file={pki['server_key']}",
                f"--trusted-ca-file={pki['ca']}",
                "--client-cert-auth",
            ]
        proc = subprocess.Popen(
            [
                "etcd",
                "--name=lab",
                f"--data-dir={data}",
                f"--listen-client-urls={scheme}://127.0.0.1:{port}",
                f"--advertise-client-urls={scheme}://127.0.0.1:{port}",
                *secure,
                f"--listen-peer-urls=http://127.0.0.1:{port + 1}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{port + 1}",
                f"--initial-cluster=lab=http://127.0.0.1:{port + 1}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        deadline = time.time() + 20
        while time.time() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {proc.returncode}; see {self.run_dir / 'etcd.log'}")
            try:
                if tls:
                    secure_context = ssl.create_default_context(cafile=pki["ca"])
                    secure_context.load_cert_chain(pki["client"], pki["client_key"])
                    url = f"https://127.0.0.1:{port}/health"
                else:
                    secure_context, url = None, f"http://127.0.0.1:{port}/health"
                with urllib.request.urlopen(url, timeout=1, context=secure_context) as answer:
                    if json.loads(answer.read()).get("health") == "true":
                        return proc
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise RuntimeError("etcd did not answer in 20 s")

    def set_controllers(self, ports: list[int], bridge: str | None = None) -> None:
        """Point a bridge at several controllers (each at 127.0.0.1:port)."""
        bridge = bridge or self.bridge
        args: list[str] = []
        ids = []
        for i, port in enumerate(ports):
            ids.append(f"@c{i}")
            args += ["--", f"--id=@c{i}", "create", "controller", f'target="tcp:127.0.0.1:{port}"']
            args += ["max_backoff=1000", "inactivity_probe=5000"]
        self.vsctl(*args[1:], "--", "set", "bridge", bridge, f"controller={','.join(ids)}")

    def controller_roles(self) -> dict[int, tuple[str, bool]]:
        """OpenFlow port of each controller of the switches -> (role the
        switch gives it, whether it is connected)."""
        out = self.vsctl("--format=json", "--columns=target,role,is_connected", "list", "controller")
        roles = {}
        for target, role, connected in json.loads(out)["data"]:
            port = int(target.rsplit(":", 1)[1])
            roles[port] = (role if isinstance(role, str) else "", connected)
        return roles

    def wait_connected(self, timeout: float = 15) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.vsctl("get", "controller", self.bridge, "is_connected").strip() == "true":
                return
            time.sleep(0.1)
        raise RuntimeError("the bridge did not connect to the controller")

    @staticmethod
    def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    # ---------------------------------------------------------- teardown

    def destroy(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        self.procs.clear()
        self.clear_leftovers()

    def clear_leftovers(self) -> None:
        """Remove whatever a lab of this prefix left: processes in its
        namespaces, veths, namespaces, OVS daemons, the run directory."""
        namespaces = [line.split()[0] for line in sh("ip", "netns", "list", check=False).splitlines() if line.strip()]
        mine = [ns for ns in namespaces if ns.startswith(f"{self.prefix}-")]
        for ns in mine:
            for pid in sh("ip", "netns", "pids", ns, check=False).split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for line in sh("pgrep", "-f", f"{self.run_dir}/", check=False).split():
            if int(line) != os.getpid():
                try:
                    os.kill(int(line), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        links = sh("ip", "-o", "link", "show", check=False).splitlines()
        for line in links:
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(f"{self.prefix}-"):
                sh("ip", "link", "del", name, check=False)
        for ns in mine:
            sh("ip", "netns", "del", ns, check=False)
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            pidfile = self.run_dir / f"{daemon}.pid"
            if pidfile.exists():
                try:
                    pid = int(pidfile.read_text().strip())
                    os.kill(pid, signal.SIGTERM)
                    for _ in range(50):
                        os.kill(pid, 0)
                        time.sleep(0.05)
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        if self.run_dir.exists():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of this lab still exists (for tests of the stop command)."""
        found = []
        for line in sh("ip", "netns", "list", check=False).splitlines():
            if line.startswith(f"{self.prefix}-"):
                found.append(f"namespace {line.split()[0]}")
        for line in sh("ip", "-o", "link", "show", check=False).splitlines():
            name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
            if name.startswith(f"{self.prefix}-"):
                found.append(f"link {name}")
        for daemon in ("ovs-vswitchd", "ovsdb-server"):
            if (self.run_dir / f"{daemon}.pid").exists():
                found.append(f"{daemon} pid file")
        out = sh("pgrep", "-af", str(self.run_dir), check=False)
        found += [f"process {line}" for line in out.splitlines() if line.strip() and "pgrep" not in line]
        return found


def parse_stamp(text: str) -> float:
    """Seconds since the epoch of a REST time stamp like 2026-11-26T10:00:00.123Z."""
    seconds, millis = text.rstrip("Z").split(".")
    return calendar.timegm(time.strptime(seconds, "%Y-%m-%dT%H:%M:%S")) + int(millis) / 1000


TOKENS: dict[str, str] = {}  # REST base URL -> bearer token of the controller there


def browse(url: str, budget_ms: int = 3000) -> str:
    """The page at ``url`` as Debian's headless Chromium leaves it once its
    scripts ran for ``budget_ms`` of virtual time (its DOM, serialised)."""
    return subprocess.run(
        ["chromium-headless-shell", "--no-sandbox", "--disable-gpu", "--dump-dom", f"--virtual-time-budget={budget_ms}"]
        + [url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout


def run_at_once(threads: list) -> float:
    """Start ``threads`` together, wait for all of them; the seconds taken."""
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def wait_backends_up(base: str, count: int, pool: str = "web", timeout: float = 20.0) -> None:
    """Until ``count`` backends of ``pool`` are up (a benchmark's start)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        answer = rest(base, "GET", f"/v1/pools/{pool}")[1]
        if [b["status"]["state"] for b in answer.get("backends", [])].count("up") == count:  # 404 until it is there
            return
        time.sleep(0.1)
    raise RuntimeError(f"{count} backends not up in {timeout} s")


def wait_no_hold(base: str, pool: str = "web", timeout: float = 10.0) -> None:
    """Until no slot of ``pool`` is in a handover's hold. Backends found one
    after another keep the new connections of their slots on the first one
    found for a moment (the hold); requests sent before it ends would all
    go there."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not rest(base, "GET", f"/v1/pools/{pool}")[1]["handover"]["holding"]:
            return
        time.sleep(0.1)
    raise RuntimeError(f"slots of pool {pool} still held after {timeout} s")


def rest(base: str, method: str, path: str, body: object = None, timeout: float = 10) -> tuple[int, object]:
    """One JSON request (with the controller's token, if the lab started
    it); returns (status, decoded body or None)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if base in TOKENS:
        headers["Authorization"] = f"Bearer {TOKENS[base]}"
    request = urllib.request.Request(base + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as error:
        raw = error.read()
        return error.code, json.loads(raw) if raw else None

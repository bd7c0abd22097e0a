#!/usr/bin/env python3
"""Prepare a Linux host to be a DSR backend (standard library only: copy this
one file to the host and run it as root).

    dsr_backend.py apply --vip 10.0.0.100 [--vip 2001:db8::100 ...] [--rp-filter loose]
    dsr_backend.py apply --dscp 10.0.0.100=1 [--dscp ...]     (L3DSR: a backend behind a router)
    dsr_backend.py apply --gre --vip 10.0.0.100 [--advmss 1436]  (GRE: a backend behind a router)
    dsr_backend.py check --vip 10.0.0.100 [--vip ...]
    dsr_backend.py undo  --vip 10.0.0.100 [--vip ...]

A DSR backend must accept packets addressed to the VIP and answer from it, but
never answer ARP for it (the switch does; a backend that answers steals the
VIP's traffic). So: each IPv4 VIP as a /32 on ``lo``; ``arp_ignore=1``
(answer ARP only for addresses on the receiving interface); ``arp_announce=2``
(never use the VIP as the source of ARP requests). Each IPv6 VIP as a /128
on ``lo``, and nothing else: Linux answers Neighbor Solicitations only for
addresses of the receiving interface, and never solicits from an address of
another (the two sysctls are built in for IPv6). ``--rp-filter loose`` sets reverse
path filtering to loose mode, needed when client traffic arrives on an
interface other than the route back to the client.

L3DSR (a pool's ``dscp`` backends, behind a router): the switch sends a
request to the backend's own address with a DSCP value that names the VIP
(``GET /v1/vips/NAME`` shows it). ``--dscp VIP=N`` puts the VIP on ``lo``
and adds a stateless nftables rule (table ``dsr_backend``, hook prerouting,
priority -300, before the connection tracker) that writes the VIP over the
destination of packets carrying DSCP N: ``ip dscp N ip daddr set VIP`` (IPv6:
``ip6 dscp N ip6 daddr set VIP``). The kernel fixes the checksums; replies
leave from the VIP by the host's own routes.

GRE (a pool's ``gre`` backends, behind a router; as Maglev's): the switch
sends each request whole in GRE to the backend's own address. ``--gre``
loads the kernel's ``ip_gre`` and brings up its fallback device ``gre0``,
which takes GRE from any sender; the inner packet, addressed to the VIP on
``lo``, arrives on ``gre0`` while the reply leaves by the host's own route,
so reverse path filtering is turned off for ``all`` and ``gre0``.
``--advmss N`` (IPv4) advertises an MSS of N on the host's default routes:
the tunnel adds 24 bytes, so a client's full-size segment would not fit a
1500-byte path; 1436 fits (1500 - 24 - 40). Not needed where the path
between the switch and the backends carries 1524 bytes or more.

``apply`` is idempotent and remembers the sysctl values it replaced, so
``undo`` restores them. ``check`` changes nothing; exit status 0 means ready,
1 means something is missing (each item is printed).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

SYSCTLS = {"net.ipv4.conf.all.arp_ignore": "1", "net.ipv4.conf.all.arp_announce": "2"}
RP_FILTER = ("net.ipv4.conf.all.rp_filter", "2")
NFT_TABLE = "dsr_backend"
SAVED_DIR = Path(os.environ.get("DSR_BACKEND_STATE", "/var/lib/dsr-backend"))


def sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str:
    return sysctl_path(name).read_text().strip()


def write_sysctl(name: str, value: str) -> None:
    sysctl_path(name).write_text(value + "\n")


def lo_addresses() -> set[str]:
    out = subprocess.run(["ip", "-o", "addr", "show", "dev", "lo"], capture_output=True, text=True, check=True)
    return {str(ipaddress.ip_interface(line.split()[3])) for line in out.stdout.splitlines() if "inet" in line}


def on_lo(vip: str) -> str:
    """The VIP as ``lo`` holds it: a host route (/32 or /128)."""
    return f"{vip}/{128 if ':' in vip else 32}"


def saved_file() -> Path:
    """Per network namespace, so backends sharing a filesystem don't clash."""
    return SAVED_DIR / f"netns-{os.stat('/proc/self/ns/net').st_ino}.json"


def wanted_sysctls(args) -> dict[str, str]:
    wanted = dict(SYSCTLS)
    if args.rp_filter == "loose":
        wanted[RP_FILTER[0]] = RP_FILTER[1]
    if args.gre:  # the request comes in on gre0, its reply leaves by another route
        wanted.update({"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.gre0.rp_filter": "0"})
    return wanted


def gre0() -> str | None:
    """The state of the kernel's fallback GRE device ("UP"...), None without it."""
    out = subprocess.run(["ip", "-o", "link", "show", "dev", "gre0"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return "UP" if ",UP" in out.stdout.split(">", 1)[0] or "<UP" in out.stdout else "DOWN"


def load_gre() -> str | None:
    """Load ip_gre and bring gre0 up; why not, or None."""
    if gre0() is None:
        try:
            loaded = subprocess.run(["modprobe", "ip_gre"], capture_output=True, text=True)
        except FileNotFoundError:
            return "no modprobe on this host"
        if loaded.returncode != 0 or gre0() is None:
            return f"the kernel's ip_gre module cannot be loaded ({(loaded.stderr or loaded.stdout).strip()})"
    subprocess.run(["ip", "link", "set", "gre0", "up"], check=True)
    return None


def default_routes() -> list[list[str]]:
    """The host's IPv4 default routes, each as ``ip route`` prints it (split)."""
    out = subprocess.run(["ip", "-4", "route", "show", "default"], capture_output=True, text=True)
    return [line.split() for line in out.stdout.splitlines() if line.strip()]


def route_advmss(route: list[str]) -> int | None:
    return int(route[route.index("advmss") + 1]) if "advmss" in route else None


def set_advmss(route: list[str], advmss: int | None) -> None:
    """Change a default route's advertised MSS (None: none), keeping what
    names it (its gateway, device, protocol, metric, source)."""
    words = ["default"]
    for key in ("via", "dev", "proto", "metric", "src"):
        if key in route:
            words += [key, route[route.index(key) + 1]]
    if "onlink" in route:
        words.append("onlink")
    if advmss:
        words += ["advmss", str(advmss)]
    subprocess.run(["ip", "-4", "route", "change", *words], check=True)


def nft(*args: str, check: bool = True) -> str:
    return subprocess.run(["nft", *args], capture_output=True, text=True, check=check).stdout


def dscp_rules() -> dict[tuple[str, int], tuple[str, int]]:
    """(VIP, DSCP) -> (nft family, rule handle) of the rules this tool made
    (named by their comment)."""
    rules = {}
    for family in ("ip", "ip6"):
        out = nft("-j", "list", "table", family, NFT_TABLE, check=False)
        if not out.strip():
            continue
        for item in json.loads(out).get("nftables", []):
            rule = item.get("rule")
            comment = (rule or {}).get("comment", "")
            if comment.startswith("dsr_backend "):
                fields = dict(part.split("=", 1) for part in comment.split()[1:])
                rules[(fields["vip"], int(fields["dscp"]))] = (family, rule["handle"])
    return rules


def add_dscp_rule(vip: str, dscp: int) -> None:
    family = "ip6" if ":" in vip else "ip"
    nft("add", "table", family, NFT_TABLE)
    nft("add", "chain", family, NFT_TABLE, "prerouting", "{ type filter hook prerouting priority -300; }")
    nft(
        "add", "rule", family, NFT_TABLE, "prerouting", family, "dscp", str(dscp), family, "daddr", "set", vip,
        "comment", f'"dsr_backend vip={vip} dscp={dscp}"',
    )  # fmt: skip


def all_vips(args) -> list[str]:
    return list(dict.fromkeys([*args.vip, *(vip for vip, _dscp in args.dscp)]))


def check(args) -> int:
    missing = 0
    if args.gre:
        state = gre0()
        if state == "UP":
            print("ok: gre0 up (ip_gre takes GRE from any sender)")
        else:
            print(f"missing: gre0 up (now {'absent: ip_gre not loaded' if state is None else 'down'})")
            missing += 1
    if args.advmss:
        for route in default_routes() or [["default"]]:
            if route_advmss(route) == args.advmss:
                print(f"ok: advmss {args.advmss} on {' '.join(route)}")
            else:
                print(f"missing: advmss {args.advmss} on the default route (full-size segments would not fit)")
                missing += 1
    have = lo_addresses()
    rules = dscp_rules() if args.dscp else {}
    for vip, dscp in args.dscp:
        if (vip, dscp) in rules:
            print(f"ok: nft rule DSCP {dscp} -> {vip}")
        else:
            print(f"missing: nft rule DSCP {dscp} -> {vip} (requests from the switch would not reach the VIP)")
            missing += 1
    for vip in all_vips(args):
        if on_lo(vip) in have:
            print(f"ok: {on_lo(vip)} on lo")
        else:
            print(f"missing: {on_lo(vip)} on lo")
            missing += 1
    for name, value in wanted_sysctls(args).items():
        current = read_sysctl(name) if sysctl_path(name).exists() else "absent"
        if current == value:
            print(f"ok: {name} = {value}")
        else:
            print(f"missing: {name} = {value} (now {current})")
            missing += 1
    print("ready" if not missing else f"not ready: {missing} item(s) missing")
    return 0 if not missing else 1


def apply(args) -> int:
    path = saved_file()
    saved = json.loads(path.read_text()) if path.exists() else {}
    if args.gre:
        why = load_gre()
        if why is not None:
            print(f"missing: gre0 ({why}); nothing changed", file=sys.stderr)
            return 1
        print("ok: gre0 up")
    for route in default_routes() if args.advmss else []:
        if route_advmss(route) != args.advmss:
            saved.setdefault("advmss", route_advmss(route) or 0)
            set_advmss(route, args.advmss)
            print(f"changed: advmss {args.advmss} on {' '.join(route)}")
    for name, value in wanted_sysctls(args).items():
        current = read_sysctl(name)
        if current != value:
            saved.setdefault(name, current)
            write_sysctl(name, value)
            print(f"changed: {name} = {value} (was {current})")
        else:
            print(f"ok: {name} = {value}")
    have = lo_addresses()
    for vip in all_vips(args):
        if on_lo(vip) in have:
            print(f"ok: {on_lo(vip)} on lo")
        else:
            subprocess.run(["ip", "addr", "add", on_lo(vip), "dev", "lo"], check=True)
            print(f"changed: {on_lo(vip)} added to lo")
    rules = dscp_rules() if args.dscp else {}
    for vip, dscp in args.dscp:
        for (other, value), (family, handle) in rules.items():
            if other == vip and value != dscp:  # the VIP's value moved
                nft("delete", "rule", family, NFT_TABLE, "prerouting", "handle", str(handle))
        if (vip, dscp) in rules:
            print(f"ok: nft rule DSCP {dscp} -> {vip}")
        else:
            add_dscp_rule(vip, dscp)
            print(f"changed: nft rule DSCP {dscp} -> {vip} added")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if saved:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(saved))
    return 0


def undo(args) -> int:
    have = lo_addresses()
    for vip in all_vips(args):
        if on_lo(vip) in have:
            subprocess.run(["ip", "addr", "del", on_lo(vip), "dev", "lo"], check=True)
            print(f"changed: {on_lo(vip)} removed from lo")
    rules = dscp_rules() if args.dscp else {}
    for (vip, dscp), (family, handle) in rules.items():
        if vip in all_vips(args):
            nft("delete", "rule", family, NFT_TABLE, "prerouting", "handle", str(handle))
            print(f"changed: nft rule DSCP {dscp} -> {vip} removed")
    path = saved_file()
    saved = json.loads(path.read_text()) if path.exists() else {}
    for name, value in saved.items():
        if name == "advmss":
            for route in default_routes():
                set_advmss(route, value or None)
                print(f"changed: advmss on {' '.join(route)} restored")
            continue
        write_sysctl(name, value)
        print(f"changed: {name} = {value} (restored)")
    if path.exists():
        path.unlink()
    return 0


def parse_vip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--vip: {text!r} is not an IPv4 or IPv6 address") from None
    if address.is_link_local or address.is_multicast or address.is_unspecified or address.is_loopback:
        raise argparse.ArgumentTypeError(f"--vip: {text} is not a unicast host address")
    return str(address)


def parse_dscp(text: str) -> tuple[str, int]:
    vip, _, value = text.partition("=")
    if not value.isdigit() or not 1 <= int(value) <= 63:
        raise argparse.ArgumentTypeError(f"--dscp: {text!r} is not VIP=N with N from 1 to 63")
    return parse_vip(vip), int(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("apply", "check", "undo"))
    parser.add_argument("--vip", action="append", type=parse_vip, default=[], help="a VIP this host serves")
    parser.add_argument(
        "--dscp", action="append", type=parse_dscp, default=[], help="VIP=N: L3DSR, requests with DSCP N are for VIP"
    )
    parser.add_argument("--rp-filter", choices=("keep", "loose"), default="keep")
    parser.add_argument("--gre", action="store_true", help="GRE: requests come whole in GRE to this host (gre0)")
    parser.add_argument("--advmss", type=int, default=0, help="advertise this MSS on the default routes (GRE: 1436)")
    args = parser.parse_args(argv)
    if args.advmss and not 536 <= args.advmss <= 9000:
        parser.error(f"--advmss: {args.advmss} is not an MSS from 536 to 9000")
    if not args.vip and not args.dscp:
        parser.error("give at least one --vip or --dscp")
    if os.geteuid() != 0 and args.action != "check":
        print("dsr_backend: must run as root", file=sys.stderr)
        return 2
    return {"apply": apply, "check": check, "undo": undo}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())

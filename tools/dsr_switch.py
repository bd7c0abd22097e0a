#!/usr/bin/env python3
"""Prepare an Open vSwitch bridge for ryu_dsr, or check one (standard library
only: copy this one file to the switch's host and run it as root).

    dsr_switch.py apply BRIDGE --controller tcp:CONTROLLER:6653 [--controller ...]
                  [--dpid 0000000000000001] [--datapath-type netdev|system] [--manager ptcp:6640:ADDRESS]
                  [--conntrack-limit N [--conntrack-zone 1493]] [--gre-port dsr-gre]
    dsr_switch.py check BRIDGE [--controller tcp:CONTROLLER:6653 ...] [--dpid ...]

What ryu_dsr needs of a bridge:

- OpenFlow 1.3 among its protocols;
- ``fail_mode=secure``: with the default (standalone), a bridge that loses
  every controller adds a NORMAL flow above every rule, so the VIP's
  traffic is flooded by MAC learning instead of balanced, and backends
  answer ARP for the VIP; secure keeps the flows the controller left, so a
  controller restart costs no connection;
- the controller targets (several for a cluster of controllers);
- a datapath id of your choosing (``dsr.switches`` names the switches a
  controller takes; a bridge's id otherwise follows its MAC, which can change);
- an OVSDB manager target the controller can reach (``--manager``, e.g.
  ``ptcp:6640:ADDRESS``): it gives the handover's connection-tracking zone
  its timeout policy there, and handovers then run at full speed
  (``handover_tracking = auto``; without it they pin each connection);
- a bound on the connection tracker's entries in that zone
  (``--conntrack-limit``: ``ovs-appctl dpctl/ct-set-limits``, which Open
  vSwitch 3.1 keeps until ovs-vswitchd restarts: run apply again then).

- for gre backends (behind routers, the request carried whole in GRE):
  one GRE port (``--gre-port``, the name the ``dsr.gre_port`` setting
  gives, ``dsr-gre`` by default) with ``options:remote_ip=flow`` (the
  controller sets each backend's address per flow) and
  ``options:packet_type=legacy_l3`` (the request travels as an IP packet,
  24 bytes of GRE and IP around it). Open vSwitch routes the tunnel by its
  own table (``ovs-appctl ovs/route/show``: the host's routes, or
  ``ovs/route/add``) out of a bridge that holds the tunnel's source address.

``apply`` makes the bridge if it does not exist, changes only what differs,
and prints each change (``nothing to change`` otherwise). ``check`` changes
nothing; it prints what is wrong and exits 1, or 0 when the bridge is ready
(whether its controllers are connected now is shown, not judged). Open
vSwitch's database is found as ``ovs-vsctl`` finds it (``OVS_RUNDIR``), or
``--db``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

OPENFLOW = "OpenFlow13"


class Vsctl:
    def __init__(self, db: str | None) -> None:
        self.db = db

    def __call__(self, *args: str) -> str:
        command = ["ovs-vsctl", "--timeout=10", *([f"--db={self.db}"] if self.db else []), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"dsr_switch: {' '.join(command)}: {done.stderr.strip()}")
        return done.stdout.strip()

    def tunnel(self, name: str) -> dict | None:
        """The interface ``name``'s bridge, type and options, or None."""
        out = json.loads(self("--format=json", "--columns=type,options", "find", "interface", f"name={name}"))
        if not out["data"]:
            return None
        kind, options = out["data"][0]
        return {"bridge": self("port-to-br", name), "type": kind, "options": _map(options)}

    def bridge(self, name: str) -> dict | None:
        """The bridge's columns that matter here, or None if it does not exist."""
        if name not in self("list-br").split():
            return None
        fields = ("protocols", "fail_mode", "datapath_type", "other_config", "datapath_id")
        out = json.loads(self("--format=json", f"--columns={','.join(fields)}", "find", "bridge", f"name={name}"))
        row = dict(zip(out["headings"], out["data"][0]))
        controllers = self("get-controller", name).split()
        connected = {}
        if controllers:
            listed = json.loads(self("--format=json", "--columns=target,is_connected,role", "list", "controller"))
            connected = {target: (is_connected, role) for target, is_connected, role in listed["data"]}
        return {
            "protocols": _set(row["protocols"]),
            "fail_mode": row["fail_mode"] if isinstance(row["fail_mode"], str) else "",
            "datapath_type": row["datapath_type"],
            "dpid": _map(row["other_config"]).get("datapath-id", ""),
            "datapath_id": row["datapath_id"] if isinstance(row["datapath_id"], str) else "",
            "controllers": sorted(controllers),
            "connected": connected,
        }


def _set(value) -> list[str]:
    """An OVSDB set in its JSON form: a bare value, or ["set", [...]]."""
    if isinstance(value, list) and value and value[0] == "set":
        return list(value[1])
    return [value] if isinstance(value, str) else []


def _map(value) -> dict[str, str]:
    return dict(value[1]) if isinstance(value, list) and value and value[0] == "map" else {}


def _dpid(text: str) -> str:
    digits = text.lower().removeprefix("0x").replace(":", "")
    if not re.fullmatch(r"[0-9a-f]{1,16}", digits) or int(digits, 16) == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be 1 to 16 hex digits, not 0")
    return f"{int(digits, 16):016x}"


def _target(text: str) -> str:
    if not re.fullmatch(r"(tcp|ssl):[^:\s]+:\d{1,5}", text) and not re.fullmatch(
        r"(tcp|ssl):\[[0-9a-fA-F:]+\]:\d{1,5}", text
    ):
        raise argparse.ArgumentTypeError(f"{text!r}: must be tcp:HOST:PORT or ssl:HOST:PORT")
    return text


def _manager(text: str) -> str:
    if not re.fullmatch(r"p?(tcp|ssl):\d{1,5}(:\S+)?|p?(tcp|ssl):\S+:\d{1,5}|punix:/\S+", text):
        raise argparse.ArgumentTypeError(f"{text!r}: must be an OVSDB target such as ptcp:6640:ADDRESS")
    return text


GRE_OPTIONS = {"remote_ip": "flow", "packet_type": "legacy_l3"}


def gre_problem(tunnel: dict | None, bridge: str, port: str) -> str | None:
    """What is wrong with the bridge's GRE port for gre backends, or None."""
    if tunnel is None or tunnel["bridge"] != bridge:
        return f"no GRE port {port} on {bridge}: gre backends get no connection through this switch"
    if tunnel["type"] != "gre":
        return f"port {port} is of type {tunnel['type'] or 'system'}, not gre"
    wrong = [f"{key}={value}" for key, value in GRE_OPTIONS.items() if tunnel["options"].get(key) != value]
    if wrong:
        return f"GRE port {port} needs options {', '.join(wrong)} (one port for every backend, IP packets inside)"
    return None


def problems(
    bridge: dict | None, name: str, controllers: list[str], dpid: str | None, gre: tuple[dict | None, str] | None = None
) -> list[str]:
    """What keeps the bridge from serving ryu_dsr, one line each."""
    if bridge is None:
        return [f"bridge {name} does not exist"]
    found = []
    if gre is not None:
        wrong = gre_problem(gre[0], name, gre[1])
        if wrong:
            found.append(wrong)
    if bridge["protocols"] and OPENFLOW not in bridge["protocols"]:
        found.append(f"protocols {','.join(bridge['protocols'])} lack {OPENFLOW}: ryu_dsr speaks OpenFlow 1.3")
    elif not bridge["protocols"]:
        found.append(f"protocols not set: set {OPENFLOW} (ryu_dsr speaks OpenFlow 1.3)")
    if bridge["fail_mode"] != "secure":
        mode = bridge["fail_mode"] or "standalone (the default)"
        found.append(
            f"fail_mode is {mode}: unsafe, a bridge that loses its controllers adds a NORMAL flow above every "
            "DSR rule (the VIP is flooded, backends answer ARP for it); set fail_mode=secure"
        )
    if not bridge["controllers"]:
        found.append("no controller: set the ryu_dsr controller's target (tcp:HOST:6653)")
    elif controllers and sorted(controllers) != bridge["controllers"]:
        found.append(f"controllers are {', '.join(bridge['controllers'])}, not {', '.join(sorted(controllers))}")
    if dpid and bridge["dpid"] != dpid:
        found.append(f"datapath id is {bridge['dpid'] or bridge['datapath_id'] or 'not set'}, not {dpid}")
    return found


def apply(
    vsctl: Vsctl,
    name: str,
    controllers: list[str],
    dpid: str | None,
    datapath_type: str | None,
    manager: str | None = None,
    conntrack_limit: int | None = None,
    conntrack_zone: int = 1493,
    gre_port: str | None = None,
) -> list[str]:
    """Make the bridge ready; the changes made, one line each."""
    changes = []
    bridge = vsctl.bridge(name)
    if bridge is None:
        vsctl("add-br", name)
        changes.append(f"bridge {name}: made")
        bridge = vsctl.bridge(name)
    settings = []
    if datapath_type and bridge["datapath_type"] != datapath_type:
        settings.append(f"datapath_type={datapath_type}")
        changes.append(f"datapath_type: {bridge['datapath_type'] or '(default)'} -> {datapath_type}")
    if OPENFLOW not in bridge["protocols"]:
        protocols = sorted(set(bridge["protocols"]) | {OPENFLOW})
        settings.append(f"protocols={','.join(protocols)}")
        changes.append(f"protocols: {','.join(bridge['protocols']) or '(default)'} -> {','.join(protocols)}")
    if bridge["fail_mode"] != "secure":
        settings.append("fail_mode=secure")
        changes.append(f"fail_mode: {bridge['fail_mode'] or 'standalone (default)'} -> secure")
    if dpid and bridge["dpid"] != dpid:
        settings.append(f"other-config:datapath-id={dpid}")
        changes.append(f"datapath id: {bridge['dpid'] or bridge['datapath_id'] or '(from its MAC)'} -> {dpid}")
    if settings:
        vsctl("set", "bridge", name, *settings)
    if controllers and sorted(controllers) != bridge["controllers"]:
        vsctl("set-controller", name, *controllers)
        changes.append(f"controllers: {', '.join(bridge['controllers']) or '(none)'} -> {', '.join(controllers)}")
    if conntrack_limit is not None:
        done = subprocess.run(
            ["ovs-appctl", "dpctl/ct-set-limits", f"zone={conntrack_zone},limit={conntrack_limit}"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"dsr_switch: ovs-appctl dpctl/ct-set-limits: {done.stderr.strip()}")
        changes.append(f"connection tracker: zone {conntrack_zone} holds at most {conntrack_limit} entries")
    if gre_port:
        tunnel = vsctl.tunnel(gre_port)
        options = [f"options:{key}={value}" for key, value in GRE_OPTIONS.items()]
        if tunnel is None:
            vsctl("add-port", name, gre_port, "--", "set", "interface", gre_port, "type=gre", *options)
            changes.append(f"GRE port {gre_port}: made (remote_ip=flow, packet_type=legacy_l3)")
        elif gre_problem(tunnel, name, gre_port):
            if tunnel["bridge"] != name:
                raise SystemExit(f"dsr_switch: port {gre_port} is on bridge {tunnel['bridge']}, not {name}")
            vsctl("set", "interface", gre_port, "type=gre", *options)
            changes.append(f"GRE port {gre_port}: type gre, remote_ip=flow, packet_type=legacy_l3")
    managers = vsctl("get-manager").split()
    if manager and manager not in managers:
        vsctl("set-manager", *managers, manager)
        changes.append(f"OVSDB managers: {', '.join(managers) or '(none)'} -> {', '.join([*managers, manager])}")
    return [f"bridge {name}: {change}" if not change.startswith("bridge ") else change for change in changes]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dsr_switch.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("apply", "check"))
    parser.add_argument("bridge")
    parser.add_argument("--controller", action="append", default=[], type=_target, help="tcp:HOST:PORT (repeatable)")
    parser.add_argument("--dpid", type=_dpid, help="datapath id, hex (as ovs-vsctl shows it)")
    parser.add_argument("--datapath-type", choices=("system", "netdev"), help="apply: the bridge's datapath type")
    parser.add_argument(
        "--manager", type=_manager, help="apply: an OVSDB manager target for the controller (ptcp:6640:ADDRESS)"
    )
    parser.add_argument("--conntrack-limit", type=int, help="apply: most tracker entries in the handover zone")
    parser.add_argument("--conntrack-zone", type=int, default=1493, help="the handover zone (dsr.conntrack_zone)")
    parser.add_argument("--gre-port", help="the GRE port for gre backends (dsr.gre_port, dsr-gre by default)")
    parser.add_argument("--db", help="Open vSwitch's database (default: as ovs-vsctl finds it)")
    args = parser.parse_args(argv)
    vsctl = Vsctl(args.db)
    if args.action == "apply":
        if not args.controller and vsctl.bridge(args.bridge) is None:
            parser.error("a new bridge needs --controller")
        made = apply(
            vsctl,
            args.bridge,
            args.controller,
            args.dpid,
            args.datapath_type,
            args.manager,
            args.conntrack_limit,
            args.conntrack_zone,
            args.gre_port,
        )
        for line in made or ["nothing to change"]:
            print(line)
    bridge = vsctl.bridge(args.bridge)
    gre = (vsctl.tunnel(args.gre_port), args.gre_port) if args.gre_port and bridge is not None else None
    found = problems(bridge, args.bridge, args.controller, args.dpid, gre)
    for line in found:
        print(f"problem: {line}")
    if bridge is not None:
        for target in bridge["controllers"]:
            connected, role = bridge["connected"].get(target, (False, ""))
            state = "connected" if connected is True else "not connected"
            print(f"controller {target}: {state}" + (f" ({role})" if isinstance(role, str) and role else ""))
    managers = vsctl("get-manager").split()
    if managers:
        print(f"OVSDB managers: {', '.join(managers)} (the controller may set the handover zone there)")
    else:
        print("OVSDB managers: none (the controller cannot set the handover zone: handovers pin each connection)")
    if not found:
        print(f"ok: bridge {args.bridge} is ready for ryu_dsr (OpenFlow 1.3, fail_mode=secure)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

"""``dsrctl``: the REST API from a shell.

    dsrctl status                              the whole picture on one screen
    dsrctl pools | pool NAME                   list, or one pool with its backends
    dsrctl pool-add NAME IP[,IP...] | pool-rm NAME
    dsrctl backend-add POOL IP [--weight W] [--forwarding l2|dscp] | backend-rm POOL IP | weight POOL IP W
    dsrctl vips | vip NAME
    dsrctl vip-add NAME IP PROTOCOL PORT|all POOL [--hash 5tuple|source_ip] [--backend-port PORT] | vip-rm NAME
    dsrctl switches | topology | cluster | stats | config | apply FILE [--dry-run]
    dsrctl trace VIP CLIENT CLIENT_PORT [--later] [--port P] [--switch DPID --in-port N | --client-mac MAC] [--check]

Tables by default, ``--json`` for the API's own JSON. The API address is
``--api`` or ``DSRCTL_API`` (default http://127.0.0.1:8080), the token
``--token``, ``DSRCTL_TOKEN``, or the first line of ``--token-file`` (the
controller's token file). Exit status: 0 done, 1 the API refused (its
message is printed), 2 the API could not be reached or the command line
is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_TOKEN_FILE = "/var/lib/ryu_dsr/api-token"


class Refused(Exception):
    """The API answered with an error."""


class Unreachable(Exception):
    """No answer from the API."""


class Client:
    def __init__(self, api: str, token: str | None) -> None:
        self.api = api.rstrip("/")
        self.token = token

    def call(self, method: str, path: str, body: Any = None) -> Any:
        return self.exchange(method, path, body)[0]

    def pages(self, path: str) -> list[Any]:
        """Every page of a paged GET (``limit``/``cursor``), in order."""
        out, cursor = [], None
        while True:
            sep = "&" if "?" in path else "?"
            payload, headers = self.exchange("GET", path + (f"{sep}cursor={cursor}" if cursor else ""))
            out.append(payload)
            cursor = headers.get("X-Next-Cursor")
            if not cursor:
                return out

    def exchange(self, method: str, path: str, body: Any = None) -> tuple[Any, dict]:
        """(JSON answer, headers) of one request."""
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.api + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                raw, got = answer.read(), dict(answer.headers)
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                payload = json.loads(raw)
                message = payload.get("message", raw.decode(errors="replace"))
            except ValueError:
                message = raw.decode(errors="replace")[:200]
            raise Refused(f"{method} {path}: {error.code} {message}") from None
        except OSError as error:
            raise Unreachable(f"cannot reach the API at {self.api}: {error}") from None
        return (json.loads(raw) if raw else None), got


def _token(args) -> str | None:
    if args.token:
        return args.token
    if os.environ.get("DSRCTL_TOKEN"):
        return os.environ["DSRCTL_TOKEN"]
    try:
        with open(args.token_file) as handle:
            line = handle.readline().strip()
    except OSError:
        return None
    return line.split(":", 1)[1] if ":" in line else line or None


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def _backend_rows(pool: dict, traffic: dict | None = None) -> list[list[Any]]:
    rows = []
    for b in pool["backends"]:
        st = b["status"]
        t = (traffic or {}).get(b["ip"], {})
        rows.append(
            [
                b["ip"],
                b["weight"]
                if st.get("effective_weight", b["weight"]) == b["weight"]
                else f"{st['effective_weight']} of {b['weight']}",
                st["state"],
                st["slots"],
                st["handover_slots"],
                st["pinned_connections"],
                st.get("active_connections"),
                st["mac"],
                t.get("new_connections"),
                t.get("rates", {}).get("new_connections"),
                st["reason"],
            ]
        )
    return rows


BACKEND_HEADER = [
    "backend",
    "weight",
    "state",
    "slots",
    "handover",
    "pinned",
    "open",
    "mac",
    "conns",
    "conns/s",
    "reason",
]


def _handover_line(pool: dict) -> str:
    """The pool's handover in one line: slots, those checked or holding,
    when it ends at the latest, how each switch keeps new connections."""
    h = pool.get("handover") or {}
    methods = ", ".join(f"{t['dpid']:016x} {t['method']}" for t in h.get("tracking", [])) or "no switch"
    if not h.get("slots"):
        return f"handover: none (new connections of moved slots: {methods})"
    return (
        f"handover: {h['slots']} slots ({h.get('checking', 0)} checked, {h.get('holding', 0)} holding), "
        f"ends by {h.get('ends')} or once quiet for {h.get('quiet')} s; new connections: {methods}"
    )


def status(client: Client) -> str:
    """Switches, then each VIP with its pool's backends, like ipvsadm -L -n --stats."""
    out = []
    switches = client.call("GET", "/v1/switches")
    out.append(
        table(
            [
                [f"{s['dpid']:016x}", s["mode"], s["flows"], s["hosts"], s["errors"], "yes" if s["in_line"] else "no"]
                for s in switches
            ],
            ["switch", "mode", "flows", "hosts", "errors", "in line"],
        )
    )
    for page in client.pages("/v1/status?limit=1000"):
        for pool in page["pools"]:
            traffic = {b["ip"]: b["traffic"] for b in pool["backends"]}
            for vip in pool["vips"]:
                port = vip["port"] if vip["port"] is not None else "*"
                t = vip["traffic"]
                out.append(
                    f"\n{vip['protocol'].upper()}  {_bracketed(vip['ip'])}:{port}"
                    + (f" -> backends' :{vip['backend_port']}" if vip.get("backend_port") else "")
                    + f"  {vip['name']}  pool {vip['pool']}  "
                    f"hash {vip['hash']}  conns {t['new_connections']}  packets {t['packets']}"
                )
            if not pool["vips"]:
                out.append(f"\npool {pool['name']} (no VIP)")
            if pool.get("failing_open"):
                out.append(f"pool {pool['name']} FAILING OPEN: no backend passes its checks, all take new connections")
            if (pool.get("handover") or {}).get("slots"):
                out.append(_handover_line(pool))
            out.append(table(_backend_rows(pool, traffic), BACKEND_HEADER))
    return "\n".join(out)


def run(args, client: Client) -> Any:
    """What the command asks: (JSON answer, text for a person)."""
    c = args.command
    if c == "status":
        return None, status(client)
    if c == "pools":
        pools = client.call("GET", "/v1/pools?limit=10000")
        rows = [[p["name"], len(p["backends"]), p["slots"], p["health_check"]["kind"]] for p in pools]
        return pools, table(rows, ["pool", "backends", "slots", "check"])
    if c == "pool":
        pool = client.call("GET", f"/v1/pools/{args.name}")
        return pool, table(_backend_rows(pool), BACKEND_HEADER) + "\n" + _handover_line(pool)
    if c == "pool-add":
        body = {"name": args.name, "backends": [{"ip": ip} for ip in args.ips.split(",") if ip]}
        return client.call("POST", "/v1/pools", body), f"pool {args.name} created"
    if c == "pool-rm":
        return client.call("DELETE", f"/v1/pools/{args.name}"), f"pool {args.name} deleted"
    if c == "backend-add":
        body = {"ip": args.ip, **({"weight": args.weight} if args.weight is not None else {})}
        if args.forwarding:
            body["forwarding"] = args.forwarding
        return client.call("POST", f"/v1/pools/{args.pool}/backends", body), f"{args.ip} added to {args.pool}"
    if c == "backend-rm":
        return client.call("DELETE", f"/v1/pools/{args.pool}/backends/{args.ip}"), f"{args.ip} removed"
    if c == "weight":
        answer = client.call("PATCH", f"/v1/pools/{args.pool}/backends/{args.ip}", {"weight": args.weight})
        return answer, f"{args.ip} in {args.pool}: weight {args.weight}"
    if c == "vips":
        vips = client.call("GET", "/v1/vips?limit=10000")
        rows = [
            [
                v["name"],
                v["ip"],
                v["protocol"],
                v["port"] or "all",
                v["backend_port"] or "-",
                v["pool"],
                v["hash"],
                v["status"]["backends_up"],
            ]
            for v in vips
        ]
        return vips, table(rows, ["vip", "address", "protocol", "port", "backend port", "pool", "hash", "up"])
    if c == "vip":
        vip = client.call("GET", f"/v1/vips/{args.name}")
        return vip, "\n".join(f"{k}: {v}" for k, v in vip.items())
    if c == "vip-add":
        body = {
            "name": args.name,
            "ip": args.ip,
            "protocol": args.protocol,
            "port": None if args.port == "all" else _port(args.port),
            "pool": args.pool,
            "hash": args.hash,
        }
        if args.backend_port is not None:
            if not args.backend_port.isdigit():
                raise Refused(f"backend-port: {args.backend_port!r} is not a number")
            body["backend_port"] = int(args.backend_port)
        return client.call("POST", "/v1/vips", body), f"VIP {args.name} created"
    if c == "vip-rm":
        return client.call("DELETE", f"/v1/vips/{args.name}"), f"VIP {args.name} deleted"
    if c == "topology":
        topology = client.call("GET", "/v1/topology")
        switches = table(
            [[f"{s['dpid']:016x}", "transit" if s["transit"] else "edge", len(s["ports"]), len(s["edge_ports"])]
             for s in topology["switches"]],
            ["switch", "role", "ports", "edge ports"],
        )  # fmt: skip
        links = table(
            [[f"{k['a']['dpid']:016x}:{k['a']['port']}", f"{k['b']['dpid']:016x}:{k['b']['port']}", "yes" if k["tree"] else "no"]
             for k in topology["links"]],
            ["end", "end", "flood tree"],
        )  # fmt: skip
        hosts = table(
            [[h["mac"], f"{h['dpid']:016x}", h["port"], ",".join(h["backends"])] for h in topology["hosts"]],
            ["host", "switch", "port", "backend of"],
        )
        return topology, "\n\n".join((switches, links, hosts))
    if c == "cluster":
        cluster = client.call("GET", "/v1/cluster")
        head = f"{cluster.get('node', 'this controller')}: {cluster['role']} ({cluster['mode']})"
        if cluster["mode"] == "etcd":
            etcd = cluster["etcd"]
            head += f"; master {cluster['master']}, generation {cluster['generation']}; etcd {etcd['endpoint']} "
            head += "healthy" if etcd["healthy"] else f"unreachable: {etcd['error']}"
        members = table(
            [[m["node"], m["rest"], m["since_revision"]] for m in cluster.get("members", [])],
            ["candidate (in line)", "REST", "since revision"],
        )
        switches = table([[s["dpid"], s["role"]] for s in cluster["switches"]], ["switch", "our role there"])
        return cluster, "\n\n".join((head, members, switches))
    if c == "switches":
        switches = client.call("GET", "/v1/switches")
        return switches, table(
            [[f"{s['dpid']:016x}", s["mode"], s["flows"], s["errors"]] for s in switches],
            ["switch", "mode", "flows", "errors"],
        )
    if c == "stats":
        pages = client.pages("/v1/stats?limit=1000")
        stats = pages[0] | {"vips": {n: t for p in pages for n, t in p["vips"].items()}}
        stats["pools"] = {n: t for p in pages for n, t in p["pools"].items()}
        rows = [
            [n, t["new_connections"], t["packets"], t["bytes"], t["rates"]["new_connections"]]
            for n, t in sorted(stats["vips"].items())
        ]
        return stats, table(rows, ["vip", "conns", "packets", "bytes", "conns/s"])
    if c == "config":
        document = client.call("GET", "/v1/config")
        return document, json.dumps(document, indent=1)
    if c == "apply":
        try:
            with open(args.file) as handle:
                document = json.load(handle)
        except (OSError, ValueError) as error:
            raise Refused(f"{args.file}: {error}") from None
        answer = client.call("PUT", "/v1/config" + ("?dry_run=true" if args.dry_run else ""), document)
        return answer, json.dumps(answer, indent=1)
    if c == "trace":
        return trace(args, client)
    raise SystemExit(2)


def trace(args, client: Client) -> tuple[dict, str]:
    """Where the client's packet goes and why; with ``--check``, the same
    question put to each switch's ``ofproto/trace`` (run where the switches
    are), a difference being a fault (exit status 1)."""
    query = {"vip": args.vip, "client": args.client, "client_port": args.client_port}
    query["packet"] = "later" if args.later else "first"
    for name in ("port", "switch", "in_port", "client_mac"):
        if getattr(args, name) is not None:
            query[name] = getattr(args, name)
    answer = client.call("GET", "/v1/trace?" + urllib.parse.urlencode(query))
    lines = [answer["verdict"]]
    if answer["hash"]:
        hashed = answer["hash"]
        value = f" = {hashed['value']}" if hashed["value"] else ""
        lines.append(f"hash: {hashed['by']}{value}; slot {answer['slot']['slot']} of {answer['slot']['of']}")
    lines += [f"why: {words}" for words in answer["why"]]
    lines += [f"note: {words}" for words in answer["notes"]]
    lines.append("")
    for step in answer["steps"]:
        rule = f"{step['table']}/{step['rule']}" if step["rule"] else f"{step['table']} (miss)"
        lines.append(f"{step['switch']:>4x} {'  ' * step['depth']}{rule}: {step['says']}")
    if args.check:
        from ryu_dsr import trace_check

        names = trace_check.bridges()
        faults = []
        for hop in answer["ofproto_trace"]:
            bridge = names.get(hop["switch"])
            if bridge is None:
                faults.append(f"switch {hop['switch']:#x}: no bridge of that datapath id on this machine")
                continue
            faults += trace_check.compare(answer, hop["switch"], trace_check.ofproto_trace(bridge, hop["flow"]))
        answer["check"] = {"faults": faults}
        lines.append("")
        lines += [f"FAULT: {fault}" for fault in faults] or ["check: every switch's ofproto/trace agrees"]
        if faults:
            raise Refused("\n".join(lines))
    return answer, "\n".join(lines)


def _port(text: str) -> int:
    if not text.isdigit():
        raise Refused(f"port: {text!r} is not a number or 'all'")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dsrctl", description=__doc__.split("\n\n")[0])
    p.add_argument("--api", default=os.environ.get("DSRCTL_API", DEFAULT_API))
    p.add_argument("--token")
    p.add_argument("--token-file", default=DEFAULT_TOKEN_FILE)
    p.add_argument("--json", action="store_true", help="print the API's JSON")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("status", "pools", "vips", "switches", "topology", "cluster", "stats", "config"):
        sub.add_parser(name)
    for name in ("pool", "pool-rm", "vip", "vip-rm"):
        sub.add_parser(name).add_argument("name")
    add = sub.add_parser("pool-add")
    add.add_argument("name")
    add.add_argument("ips", help="backend addresses, comma separated")
    backend = sub.add_parser("backend-add")
    backend.add_argument("pool")
    backend.add_argument("ip")
    backend.add_argument("--weight", type=int)
    backend.add_argument(
        "--forwarding", choices=("l2", "dscp", "gre"), help="dscp, gre: behind a router (L3DSR; GRE as Maglev's)"
    )
    rm = sub.add_parser("backend-rm")
    rm.add_argument("pool")
    rm.add_argument("ip")
    weight = sub.add_parser("weight")
    weight.add_argument("pool")
    weight.add_argument("ip")
    weight.add_argument("weight", type=int)
    vip = sub.add_parser("vip-add")
    for name in ("name", "ip", "protocol", "port", "pool"):
        vip.add_argument(name)
    vip.add_argument("--hash", default="5tuple", choices=("5tuple", "source_ip"))
    vip.add_argument("--backend-port", help="the port the backends listen on, when not PORT")
    trace = sub.add_parser("trace", help="where a client's packet to a VIP goes, and why")
    trace.add_argument("vip")
    trace.add_argument("client", help="the client's address")
    trace.add_argument("client_port")
    trace.add_argument("--later", action="store_true", help="a later packet of the connection, not its first")
    trace.add_argument("--port", help="the destination port, when not the VIP's")
    trace.add_argument("--switch", help="where the packet enters (datapath id), with --in-port")
    trace.add_argument("--in-port", dest="in_port")
    trace.add_argument("--client-mac", dest="client_mac", help="where it enters: where this MAC was learned")
    trace.add_argument("--check", action="store_true", help="compare with ovs-appctl ofproto/trace on this machine")
    apply = sub.add_parser("apply")
    apply.add_argument("file")
    apply.add_argument("--dry-run", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = Client(args.api, _token(args))
    try:
        answer, text = run(args, client)
    except Refused as error:
        print(f"dsrctl: {error}", file=sys.stderr)
        return 1
    except Unreachable as error:
        print(f"dsrctl: {error}", file=sys.stderr)
        return 2
    print(json.dumps(answer, indent=1) if args.json and answer is not None else text)
    return 0


def _bracketed(ip: str) -> str:
    """An address as it is written before a port (IPv6 in brackets)."""
    return f"[{ip}]" if ":" in ip else ip


if __name__ == "__main__":
    sys.exit(main())

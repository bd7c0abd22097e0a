"""The one thing the controller asks of a switch's OVSDB: a timeout policy
for the handover's connection-tracking zone.

A DSR switch's connection tracker sees one direction of a connection: it
keeps it in SYN_SENT (30 s by default in Open vSwitch) and, once the client
sends data, fails its sequence checks and stops refreshing it. The label a
handover gives a new connection must outlive the window (``handover
tracking = conntrack``), so the zone gets a timeout policy with every TCP
state as long as ``handover_window``: the rows ``ovs-vsctl add-zone-tp``
writes (``CT_Timeout_Policy``, ``CT_Zone``, the bridge's ``Datapath``),
written here over OVSDB's JSON-RPC (RFC 7047), the way Neutron and OVN
reach a switch through its manager connection. Standard library only; under
ryu-manager the socket is eventlet's.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

TCP_STATES = ("tcp_syn_sent", "tcp_syn_recv", "tcp_established", "tcp_fin_wait", "tcp_time_wait", "tcp_close")
OWNER = ("ryu_dsr", "handover")  # external_ids of the rows written here


class OvsdbError(Exception):
    """The switch's OVSDB could not be reached, or refused what was asked."""


class Ovsdb:
    """A JSON-RPC session with one OVSDB server (``tcp:HOST:PORT`` or ``unix:PATH``)."""

    def __init__(self, remote: str, timeout: float = 5.0) -> None:
        kind, _, where = remote.partition(":")
        try:
            if kind == "unix":
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.settimeout(timeout)
                self.sock.connect(where)
            elif kind == "tcp":
                host, _, port = where.rpartition(":")
                self.sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
            else:
                raise OvsdbError(f"{remote}: not tcp:HOST:PORT or unix:PATH")
        except OSError as error:
            raise OvsdbError(f"cannot reach OVSDB at {remote}: {error}") from None
        self.remote = remote
        self.buffer = ""
        self.next_id = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Ovsdb:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def transact(self, *ops: dict) -> list:
        """One transaction of ``ops`` on Open_vSwitch; each op's result."""
        self.next_id += 1
        ident = self.next_id
        self._send({"method": "transact", "params": ["Open_vSwitch", *ops], "id": ident})
        while True:
            message = self._receive()
            if message.get("method") == "echo":  # the server's keepalive
                self._send({"id": message.get("id"), "result": message.get("params", []), "error": None})
                continue
            if message.get("id") != ident:
                continue
            if message.get("error"):
                raise OvsdbError(f"{self.remote}: {message['error']}")
            results = message.get("result") or []
            for result in results:
                if isinstance(result, dict) and result.get("error"):
                    raise OvsdbError(f"{self.remote}: {result['error']}: {result.get('details', '')}")
            return results

    def _send(self, message: dict) -> None:
        try:
            self.sock.sendall(json.dumps(message).encode())
        except OSError as error:
            raise OvsdbError(f"{self.remote}: {error}") from None

    def _receive(self) -> dict:
        decoder = json.JSONDecoder()
        while True:
            text = self.buffer.lstrip()
            if text:
                try:
                    message, end = decoder.raw_decode(text)
                except ValueError:
                    pass
                else:
                    self.buffer = text[end:]
                    return message
            try:
                chunk = self.sock.recv(65536)
            except OSError as error:
                raise OvsdbError(f"{self.remote}: {error}") from None
            if not chunk:
                raise OvsdbError(f"{self.remote}: the connection was closed")
            self.buffer += chunk.decode()


def _map(value: Any) -> dict:
    """An OVSDB map in its JSON form, as a dict."""
    if isinstance(value, list) and value and value[0] == "map":
        return {key: item for key, item in value[1]}
    return {}


def prepare_zone(remote: str, dpid: int, zone: int, seconds: int, settle: float = 2.0) -> str:
    """Give ``zone`` of the datapath of bridge ``dpid`` a timeout policy of
    ``seconds`` for every TCP state, unless it has it; what was done, in
    words. Raises OvsdbError when the switch cannot take it: no such
    bridge, no reachable OVSDB, or a datapath that has no timeout policies
    (its ``capabilities`` say so, once ovs-vswitchd has filled them)."""
    with Ovsdb(remote) as db:
        bridges, root = db.transact(
            {"op": "select", "table": "Bridge", "where": [["datapath_id", "==", f"{dpid:016x}"]],
             "columns": ["name", "datapath_type"]},
            {"op": "select", "table": "Open_vSwitch", "where": [], "columns": ["_uuid", "datapaths"]},
        )  # fmt: skip
        if not bridges["rows"]:
            raise OvsdbError(f"{remote} has no bridge with datapath id {dpid:016x}")
        bridge = bridges["rows"][0]
        kind = bridge["datapath_type"] or "system"
        datapath = _map(root["rows"][0]["datapaths"]).get(kind)
        wanted = {state: seconds for state in TCP_STATES}
        if datapath is not None:
            (row,) = db.transact(
                {"op": "select", "table": "Datapath", "where": [["_uuid", "==", datapath]],
                 "columns": ["ct_zones", "capabilities"]}
            )  # fmt: skip
            current = _map(row["rows"][0]["ct_zones"]).get(zone)
            if current is not None and _policy(db, current) == wanted:
                _supported(db, datapath, kind, deadline=0)
                return f"zone {zone} of {bridge['name']}'s {kind} datapath already has the policy ({seconds} s)"
        policy = {"timeouts": ["map", sorted(wanted.items())], "external_ids": ["map", [list(OWNER)]]}
        ops: list[dict] = [
            {"op": "insert", "table": "CT_Timeout_Policy", "row": policy, "uuid-name": "policy"},
            {"op": "insert", "table": "CT_Zone", "uuid-name": "zone",
             "row": {"timeout_policy": ["named-uuid", "policy"], "external_ids": ["map", [list(OWNER)]]}},
        ]  # fmt: skip
        entry = ["map", [[zone, ["named-uuid", "zone"]]]]
        if datapath is not None:
            ops += [
                {"op": "mutate", "table": "Datapath", "where": [["_uuid", "==", datapath]],
                 "mutations": [["ct_zones", "delete", ["set", [zone]]]]},
                {"op": "mutate", "table": "Datapath", "where": [["_uuid", "==", datapath]],
                 "mutations": [["ct_zones", "insert", entry]]},
            ]  # fmt: skip
        else:
            ops += [
                {"op": "insert", "table": "Datapath", "uuid-name": "datapath",
                 "row": {"datapath_version": "0", "ct_zones": entry}},
                {"op": "mutate", "table": "Open_vSwitch", "where": [],
                 "mutations": [["datapaths", "insert", ["map", [[kind, ["named-uuid", "datapath"]]]]]]},
            ]  # fmt: skip
        results = db.transact(*ops)
        if datapath is None:
            datapath = ["uuid", results[2]["uuid"][1]]
        _supported(db, datapath, kind, deadline=time.monotonic() + settle)
        return f"zone {zone} of {bridge['name']}'s {kind} datapath given a timeout policy of {seconds} s"


def _policy(db: Ovsdb, zone_row: Any) -> dict:
    (zones,) = db.transact({"op": "select", "table": "CT_Zone", "where": [["_uuid", "==", zone_row]]})
    if not zones["rows"] or not isinstance(zones["rows"][0]["timeout_policy"], list):
        return {}
    reference = zones["rows"][0]["timeout_policy"]
    if reference[0] != "uuid":
        return {}
    (policies,) = db.transact({"op": "select", "table": "CT_Timeout_Policy", "where": [["_uuid", "==", reference]]})
    return _map(policies["rows"][0]["timeouts"]) if policies["rows"] else {}


def _supported(db: Ovsdb, datapath: Any, kind: str, deadline: float) -> None:
    """Raise unless the datapath's capabilities allow a timeout policy;
    ovs-vswitchd fills them in once it reads the row: wait until
    ``deadline`` for them (none by then: taken as supported)."""
    while True:
        (rows,) = db.transact(
            {"op": "select", "table": "Datapath", "where": [["_uuid", "==", datapath]], "columns": ["capabilities"]}
        )
        capabilities = _map(rows["rows"][0]["capabilities"]) if rows["rows"] else {}
        if capabilities:
            if capabilities.get("ct_timeout", "true") != "true" or capabilities.get("ct_zone", "true") != "true":
                raise OvsdbError(f"the {kind} datapath has no connection-tracking timeout policies ({capabilities})")
            return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)

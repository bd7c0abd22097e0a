"""Where accepted changes are kept: SQLite from the standard library, a row
per object, one transaction per change.

The store holds the desired state (a row per pool with its backends, a row
per VIP) and the runtime data that makes a restart hitless (a row per pool's
slot tables, a row per backend found by ARP). A write costs what the change
touches. SQLite in WAL mode with ``synchronous=FULL`` commits durably: a
change that was acknowledged survives kill -9 and power loss, and a crash at
any moment leaves the last committed state readable.

``Store`` is the small interface the controller uses; ``SqliteStore`` is the
embedded default, ``MemoryStore`` keeps nothing (``state_file`` empty). The
JSON document of ``GET/PUT /v1/config`` is the import/export format; a
state file of ryu_dsr 0.1 (one JSON file) is imported on first start.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ryu_dsr.model import (
    Change,
    Config,
    Conflict,
    InvalidInput,
    check_object,
    parse_address,
    parse_dpid,
    parse_int,
    parse_mac,
)


class StateFileError(Exception):
    """The saved or declared state cannot be used; the message says why."""


@dataclass
class Saved:
    """Everything a store holds."""

    config: Config = field(default_factory=Config)
    slots: dict[str, Any] = field(default_factory=dict)  # pool name -> saved slot tables
    found: dict[str, dict] = field(default_factory=dict)  # backend ip -> {"mac", "dpid", "port"}
    flags: dict[str, str] = field(default_factory=dict)  # controller-wide runtime flags
    health: dict[int, str] = field(default_factory=dict)  # backend uid -> why it failed its checks


class Store:
    """The interface: load everything once, then write changes."""

    fresh = True  # nothing was saved before this start (a new path, a lost disk)

    def load(self) -> Saved:
        return Saved()

    def write(
        self,
        change: Change | None = None,
        slots: dict[str, Any] | None = None,
        found: dict[str, dict | None] | None = None,
        flags: dict[str, str] | None = None,
        health: dict[int, str | None] | None = None,
    ) -> None:
        """Save a desired-state change and runtime rows (None deletes a row)
        in one transaction: all of it or none. ``health`` holds the backends
        that failed their checks, by uid: a restarted controller, or a new
        master, keeps them out of the hash until they pass again."""

    def close(self) -> None:
        pass


class MemoryStore(Store):
    """Keeps nothing: every start begins empty (or from the declared file)."""


SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS vips (name TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS slot_tables (pool TEXT PRIMARY KEY, body TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS found (ip TEXT PRIMARY KEY, body TEXT NOT NULL)",
    # Added after schema 2 was first written; older files get it when opened.
    "CREATE TABLE IF NOT EXISTS health (uid INTEGER PRIMARY KEY, reason TEXT NOT NULL)",
)
SCHEMA_VERSION = "2"


class SqliteStore(Store):
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.fresh = not self.path.exists()
        legacy = _read_legacy(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if legacy is not None:
                os.replace(self.path, self.path.with_name(self.path.name + ".v1.json"))
            self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            for statement in SCHEMA:
                self.db.execute(statement)
            version = self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except (OSError, sqlite3.Error) as error:
            raise StateFileError(f"state file {self.path}: cannot open it as SQLite: {error}") from None
        if version is not None and version[0] != SCHEMA_VERSION:
            raise StateFileError(f"state file {self.path}: schema {version[0]}, this ryu_dsr reads {SCHEMA_VERSION}")
        if legacy is not None:
            self._import_legacy(legacy)

    # -- reading --

    def load(self) -> Saved:
        try:
            rows = {
                table: self.db.execute(f"SELECT * FROM {table} ORDER BY rowid").fetchall()  # noqa: S608
                for table in ("meta", "pools", "vips", "slot_tables", "found", "health")
            }
        except sqlite3.Error as error:
            raise StateFileError(f"state file {self.path}: cannot read it: {error}") from None
        try:
            meta = dict(rows["meta"])
            pools = [_body(name, text, "pools") for name, text in rows["pools"]]
            vips = [_body(name, text, "vips") for name, text in rows["vips"]]
            config = Config.from_saved(pools, vips, int(meta.get("next_uid", "1")))
            saved = Saved(config)
            saved.flags = {k[5:]: v for k, v in meta.items() if k.startswith("flag.")}
            for name, text in rows["slot_tables"]:
                if name in config.pools:
                    saved.slots[name] = _body(name, text, "slot_tables")
            for ip, text in rows["found"]:
                saved.found[ip] = parse_found(ip, _body(ip, text, "found"))
            saved.health = {int(uid): str(reason) for uid, reason in rows["health"]}
        except (InvalidInput, Conflict, ValueError) as error:
            raise StateFileError(f"state file {self.path}: {error}") from None
        return saved

    # -- writing --

    def write(
        self,
        change: Change | None = None,
        slots: dict[str, Any] | None = None,
        found: dict[str, dict | None] | None = None,
        flags: dict[str, str] | None = None,
        health: dict[int, str | None] | None = None,
    ) -> None:
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if change is not None:
                for name, pool in change.pools.items():
                    if pool is None:
                        db.execute("DELETE FROM pools WHERE name = ?", (name,))
                        db.execute("DELETE FROM slot_tables WHERE pool = ?", (name,))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO pools VALUES (?, ?)", (name, json.dumps(Config.saved_pool(pool)))
                        )
                for name, vip in change.vips.items():
                    if vip is None:
                        db.execute("DELETE FROM vips WHERE name = ?", (name,))
                    else:
                        db.execute(
                            "INSERT OR REPLACE INTO vips VALUES (?, ?)", (name, json.dumps(Config.saved_vip(vip)))
                        )
                db.execute("INSERT OR REPLACE INTO meta VALUES ('next_uid', ?)", (str(change.next_uid),))
                db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (SCHEMA_VERSION,))
            for name, body in (slots or {}).items():
                if body is None:
                    db.execute("DELETE FROM slot_tables WHERE pool = ?", (name,))
                else:
                    db.execute("INSERT OR REPLACE INTO slot_tables VALUES (?, ?)", (name, json.dumps(body)))
            for name, value in (flags or {}).items():
                db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"flag.{name}", value))
            for ip, where in (found or {}).items():
                if where is None:
                    db.execute("DELETE FROM found WHERE ip = ?", (ip,))
                else:
                    db.execute("INSERT OR REPLACE INTO found VALUES (?, ?)", (ip, json.dumps(where)))
            for uid, reason in (health or {}).items():
                if reason is None:
                    db.execute("DELETE FROM health WHERE uid = ?", (uid,))
                else:
                    db.execute("INSERT OR REPLACE INTO health VALUES (?, ?)", (uid, reason))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        self.db.close()

    # -- ryu_dsr 0.1's JSON state file --

    def _import_legacy(self, data: dict) -> None:
        try:
            check_object(data, "state", {"version", "next_uid", "pools", "vips", "found"})
            pools = [{k: v for k, v in item.items() if k != "slot_tables"} for item in data.get("pools", [])]
            config = Config.from_saved(pools, data.get("vips", []), data.get("next_uid", 1))
            found = {ip: parse_found(ip, where) for ip, where in (data.get("found") or {}).items()}
        except (InvalidInput, Conflict, AttributeError, TypeError) as error:
            raise StateFileError(f"state file {self.path}.v1.json (ryu_dsr 0.1): {error}") from None
        change = Change(pools=dict(config.pools), vips=dict(config.vips), next_uid=config.next_uid)
        slots = {}
        for item in data.get("pools", []):
            tables = item.get("slot_tables") or {}
            if tables:
                sizes = sorted(int(size) for size in tables)
                slots[item["name"]] = {"size": sizes[-1], "tables": tables}
        self.write(change, slots, found)


def _read_legacy(path: Path) -> dict | None:
    """The JSON of a ryu_dsr 0.1 state file at ``path``, or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1)
            if head != b"{":
                return None
            return json.loads(head + handle.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise StateFileError(f"state file {path}: cannot read JSON: {error}") from None


def _body(name: str, text: str, table: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"{table} row {name!r} is not JSON: {error}") from None


def parse_found(ip: str, where: Any) -> dict:
    at = f"state.found.{ip}"
    parse_address(ip, at)
    check_object(where, at, {"mac", "dpid", "port"})
    return {
        "mac": parse_mac(where.get("mac"), f"{at}.mac"),
        "dpid": None if where.get("dpid") is None else parse_dpid(where["dpid"], f"{at}.dpid"),
        "port": None if where.get("port") is None else parse_int(where["port"], f"{at}.port", 1, 0xFFFFFF00),
    }


def open_store(path: str | os.PathLike | None) -> Store:
    return SqliteStore(path) if path else MemoryStore()


def read_document(path: str | os.PathLike) -> Any:
    """A JSON config document from a file, with a clear error."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise StateFileError(f"declared config {path}: cannot read JSON: {error}") from None


def plan_declared(config: Config, path: str | os.PathLike | None) -> Change:
    """The change a declared-config file makes at start (pools and VIPs
    upserted; others kept)."""
    if not path:
        return Change(next_uid=config.next_uid)
    data = read_document(path)
    try:
        return config.plan_document(data, replace=False)
    except (InvalidInput, Conflict) as error:
        raise StateFileError(f"declared config {path}: {error}") from None

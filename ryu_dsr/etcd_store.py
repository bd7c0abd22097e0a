"""The store in etcd, for controllers that share one fabric: a key per
object, every change a compare-and-swap transaction, and the changes other
controllers make read back from etcd's watch.

Keys under the prefix (``etcd_prefix``)::

    config/next_uid         the uid counter; every change writes it, so its
                            mod_revision is the revision of the desired
                            state, the one every writer compares against
    config/writer           which controller wrote the last change
    config/pools/NAME       a pool in its saved form (uids included)
    config/vips/NAME        a VIP
    runtime/slots/POOL      a pool's slot tables       (written by the master)
    runtime/found/IP        where a backend was found  (by the master)
    runtime/health/UID      why a backend failed       (by the master)
    runtime/flags/NAME      controller-wide flags      (by the master)
    members/LEASE           a controller's candidacy (with its lease)

Any controller writes desired-state changes; a change whose writer had not
seen the newest desired state is refused (409) and nothing of it is
written. Runtime data is written by the master only, on condition that its
candidacy key is still the one it won with, so a master that lost its
lease writes nothing. Runtime writes that find etcd unreachable are kept
(the newest per key) and written when it answers again.

A change of more than ``max_txn_ops`` objects (etcd's ``--max-txn-ops``,
128 unless raised) or about 1 MiB is written in steps, each a transaction
that compares against the one before: pools first, then VIPs, then the
pools deleted, so every step leaves a state whose VIPs name pools that
exist.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from ryu_dsr.etcd import Etcd, EtcdUnavailable, Event, compare, delete, put
from ryu_dsr.model import Change, Config, Conflict, InvalidInput
from ryu_dsr.store import Saved, StateFileError, Store, parse_found

LOG = logging.getLogger("ryu_dsr.etcd")
STEP_BYTES = 1 << 20  # a transaction's values stay under etcd's 1.5 MiB request limit


class EtcdStore(Store):
    def __init__(self, etcd: Etcd, prefix: str, max_txn_ops: int = 128) -> None:
        self.etcd = etcd
        self.prefix = prefix.rstrip("/") + "/"
        self.max_txn_ops = max_txn_ops
        self.config_revision = 0  # mod_revision of config/next_uid as applied here
        self.loaded_revision = 0  # revision of the last full read
        self.writer = uuid.uuid4().hex  # written with every change made here: the watch skips those
        self.transactions = 0  # desired-state transactions written here
        self.leader: tuple[str, int] | None = None  # (candidacy key, its create_revision) while master
        self.pending: dict[str, str | None] = {}  # runtime writes not made yet (etcd unreachable)
        self.flushing = False
        self.on_deposed: Callable[[str], None] = lambda reason: None
        self.fresh = True

    def key(self, *parts: Any) -> str:
        return self.prefix + "/".join(str(part) for part in parts)

    # -- reading --

    def load(self) -> Saved:
        """Everything, as of one revision."""
        try:
            revision, kvs = self.etcd.range_prefix(self.prefix)
        except OSError as error:
            raise StateFileError(f"etcd {self.prefix}: cannot read it: {error}") from None
        pools, vips, next_uid = [], [], 1
        runtime: dict[str, dict[str, str]] = {"slots": {}, "found": {}, "health": {}, "flags": {}}
        self.config_revision = 0
        self.fresh = True
        for kv in kvs:
            parts = kv.key[len(self.prefix) :].split("/", 2)
            if parts[0] in ("config", "runtime"):
                self.fresh = False
            if parts == ["config", "next_uid"]:
                next_uid = int(kv.value) if kv.value.isdigit() else kv.value
                self.config_revision = kv.mod_revision
            elif len(parts) == 3 and parts[0] == "config" and parts[1] in ("pools", "vips"):
                (pools if parts[1] == "pools" else vips).append(_json(kv.key, kv.value))
            elif len(parts) == 3 and parts[0] == "runtime" and parts[1] in runtime:
                runtime[parts[1]][parts[2]] = kv.value
        try:
            config = Config.from_saved(pools, vips, next_uid)
            saved = Saved(config)
            saved.slots = {name: _json(name, text) for name, text in runtime["slots"].items() if name in config.pools}
            saved.found = {ip: parse_found(ip, _json(ip, text)) for ip, text in runtime["found"].items()}
            saved.flags = dict(runtime["flags"])
            saved.health = {int(uid): reason for uid, reason in runtime["health"].items() if uid.isdigit()}
        except (InvalidInput, Conflict, ValueError) as error:
            raise StateFileError(f"etcd {self.prefix}: {error}") from None
        self.loaded_revision = revision
        return saved

    def changed(self, revision: int, events: list[Event]) -> tuple[Change | None, bool]:
        """What one revision seen by the watch means here: the desired-state
        change another controller made (None if none, or if it was made
        here), and whether the candidacies changed."""
        members = any(e.key.startswith(self.key("members")) for e in events)
        writer = self.key("config", "writer")
        if revision <= self.loaded_revision or any(e.key == writer and e.value == self.writer for e in events):
            return None, members
        change = Change(next_uid=0)
        touched = False
        for event in events:
            parts = event.key[len(self.prefix) :].split("/", 2)
            if parts[0] != "config":
                continue
            touched = True
            if parts == ["config", "next_uid"]:
                change.next_uid = int(event.value or 0)
                self.config_revision = revision
            elif len(parts) == 3 and parts[1] == "pools":
                value = (
                    None if event.value is None else Config.pool_from_saved(_json(event.key, event.value), event.key)
                )
                change.pools[parts[2]] = value
            elif len(parts) == 3 and parts[1] == "vips":
                value = None if event.value is None else Config.vip_from_saved(_json(event.key, event.value), event.key)
                change.vips[parts[2]] = value
        return (change if touched else None), members

    # -- writing --

    def write(
        self,
        change: Change | None = None,
        slots: dict[str, Any] | None = None,
        found: dict[str, dict | None] | None = None,
        flags: dict[str, str] | None = None,
        health: dict[int, str | None] | None = None,
    ) -> None:
        runtime: dict[str, str | None] = {}
        for name, body in (slots or {}).items():
            runtime[self.key("runtime", "slots", name)] = None if body is None else json.dumps(body)
        for ip, where in (found or {}).items():
            runtime[self.key("runtime", "found", ip)] = None if where is None else json.dumps(where)
        for name, value in (flags or {}).items():
            runtime[self.key("runtime", "flags", name)] = value
        for uid, reason in (health or {}).items():
            runtime[self.key("runtime", "health", uid)] = reason
        if change is not None:
            self._write_change(change, runtime)
        elif runtime:
            self.write_runtime(runtime)

    def _write_change(self, change: Change, runtime: dict[str, str | None]) -> None:
        steps = self._steps(change)
        for number, step in enumerate(steps):
            step = [
                *step,
                put(self.key("config", "next_uid"), str(change.next_uid)),
                put(self.key("config", "writer"), self.writer),
            ]
            compares = [compare(self.key("config", "next_uid"), "MOD", self.config_revision)]
            last = number == len(steps) - 1
            extra = [_op(key, value) for key, value in runtime.items()] if last and self.leader else []
            if extra and len(step) + len(extra) <= self.max_txn_ops and _size(step + extra) < STEP_BYTES:
                compares.append(compare(self.leader[0], "CREATE", self.leader[1]))
                runtime = {}
                step += extra
            try:
                ok, revision, _ = self.etcd.txn(compares, step)
            except OSError as error:
                if number:
                    LOG.error("a change written in steps stopped after %d of %d: %s", number, len(steps), error)
                raise
            if not ok and len(compares) > 1:
                # Was it the desired state or the candidacy? The change alone, compared as before:
                ok, revision, _ = self.etcd.txn(compares[:1], step[: len(step) - len(extra)])
                if ok:
                    self._deposed("its candidacy key is gone (lease expired)")
            if not ok:
                written = f"{number} of its {len(steps)} steps were written" if number else "nothing of it was written"
                raise Conflict(
                    f"the desired state was changed meanwhile (by another controller); {written}: "
                    "read it again and retry"
                )
            self.config_revision = revision
            self.transactions += 1
        if runtime:
            self.write_runtime(runtime)

    def _steps(self, change: Change) -> list[list[dict]]:
        """The operations of a change in steps etcd takes: pools written,
        then VIPs, then pools deleted."""
        ops = [_op(self.key("config", "pools", n), _saved_pool(p)) for n, p in change.pools.items() if p is not None]
        ops += [_op(self.key("config", "vips", n), _saved_vip(v)) for n, v in change.vips.items()]
        for name in (n for n, p in change.pools.items() if p is None):  # its slot tables go with it, whoever writes
            ops += [delete(self.key("config", "pools", name)), delete(self.key("runtime", "slots", name))]
        steps: list[list[dict]] = [[]]
        size = 0
        for op in ops:
            length = len(json.dumps(op))
            if steps[-1] and (len(steps[-1]) + 3 > self.max_txn_ops or size + length > STEP_BYTES):
                steps.append([])
                size = 0
            steps[-1].append(op)
            size += length
        return steps

    def write_runtime(self, runtime: dict[str, str | None]) -> None:
        """Runtime keys, written by the master only; kept for later if etcd
        does not answer."""
        if self.leader is None:
            return  # a slave's view: the master writes its own
        self.pending.update(runtime)
        self.flush()

    def flush(self) -> None:
        """Write the runtime keys waiting (one writer at a time: a key
        changed meanwhile is written again in the next round)."""
        if self.flushing:
            return
        self.flushing = True
        try:
            self._flush()
        finally:
            self.flushing = False

    def _flush(self) -> None:
        while self.pending and self.leader is not None:
            keys = list(self.pending)[: self.max_txn_ops - 1]
            ops, size = [], 0
            for key in keys:
                op = _op(key, self.pending[key])
                size += len(json.dumps(op))
                if ops and size > STEP_BYTES:
                    break
                ops.append(op)
            try:
                ok, _revision, _ = self.etcd.txn([compare(self.leader[0], "CREATE", self.leader[1])], ops)
            except EtcdUnavailable as error:
                LOG.warning("etcd: %d runtime keys kept until it answers (%s)", len(self.pending), error)
                return
            if not ok:
                self.pending.clear()
                self._deposed("its candidacy key is gone (lease expired)")
                return
            for key, op in zip(keys, ops):
                if key in self.pending and _op(key, self.pending[key]) == op:
                    del self.pending[key]  # not changed while it was being written

    def _deposed(self, reason: str) -> None:
        self.leader = None
        self.pending.clear()
        self.on_deposed(reason)


def _op(key: str, value: str | None) -> dict:
    return delete(key) if value is None else put(key, value)


def _saved_pool(pool) -> str:
    return json.dumps(Config.saved_pool(pool))


def _saved_vip(vip) -> str | None:
    return None if vip is None else json.dumps(Config.saved_vip(vip))


def _size(ops: list[dict]) -> int:
    return sum(len(json.dumps(op)) for op in ops)


def _json(name: str, text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise ValueError(f"key {name!r} is not JSON: {error}") from None

"""Plain, hashable descriptions of OpenFlow rules.

Everything in ``flows`` speaks this small vocabulary instead of Ryu message
objects, so rules can be computed, compared and diffed without a datapath.
``ryu_dsr.ofp`` translates them to OpenFlow 1.3 (with Nicira extensions) at
send time, and ``tests/simulator.py`` executes them.

Match values use one canonical form each, the same one Ryu's parser returns,
so a flow read back from a switch compares equal to the rule that made it:
IPv4 and MAC addresses as lower-case strings, everything else as ints, a
masked field as ``(value, mask)`` with the value already masked.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from typing import Union

MatchValue = Union[int, str, tuple]


_PAIRS: dict[tuple[str, MatchValue], tuple[str, MatchValue]] = {}
MAX_PAIRS = 1 << 20


def match_items(**fields: MatchValue) -> tuple[tuple[str, MatchValue], ...]:
    """A match as a sorted tuple of (field, value) pairs (hashable, ordered).
    Pairs are shared between matches (every pool's slot 5 matches
    ``("reg0", 5)``): a switch's flow index holds a few hundred thousand."""
    if len(_PAIRS) > MAX_PAIRS:
        _PAIRS.clear()
    return tuple(_PAIRS.setdefault(pair, pair) for pair in sorted(fields.items()))


def shared_pair(pair: tuple[str, MatchValue]) -> tuple[str, MatchValue]:
    """The one (field, value) pair ``match_items`` shares between matches."""
    return _PAIRS.setdefault(pair, pair)


# --- actions -----------------------------------------------------------------


@dataclass(frozen=True)
class Output:
    """Send the packet out of a port: an int, or 'in_port', 'flood',
    'controller', 'normal'."""

    port: int | str
    max_len: int = 0xFFE5  # OFPCML_NO_BUFFER for the controller


@dataclass(frozen=True)
class SetField:
    field: str
    value: int | str


@dataclass(frozen=True)
class Move:
    """Nicira register move: copy ``n_bits`` of ``src`` from bit ``src_ofs``
    into ``dst`` from bit ``dst_ofs``."""

    src: str
    dst: str
    n_bits: int
    src_ofs: int = 0
    dst_ofs: int = 0


@dataclass(frozen=True)
class Resubmit:
    """Nicira resubmit: look the packet up in ``table`` and come back."""

    table: int


@dataclass(frozen=True)
class Multipath:
    """Nicira multipath: ``dst`` = hash(fields) modulo ``n_links``."""

    fields: str  # 'nw_src' or 'l3l4' (symmetric 5-tuple, udp too)
    n_links: int
    dst: str
    n_bits: int = 16
    basis: int = 0


@dataclass(frozen=True)
class Group:
    """Apply an OpenFlow group (the select group that hashes in the datapath)."""

    group_id: int


@dataclass(frozen=True)
class LearnPin:
    """Nicira learn: install a flow in ``table`` matching the low bits of the
    packet's registers (``regs``: (register, bits) pairs) and its exact
    5-tuple (addresses of its family), that loads the packet's current eth_dst and sets bit 0 of
    ``flag_reg``; at most ``limit`` flows with ``cookie`` (0: no limit),
    and ``result``'s bit 0 set to whether it learned.

    This is the only shape of learn the pipeline needs, so it is one action
    rather than a general learn-spec language.
    """

    table: int
    eth_type: int  # of the packets it learns from (their family)
    addresses: tuple[str, str]  # the family's source and destination fields, as the flow matches them
    ip_proto: int
    cookie: int
    idle_timeout: int
    fin_idle_timeout: int
    flag_reg: str
    priority: int = 100
    regs: tuple[tuple[str, int], ...] = ()
    limit: int = 0
    result: str | None = None  # a register whose bit 0 says whether the pin was learned (under the limit)
    keep: tuple[str, ...] = ()  # registers whose values the pin loads again (a routed backend's id)


@dataclass(frozen=True)
class Track:
    """Nicira ct in one ``zone``: with ``label``, commit the packet's
    connection with that label; with ``table``, look the connection up and
    go on in ``table`` with its ``ct_label`` (0: none), the packet itself
    going on untracked (Open vSwitch forks it)."""

    zone: int
    label: int | None = None
    table: int | None = None


@dataclass(frozen=True)
class Drop:
    """An explicit empty action list (readability only)."""


@dataclass(frozen=True)
class DecTtl:
    """Decrement the IPv4 TTL or IPv6 hop limit (the switch routes)."""


Action = Union[Output, SetField, Move, Resubmit, Multipath, Group, LearnPin, Track, Drop, DecTtl]


@functools.lru_cache(maxsize=1 << 16)
def _action_text(action: Action) -> str:
    """An action's repr, cached: slot rules repeat a few actions thousands
    of times and a dataclass repr is slow."""
    return repr(action)


# --- rules -------------------------------------------------------------------


EPOCH_BITS = 8  # a rule's epoch's bits in its cookie (the rest of the cookie's low half digests the rule)
EPOCH_MASK = (1 << EPOCH_BITS) - 1


@dataclass(frozen=True)
class Rule:
    """One flow entry.

    ``key`` (table, priority, match) identifies the entry on the switch; the
    body is what it does. The cookie is computed, not given: owner bits from
    ``owner`` and a digest of the rest, so a flow read back from a switch can
    be compared with the desired one by key and cookie alone.
    """

    table: int
    priority: int
    match: tuple[tuple[str, MatchValue], ...]
    actions: tuple[Action, ...] = ()
    goto: int | None = None
    write_metadata: tuple[int, int] | None = None
    owner: int = 0  # cookie bits 63..32: kind and owner uid (``pipeline.owner``)
    idle_timeout: int = 0
    meter: int | None = None  # an OpenFlow meter the entry's packets go through first
    # A write that changes it starts the entry's counters again (OFPFF_RESET_COUNTS; a replaced flow keeps
    # them otherwise): a slot rule's is the backend it sends to, so its packet counter says what the slot
    # carried since that backend was chosen. Its low bits are the cookie's (``EPOCH_BITS``).
    epoch: int | None = None
    cookie: int = field(init=False, compare=False)
    # (table, priority, match): the entry's identity on the switch. One tuple
    # per rule, shared by every index that holds it.
    key: tuple[int, int, tuple] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.table, self.priority, self.match))
        text = (
            f"{self.table}|{self.priority}|{self.match!r}|{'|'.join(map(_action_text, self.actions))}"
            f"|{self.goto}|{self.write_metadata}|{self.idle_timeout}"
        )
        if self.meter is not None:  # (absent from older rules' digests, which stay as they were)
            text += f"|m{self.meter}"
        digest = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "big")
        if self.epoch is not None:
            digest = digest & ~EPOCH_MASK | self.epoch & EPOCH_MASK
        object.__setattr__(self, "cookie", (self.owner << 32) | digest)

    def match_dict(self) -> dict[str, MatchValue]:
        return dict(self.match)


# --- commands for a switch -----------------------------------------------------


@dataclass(frozen=True)
class FlowAdd:
    rule: Rule
    reset: bool = False  # the entry replaces one of another epoch: its counters start again


def resets(rule: Rule, held: int | None) -> bool:
    """Whether writing ``rule`` over a flow whose cookie is ``held`` starts
    its counters again: it has an epoch, and the held flow's was another."""
    return rule.epoch is not None and held is not None and (held ^ rule.cookie) & EPOCH_MASK != 0


@dataclass(frozen=True)
class FlowDelete:
    """Delete exactly one entry (strict: table, priority, match)."""

    table: int
    priority: int
    match: tuple[tuple[str, MatchValue], ...]


@dataclass(frozen=True)
class FlowDeleteByCookie:
    """Delete every entry in every table whose cookie matches under mask."""

    cookie: int
    mask: int


@dataclass(frozen=True)
class GroupAdd:
    """Create or replace a select group whose one bucket runs ``actions``
    (Open vSwitch then hashes each packet's 5-tuple in the datapath)."""

    group_id: int
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class MeterSet:
    """Create, or change where it exists, a meter that drops packets above
    ``rate`` per second (bursts of ``burst``)."""

    meter_id: int
    rate: int
    burst: int


@dataclass(frozen=True)
class NormalFragments:
    """Switch configuration: IP fragments pass through the tables like other
    packets, their L4 ports read as 0 (OFPC_FRAG_NORMAL); the pipeline's
    fragment rules count on it."""


@dataclass(frozen=True)
class PacketOut:
    data: bytes
    port: int | str | tuple[int, ...]  # where to send: a port, several, or 'flood'
    in_port: int | str = "controller"
    tunnel: str | None = None  # out of a GRE port (``port``) to this address: the tunnel's destination set first


@dataclass(frozen=True)
class Barrier:
    pass


Command = Union[FlowAdd, FlowDelete, FlowDeleteByCookie, GroupAdd, MeterSet, NormalFragments, PacketOut, Barrier]

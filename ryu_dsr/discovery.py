"""The controller's link-discovery frames, sealed so that no host can make one.

Each switch sends a frame out of every port once a second; the switch at the
other end of a link hands it to the controller, which so learns the link. A
host can send frames too, so a frame proves nothing by its look: it carries
the switch and port it left from, when it left (the sender's wall clock in
microseconds, growing with every frame) and a message authentication code
over these three (keyed BLAKE2b, 16 bytes: a MAC by design, three times
cheaper here than HMAC-SHA256) under a key that only the controllers hold
(one key per cluster, kept with the shared state).

A frame is taken only when its code is right (a host cannot make one), it
left at most ``MAX_AGE`` seconds ago (a copy kept for later is useless) and
it is newer than the last frame taken from the same port (a copy sent twice
is a replay). What is refused is counted by reason. Pure: time comes in.

What the code cannot tell is a genuine frame that a host hands on at once to
another host elsewhere (a relay); ``fabric.Fabric`` answers that by the
ports' roles: a port where hosts were seen is never a link.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections import Counter
from collections.abc import Callable

DISCOVERY_ETHERTYPE = 0x88B5  # IEEE 802 local experimental
MAX_AGE = 2.0  # seconds a frame may take from its switch back to the controller
KEY_BYTES = 32  # a generated key; a key file needs at least MIN_KEY_BYTES
MIN_KEY_BYTES = 16
_HEAD = struct.Struct("!6s6sH4sQIQ")  # dst, src, ethertype, magic, dpid, port, sent (microseconds)
_SIGNED = slice(14, _HEAD.size)  # magic, dpid, port, sent
_MAGIC = b"rds2"
_CODE = 16
FRAME_BYTES = max(60, _HEAD.size + _CODE)

# Why a frame was refused, as counted and shown.
REFUSALS = (
    "malformed",  # not a frame of this controller's format
    "bad_code",  # the code does not match: forged, or another key
    "stale",  # left too long ago (or from a clock too far ahead)
    "replayed",  # not newer than the last frame taken from its port
    "unknown_switch",  # names a switch that is not connected, or came back to its own switch
    "host_port",  # one of its ends is a port where hosts were seen (or pinned as a host port)
    "held_down",  # one of its ends is held down for flapping
)


def new_key() -> str:
    """A fresh key, as hex text (how the state keeps it)."""
    return secrets.token_hex(KEY_BYTES)


class Discovery:
    """Makes and checks discovery frames under one key."""

    def __init__(self, key: bytes, dst_mac: str, wall: Callable[[], float]) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a discovery key needs at least {MIN_KEY_BYTES} bytes")
        self.key = key
        self._mac_key = hashlib.blake2b(key, digest_size=32).digest()  # any length of key file, BLAKE2b's size
        self.dst = bytes.fromhex(dst_mac.replace(":", ""))
        self.wall = wall
        self.sent = 0  # the last frame's time stamp: every frame's is larger than the one before
        self.taken: dict[tuple[int, int], int] = {}  # sender (dpid, port) -> stamp of the last frame taken
        self.accepted = 0
        self.refused: Counter[str] = Counter()

    def _code(self, signed: bytes) -> bytes:
        return hashlib.blake2b(signed, key=self._mac_key, digest_size=_CODE).digest()

    def frame(self, dpid: int, port: int) -> bytes:
        """What a switch sends out of ``port`` to find its neighbour."""
        now = int(self.wall() * 1e6)
        # one past the last, unless the clock moved on (or stepped back far: receivers forget what is that old)
        self.sent = now if now > self.sent or self.sent - now > MAX_AGE * 1e6 else self.sent + 1
        src = bytes.fromhex(f"0e{dpid & 0xFFFFFFFFFF:010x}")  # locally administered, apart from hosts' 02:...
        head = _HEAD.pack(self.dst, src, DISCOVERY_ETHERTYPE, _MAGIC, dpid, port, self.sent)
        frame = head + self._code(head[_SIGNED])
        return frame + bytes(FRAME_BYTES - len(frame))

    def check(self, data: bytes) -> tuple[int, int] | str:
        """The (dpid, port) a frame was sent from, or why it is refused (one
        of ``REFUSALS``, counted)."""
        sender = self._check(data)
        if isinstance(sender, str):
            self.refused[sender] += 1
        return sender

    def _check(self, data: bytes) -> tuple[int, int] | str:
        if len(data) < _HEAD.size + _CODE:
            return "malformed"
        _dst, _src, ethertype, magic, dpid, port, sent = _HEAD.unpack_from(data)
        if ethertype != DISCOVERY_ETHERTYPE or magic != _MAGIC:
            return "malformed"
        if not hmac.compare_digest(data[_HEAD.size : _HEAD.size + _CODE], self._code(data[_SIGNED])):
            return "bad_code"
        now = int(self.wall() * 1e6)
        if abs(now - sent) > MAX_AGE * 1e6:
            return "stale"
        sender = (dpid, port)
        last = self.taken.get(sender)
        # a last stamp far ahead of now is a clock stepped back: it no longer says what is a repeat
        if last is not None and sent <= last and last - now <= MAX_AGE * 1e6:
            return "replayed"
        self.taken[sender] = sent
        return sender

    def forget(self, dpid: int) -> None:
        """A switch left: its ports' last stamps go (a frame from before is stale by now anyway)."""
        for sender in [s for s in self.taken if s[0] == dpid]:
            del self.taken[sender]

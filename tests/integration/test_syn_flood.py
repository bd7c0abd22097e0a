"""A SYN flood from spoofed sources during a handover: per-connection state
(pins) stops at ``pin_limit``, long-lived connections stay whole, REST
keeps answering and new connections are served."""

from __future__ import annotations

import re
import sys
import time

from ryu_dsr.lab import wait_no_hold
from tests.integration.conftest import VIP, fabric_fixture

PIN_LIMIT = 200
fabric = fabric_fixture(
    "dsry", rest_port=18089, of_port=16689, settings={"pin_limit": PIN_LIMIT, "handover_window": 120}
)

SYN_FLOOD = r"""
import random, socket, struct, sys, time
vip, count = sys.argv[1], int(sys.argv[2])
def checksum(data):
    if len(data) % 2:
        data += b'\0'
    total = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xffff)
    return ~(total + (total >> 16)) & 0xffff
sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rng = random.Random(int(sys.argv[3]))
dst = socket.inet_aton(vip)
for i in range(count):
    src = socket.inet_aton('10.0.0.%d' % rng.randint(150, 249))  # addresses of no host, inside the test's subnet
    sport = rng.randint(1024, 65535)
    tcp = struct.pack('!HHIIBBHHH', sport, 80, rng.getrandbits(32), 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = src + dst + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(tcp), i & 0xffff, 0, 64, 6, 0, src, dst)
    sock.sendto(ip + tcp, (vip, 0))
    if i % 20 == 19:
        time.sleep(0.01)  # about 2,000 SYNs a second
"""


def pins(lab) -> dict[str, int]:
    """Learned pins on the switch, by the cookie that names their backend
    (kind 0x04 in the top byte, printed without its leading zero)."""
    counts: dict[str, int] = {}
    for cookie in re.findall(r"cookie=(0x4[0-9a-f]{14}),", lab.ofctl("dump-flows", lab.bridge, "table=2")):
        counts[cookie] = counts.get(cookie, 0) + 1
    return counts


def test_a_syn_flood_during_a_handover_stops_at_the_pin_limit_and_breaks_nothing(fabric):
    lab = fabric.lab
    fabric.create_web(backends=(11, 12))
    wait_no_hold(fabric.base)
    assert (
        lab.ab(VIP, 3000, 20)["failed"] == 0
    )  # a service in use: every slot carried packets, so every move hands over
    streams = lab.spawn_client(
        "c1", f"http://{VIP}/", "--streams", "10", "--lines", "150", "--ms", "100", "--timeout", "40", log="s.json"
    )
    time.sleep(1)
    assert fabric.api("POST", "/v1/pools/web/backends", {"ip": "10.0.0.13"})[0] == 201  # slots move to it
    fabric.wait_backends_up(count=3)
    wait_no_hold(fabric.base)
    slowest, waves = 0.0, []
    for wave in range(2):
        flood = lab.spawn("c1", sys.executable, "-c", SYN_FLOOD, VIP, "4000", str(wave), log=f"synflood{wave}.log")
        while flood.poll() is None:  # REST answers throughout
            started = time.time()
            assert fabric.api("GET", "/v1/pools/web")[0] == 200
            slowest = max(slowest, time.time() - started)
            time.sleep(0.2)
        assert flood.returncode == 0
        time.sleep(0.5)
        waves.append(pins(lab))
    assert slowest < 2.0
    first, second = (max(counts.values()) for counts in waves)
    # Open vSwitch checks the limit when it translates a learn and installs
    # learned flows in batches: a burst in flight may pass it once, then
    # nothing more is learned.
    assert PIN_LIMIT <= first <= 2 * PIN_LIMIT, waves
    assert second - first <= PIN_LIMIT // 10, waves
    assert streams.wait(60) == 0
    report = lab.client_report("s.json")
    assert report["intact"] == 10, report
    # New connections are all served; those of moved slots go to the old
    # backend while the new one's pins are at the limit (until they idle out
    # or the handover window ends).
    served = lab.requests("c1", f"http://{VIP}/", 60)
    assert served["failed"] == 0

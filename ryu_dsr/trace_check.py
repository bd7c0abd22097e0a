"""A trace put to the switch itself: ``ovs-appctl ofproto/trace`` on each
switch the controller's trace crossed, and what differs between the two.

Runs where the switches are (``dsrctl trace --check``): Open vSwitch's
tools find the bridge of a datapath id and trace the flow the controller
gave (``dp_hash`` included, so the select group needs no recirculation).
The rules met must be the same, in the same order (table and cookie: the
cookie names the owner and digests the content), and so must the ports the
packet leaves by. A difference is a fault: the switch does not hold what
the controller believes, or the controller's walk is wrong.
"""

from __future__ import annotations

import re
import subprocess

from ryu_dsr.flows.pipeline import Table

HIT = re.compile(r"^\s*(\d+)\. .*priority (\d+)(?:, cookie (0x[0-9a-f]+))?\s*$")
OUTPUT = re.compile(r"^\s*output:(\d+)\s*$")


def bridges() -> dict[int, str]:
    """Bridge name by datapath id, from this machine's Open vSwitch."""
    text = _run("ovs-vsctl", "--bare", "--columns=name,datapath_id", "list", "Bridge")
    found, name = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if name is None:
            name = line
        else:
            found[int(line.strip('"'), 16)] = name
            name = None
    return found


def ofproto_trace(bridge: str, flow: str) -> str:
    return _run("ovs-appctl", "ofproto/trace", bridge, flow)


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def read(text: str) -> tuple[list[tuple[int, int, int]], list[int]]:
    """The rules a trace met, (table, priority, cookie) in order, and the
    ports it output to."""
    hits, outputs = [], []
    for line in text.splitlines():
        if line.startswith(("Final flow:", "Megaflow:", "Datapath actions:")):
            break
        hit = HIT.match(line)
        if hit:
            hits.append((int(hit.group(1)), int(hit.group(2)), int(hit.group(3) or "0", 16)))
            continue
        out = OUTPUT.match(line)
        if out:
            outputs.append(int(out.group(1)))
    return hits, outputs


def compare(answer: dict, switch: int, text: str) -> list[str]:
    """What differs between the controller's trace on one switch and the
    switch's own; empty when they agree."""
    ours = [
        (Table[step["table"]], step["priority"], int(step["cookie"], 16))
        for step in answer["steps"]
        if step["switch"] == switch and step["rule"] is not None
    ]
    hop = next(hop for hop in answer["path"] if hop["switch"] == switch)
    our_outputs = sorted(int(port) for port in hop["out"] if port.isdigit())
    theirs, outputs = read(text)
    faults = []
    if ours != theirs:
        faults.append(
            f"switch {switch:#x}: the controller expects rules {_rules(ours)}, the switch met {_rules(theirs)}"
        )
    if our_outputs != sorted(outputs):
        faults.append(f"switch {switch:#x}: the controller expects output to {our_outputs}, the switch to {outputs}")
    return faults


def _rules(rules: list[tuple[int, int, int]]) -> str:
    return "[" + ", ".join(f"table {t} priority {p} cookie {c:#x}" for t, p, c in rules) + "]"

#!/usr/bin/env python3
"""A backend's load agent for ryu_dsr's agent checks (HAProxy's agent-check
protocol): on each TCP connection it writes one line and closes.

    dsr_agent.py [--port 7777] [--bind ADDRESS] [--say TEXT | --file PATH | --command CMD | --cgroup DIR]

What it says, in order of choice:
  --say TEXT      always TEXT (``75%``, ``drain``, ``down``, ``up``)
  --file PATH     the first line of PATH, read on each connection (an operator
                  or a deploy script writes ``drain`` there; missing: ``up``)
  --command CMD   the first line CMD prints (run with the shell, at most 1 s)
  --cgroup DIR    the CPU a cgroup (v1 ``cpu``) has left under its quota:
                  the share of its periods not throttled, over the last
                  seconds (a service limited to its quota, as containers are)
  (none)          the CPU left over the last seconds, as a share of the
                  weight: 100 % of an idle machine, down to 10 % of a busy
                  one, from /proc/stat (a backend with a slower CPU, or a
                  noisy neighbour, reports less and gets fewer new
                  connections)

Standard library only; run it beside the service on each backend, e.g.
from the service's unit. The controller connects from its probe address.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import threading
import time

MIN_SHARE = 10  # a busy backend still takes some new connections; `drain` takes none


def cpu_times() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields)


def cgroup_periods(path: str) -> tuple[int, int]:
    """(periods not throttled, periods) of a v1 ``cpu`` cgroup."""
    with open(f"{path}/cpu.stat") as stat:
        fields = dict(line.split() for line in stat if line.strip())
    periods = int(fields["nr_periods"])
    return periods - int(fields["nr_throttled"]), periods


class CpuLeft:
    """The share of CPU left (``sample()``: (left, total) counters), sampled
    in the background every second and averaged over the last few samples."""

    def __init__(self, sample=cpu_times, window: int = 5) -> None:
        self.samples: list[float] = []
        self.window = window
        self.sample = sample
        thread = threading.Thread(target=self._run, daemon=True)
        thread.start()

    def _run(self) -> None:
        idle, total = self.sample()
        while True:
            time.sleep(1.0)
            now_idle, now_total = self.sample()
            if now_total > total:
                self.samples = (self.samples + [(now_idle - idle) / (now_total - total)])[-self.window :]
            idle, total = now_idle, now_total

    def line(self) -> str:
        if not self.samples:
            return "up"
        left = sum(self.samples) / len(self.samples)
        return f"{max(MIN_SHARE, min(100, round(100 * left)))}%"


def line_of(args, cpu: CpuLeft | None) -> str:
    if args.say is not None:
        return args.say
    if args.file is not None:
        try:
            with open(args.file) as handle:
                return handle.readline().strip() or "up"
        except OSError:
            return "up"
    if args.command is not None:
        try:
            done = subprocess.run(args.command, shell=True, capture_output=True, text=True, timeout=1.0)
            return (done.stdout.splitlines() or ["up"])[0].strip()
        except subprocess.TimeoutExpired:
            return "up"
    return cpu.line() if cpu else "up"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=7777)
    parser.add_argument("--bind", default="::", help="address to listen on (default: every address, both families)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--say")
    what.add_argument("--file")
    what.add_argument("--command")
    what.add_argument("--cgroup")
    args = parser.parse_args()
    cpu = None
    if args.cgroup is not None:
        cpu = CpuLeft(lambda: cgroup_periods(args.cgroup))
    elif args.say is None and args.file is None and args.command is None:
        cpu = CpuLeft()
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    server.bind((args.bind, args.port))
    server.listen(64)
    while True:
        conn, _peer = server.accept()
        try:
            conn.sendall(line_of(args, cpu).encode() + b"\n")
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()

"""Check a declared-config file (and optionally a state file) without starting
the controller: ``ryu-dsr-check conf/dsr.json [--state STATE_FILE]``.

Exit status 0 when both are valid; otherwise 1 and one line naming the field
and the rule that failed.
"""

from __future__ import annotations

import argparse
import sys

from ryu_dsr.store import StateFileError, Store, load_declared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ryu-dsr-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("declared", help="JSON file of pools and VIPs")
    parser.add_argument("--state", help="a saved state file to check, and to apply the declared file on")
    args = parser.parse_args(argv)
    try:
        state = load_declared(Store(args.state).load(), args.declared)
    except StateFileError as error:
        print(f"invalid: {error}")
        return 1
    print(f"ok: {len(state.pools)} pools, {len(state.vips)} VIPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

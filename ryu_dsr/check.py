"""Check a declared-config file (and optionally a state file) without starting
the controller: ``ryu-dsr-check conf/dsr.json [--state STATE_FILE]``.

Exit status 0 when both are valid; otherwise 1 and one line naming the field
and the rule that failed.
"""

from __future__ import annotations

import argparse
import sys

from ryu_dsr.store import StateFileError, open_store, plan_declared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ryu-dsr-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("declared", help="JSON file of pools and VIPs")
    parser.add_argument("--state", help="a saved state file to check, and to apply the declared file on")
    args = parser.parse_args(argv)
    try:
        config = open_store(args.state).load().config if args.state else None
        if config is None:
            from ryu_dsr.model import Config

            config = Config()
        change = plan_declared(config, args.declared)
    except StateFileError as error:
        print(f"invalid: {error}")
        return 1
    config.apply(change)
    print(f"ok: {len(config.pools)} pools, {len(config.vips)} VIPs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

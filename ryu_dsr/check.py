"""Check a configuration without starting the controller.

    ryu-dsr-check --config-file /etc/ryu_dsr/ryu_dsr.conf   what the service unit runs before starting
    ryu-dsr-check conf/dsr.json [--state STATE_FILE]        a declared-config file alone

With ``--config-file`` (repeatable, later files win, as with ryu-manager):
every ``[dsr]`` setting is held to its rule, the saved state (if the state
file exists) is read and checked, the declared file it names is planned on
that state, and the token file (``auth = token``) is read if it exists, or
its directory must let the controller make it. Exit status 0 when all is
valid; otherwise 1 and one line naming the field and the rule that failed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ryu_dsr.model import Config, InvalidInput
from ryu_dsr.store import StateFileError, open_store, plan_declared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ryu-dsr-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("declared", nargs="?", help="JSON file of pools and VIPs")
    parser.add_argument("--state", help="a saved state file to check, and to apply the declared file on")
    parser.add_argument(
        "--config-file", action="append", default=[], help="ryu-manager's config file whose [dsr] section to check"
    )
    args = parser.parse_args(argv)
    if not args.declared and not args.config_file:
        parser.error("give a declared file, --config-file, or both")
    try:
        summary = _check(args)
    except (StateFileError, InvalidInput) as error:
        print(f"invalid: {error}")
        return 1
    print(f"ok: {summary}")
    return 0


def _check(args) -> str:
    state, declared, parts = args.state, args.declared, []
    if args.config_file:
        from ryu_dsr.settings import Settings

        settings = Settings.from_files(args.config_file)
        parts.append(f"settings of {', '.join(args.config_file)}")
        declared = declared or settings.declared_file or None
        if settings.etcd_endpoints:
            parts.append(f"state in etcd {settings.etcd_endpoints} (not read)")
        elif not state and settings.state_file:
            state = settings.state_file if Path(settings.state_file).exists() else None
            _writable_dir("dsr.state_file", settings.state_file)
        if settings.auth == "token":
            _token_file(settings.token_file)
    config = open_store(state).load().config if state else Config()
    if state:
        parts.append(f"state {state}")
    change = plan_declared(config, declared)
    config.apply(change)
    return f"{len(config.pools)} pools, {len(config.vips)} VIPs" + (f" ({'; '.join(parts)})" if parts else "")


def _writable_dir(field: str, path: str) -> None:
    """The controller can make ``path``: its nearest existing directory is writable."""
    if Path(path).exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise InvalidInput(field, f"{path} cannot be read and written by this user")
        return
    parent = Path(path).parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InvalidInput(field, f"cannot make {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InvalidInput(field, f"cannot make {path}: {parent} is not writable by this user")


def _token_file(path: str) -> None:
    from ryu_dsr.auth import load_tokens

    if Path(path).exists():
        load_tokens(path)  # reads and checks it; never writes an existing file
    else:
        _writable_dir("dsr.token_file", path)


if __name__ == "__main__":
    sys.exit(main())

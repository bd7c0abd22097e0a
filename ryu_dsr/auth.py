"""Who may change things: bearer tokens kept in a file only root can read.

At the first start with ``auth = token`` and no token file, a random token
is written to ``token_file`` (mode 0600) and the log says where it is (never
the token). The file holds one token per line, ``NAME:TOKEN`` or just
``TOKEN`` (named ``admin``); the name is what the audit log shows for the
changes made with it. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
from pathlib import Path

from ryu_dsr.model import InvalidInput

LOG = logging.getLogger("ryu_dsr")


def load_tokens(path: str | os.PathLike) -> dict[str, str]:
    """Tokens by name from ``path``, made first if it does not exist."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(f"admin:{secrets.token_urlsafe(32)}\n")
        LOG.warning("REST API token made and written to %s (readable by root only): changes need it", path)
    tokens: dict[str, str] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise InvalidInput("dsr.token_file", f"cannot read {path}: {error}") from None
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, _, token = line.rpartition(":")
        name = name or "admin"
        if len(token) < 16:
            raise InvalidInput("dsr.token_file", f"{path} line {number}: a token must have at least 16 characters")
        tokens[name] = token
    if not tokens:
        raise InvalidInput("dsr.token_file", f"{path} holds no token")
    return tokens


def token_holder(tokens: dict[str, str], authorization: str | None) -> str | None:
    """The name of the token an ``Authorization: Bearer`` header carries, or
    None. Every token is compared, in constant time."""
    if not authorization or not authorization.startswith("Bearer "):
        return None
    offered = authorization[len("Bearer ") :].strip().encode()
    holder = None
    for name, token in tokens.items():
        if hmac.compare_digest(offered, token.encode()):
            holder = name
    return holder


def read_token(path: str | os.PathLike) -> str | None:
    """The first token of a token file (for clients: the demo, the lab)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                return line.strip().rpartition(":")[2]
    except OSError:
        return None
    return None

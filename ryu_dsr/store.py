"""The state file: written by atomic replace, read back with every rule."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from ryu_dsr.model import State, apply_declared


class StateFileError(Exception):
    """The saved or declared state cannot be used; the message says why."""


class Store:
    """Saves accepted states to one JSON file.

    Each save writes a temporary file in the same directory, fsyncs it and
    renames it over the old one, then fsyncs the directory: a crash at any
    moment leaves either the old or the new file, whole.
    """

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path = Path(path) if path else None

    def load(self) -> State:
        if self.path is None or not self.path.exists():
            return State()
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise StateFileError(f"state file {self.path}: cannot read JSON: {error}") from None
        try:
            return State.from_saved(data)
        except Exception as error:  # InvalidInput or Conflict: the message names the field
            raise StateFileError(f"state file {self.path}: {error}") from None

    def save(self, state: State) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(state.to_saved(), indent=1, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load_declared(state: State, path: str | os.PathLike | None) -> State:
    """Apply a declared-config file (JSON: {"pools": [...], "vips": [...]})."""
    if not path:
        return state
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise StateFileError(f"declared config {path}: cannot read JSON: {error}") from None
    try:
        return apply_declared(state, data)
    except Exception as error:  # InvalidInput, Conflict: the message names the field
        raise StateFileError(f"declared config {path}: {error}") from None

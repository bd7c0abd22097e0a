"""Let Ryu 4.34 run on a current eventlet (Python 3.11), and as ``ryu-manager
ryu_dsr`` from the project's own directory.

A ``.pth`` file installed into the project's virtual environment by
tools/setup imports this module at interpreter start; it only registers an
import hook, which mends a module the moment it is first imported. Programs
that import neither pay nothing else.

- ``eventlet.wsgi``: ``ryu.app.wsgi`` does ``from eventlet.wsgi import
  ALREADY_HANDLED``, a name eventlet removed in the releases that support
  Python 3.11: it is added.
- ``ryu.utils``: ``ryu-manager NAME`` loads NAME as a file when a path NAME
  exists, so in a checkout of this project (which has a directory
  ``ryu_dsr``) it fails with IsADirectoryError: a directory is loaded as the
  module of that name instead.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import warnings


def _already_handled(module) -> None:
    if not hasattr(module, "ALREADY_HANDLED"):
        module.ALREADY_HANDLED = object()


def _import_directories_by_name(module) -> None:
    original = module.import_module
    if getattr(original, "mended", False):
        return

    def import_module(modname):
        if os.path.isdir(modname):
            import importlib

            return importlib.import_module(modname)
        return original(modname)

    import_module.mended = True
    module.import_module = import_module


MENDS = {"eventlet.wsgi": _already_handled, "ryu.utils": _import_directories_by_name}


class _Mend(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        mend = MENDS.get(fullname)
        if mend is None:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        original_exec = spec.loader.exec_module

        def exec_module(module):
            original_exec(module)
            mend(module)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    for name, mend in MENDS.items():
        if name in sys.modules:
            mend(sys.modules[name])
    if not any(isinstance(finder, _Mend) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Mend())


install()
# eventlet 0.40+ warns on import that it is in maintenance mode; Ryu has no
# other hub, so the warning only buries ryu-manager's own output.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

"""Let Ryu 4.34 run on a current eventlet (Python 3.11).

``ryu.app.wsgi`` does ``from eventlet.wsgi import ALREADY_HANDLED``, a name
eventlet removed in the releases that support Python 3.11. A ``.pth`` file
installed by tools/setup imports this module at interpreter start; it only
registers an import hook, which adds the name the moment ``eventlet.wsgi`` is
first imported. Programs that never import eventlet pay nothing else.
"""

from __future__ import annotations

import importlib.abc
import sys
import warnings

_TARGET = "eventlet.wsgi"


class _AddAlreadyHandled(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):
        if fullname != _TARGET:
            return None
        sys.meta_path.remove(self)
        try:
            import importlib.util

            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module):
            original_exec(module)
            if not hasattr(module, "ALREADY_HANDLED"):
                module.ALREADY_HANDLED = object()

        loader.exec_module = exec_module
        return spec


def install() -> None:
    if _TARGET in sys.modules:
        module = sys.modules[_TARGET]
        if not hasattr(module, "ALREADY_HANDLED"):
            module.ALREADY_HANDLED = object()
        return
    if not any(isinstance(finder, _AddAlreadyHandled) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AddAlreadyHandled())


install()
# eventlet 0.40+ warns on import that it is in maintenance mode; Ryu has no
# other hub, so the warning only buries ryu-manager's own output.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

"""ryu_dsr: Direct Server Return load balancing in OpenFlow switches.

``ryu-manager ryu_dsr`` loads the application class ``DsrApp`` from this
module: ryu-manager takes the RyuApp classes *defined in* the module it is
named, so the class is defined here, as the shell (``ryu_dsr.shell``) under
that name. It is defined only when Ryu is already loaded (ryu-manager loads
it before any application), so that ``import ryu_dsr.ctl``, the config
checker and the pure core never load Ryu or eventlet.
"""

import sys

if "ryu.base.app_manager" in sys.modules:
    from ryu_dsr.shell import Shell

    class DsrApp(Shell):
        """The Ryu application ``ryu-manager ryu_dsr`` runs (``ryu_dsr.shell.Shell``)."""

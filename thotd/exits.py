"""Exit statuses of the ``thot``, ``thotd`` and ``thotctl`` commands, defined once.

Scripts and systemd act on these numbers (the unit's ``RestartPreventExitStatus=`` names
:data:`CONFIG`), so each has one name here and the commands only refer to it. The values
follow the usual conventions: 2 for a usage error (argparse's own), ``sysexits.h``'s
``EX_CONFIG`` for a bad configuration, 128 + SIGINT for an interrupted command.
"""

from __future__ import annotations

#: Done, and nothing failed.
OK = 0
#: Something failed: a run, a request, a wait that timed out, an invalid project.
FAILURE = 1
#: The command line itself is wrong (what argparse exits with).
USAGE = 2
#: ``thotctl``/``thotd stop``: no daemon answers on the control socket.
NOT_RUNNING = 3
#: ``thotctl wait``: nothing more will run until an invalid object file is fixed.
BLOCKED = 4
#: The configuration cannot be used (``EX_CONFIG``): restarting would not help.
CONFIG = 78
#: Stopped by Ctrl-C (128 + SIGINT).
INTERRUPTED = 130

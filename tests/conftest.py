"""Suite-wide setup: commands the tests start as subprocesses must see Ctrl-C as a user's shell gives it.

A job started in the background of a non-interactive shell (``pytest ... &``, some CI runners) inherits SIGINT
*ignored*, and so would every ``clumptool`` the interrupt tests start: their SIGINT would be lost and the
tests of Ctrl-C would fail for a reason that is not clumptool's. Catching SIGINT here (Python's own handler)
makes children start with the default disposition, as under a terminal.
"""

from __future__ import annotations

import signal

if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

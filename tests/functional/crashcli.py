"""The resizedriver command, killed like a power cut at a chosen point.

RD_CRASH_AT = '<operation>:<step>' (a plan name and a step name): the
process SIGKILLs itself right after that step has run, before the journal
records it done.  Everything else is the real command.
"""

from __future__ import annotations

import os
import signal
import sys

from resizedriver import journal
from resizedriver.cmd import cli

TARGET = os.environ['RD_CRASH_AT']
_done = journal.Journal.done


def done(self: journal.Journal, step: str) -> None:
    if f'{self.operation}:{step}' == TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
    _done(self, step)


journal.Journal.done = done
sys.exit(cli.main())

"""Running this package's own command on another host.

The operator CLI has no compute manager to call the destination's half of
an operation, so it runs ``resizedriver`` there over the transport (the
command line is ``[resizedriver] remote_command``).
"""

from __future__ import annotations

import shlex
from typing import Optional

from oslo_config import cfg

from resizedriver import transport


def run(conf: cfg.ConfigOpts, host: str, *args: str,
        stdin: Optional[str] = None) -> None:
    """Run ``resizedriver ARGS`` on ``host``; its failure raises."""
    cmd = shlex.split(conf.resizedriver.remote_command) + list(args)
    transport.for_host(host, conf).execute(*cmd, stdin=stdin)

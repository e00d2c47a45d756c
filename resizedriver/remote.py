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


def command(conf: cfg.ConfigOpts) -> list[str]:
    """``[resizedriver] remote_command`` as the argv it starts with."""
    return shlex.split(conf.resizedriver.remote_command)


def run(conf: cfg.ConfigOpts, host: str, *args: str,
        stdin: Optional[str] = None) -> None:
    """Run ``resizedriver ARGS`` on ``host``; its failure raises."""
    transport.for_host(host, conf).execute(*command(conf), *args,
                                           stdin=stdin)

"""Plugging VIFs on this host for the operator CLI path.

Libvirt attaches a guest's tap device to the bridge named in its
definition; what it cannot do is create that bridge.  Plugging a Linux
bridge VIF therefore means: make sure the bridge exists and is up.  Under
Nova the adapter uses Nova's own os-vif plugging instead.
"""

from __future__ import annotations

import os

from oslo_concurrency import processutils
from oslo_log import log as logging

from resizedriver import exception
from resizedriver.domain_xml import DomainVif

LOG = logging.getLogger(__name__)


def plug(vifs: list[DomainVif], uuid: str) -> None:
    """Create the Linux bridges the guest's VIFs name that do not exist.

    A VIF with a ``<virtualport>`` (Open vSwitch, 802.1Qbh) plugs into a
    switch that is not a Linux bridge and is not ours to make; a network
    device of that name that exists, of whatever kind, is left as it is.
    """
    for vif in vifs:
        if vif.type != 'bridge' or not vif.bridge or vif.virtualport:
            continue
        if os.path.exists(f'/sys/class/net/{vif.bridge}'):
            continue
        LOG.info('Creating bridge %s for VIF %s', vif.bridge, vif.mac,
                 instance_uuid=uuid)
        try:
            processutils.execute('ip', 'link', 'add', 'name', vif.bridge,
                                 'type', 'bridge')
            processutils.execute('ip', 'link', 'set', vif.bridge, 'up')
        except processutils.ProcessExecutionError as e:
            raise exception.ResizeDriverError(
                f'cannot create bridge {vif.bridge}: {e.stderr}') from e

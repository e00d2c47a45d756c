"""Transports: one class per way of reaching the destination host."""

from __future__ import annotations

from typing import Optional

from oslo_config import cfg

from resizedriver.transport.base import Prepare, Transport
from resizedriver.transport.local import LocalTransport
from resizedriver.transport.proc import MiB, Deadlines
from resizedriver.transport.rsync import RsyncTransport
from resizedriver.transport.ssh import BadHost, SshOptions, SshTransport

__all__ = ['Prepare', 'Transport', 'LocalTransport', 'SshTransport',
           'RsyncTransport', 'SshOptions', 'BadHost', 'Deadlines',
           'for_host']


def deadlines(conf: cfg.ConfigOpts) -> Deadlines:
    return Deadlines(command=conf.resizedriver.command_timeout,
                     rate=conf.resizedriver.min_transfer_rate_mib * MiB)


def for_host(host: Optional[str], conf: cfg.ConfigOpts) -> Transport:
    """The transport the configuration asks for to reach ``host``;
    refuses (:class:`BadHost`) a host ssh could read as an option."""
    if host is None:
        return LocalTransport(deadlines(conf))
    options = SshOptions(user=conf.resizedriver.ssh_user,
                         port=conf.resizedriver.ssh_port,
                         identity_file=conf.resizedriver.ssh_identity_file,
                         options=conf.resizedriver.ssh_options)
    if conf.libvirt.remote_filesystem_transport == 'rsync':
        return RsyncTransport(host, options, deadlines(conf))
    return SshTransport(host, options, deadlines(conf))

"""Make a nova-compute service's record before its first start.

Nova refuses to start a compute service that is new to its database while
the hypervisor has domains (``_sanity_check_new_host``: "My hypervisor has
existing instances, but I appear to be a new service").  The stack's
computes share their libvirtds with other tests, whose domains are not
Nova's; a service record made ahead is what a compute that had been up
before has.  Run as ``python compute_service.py NOVA_CONF HOST...``.
"""

from __future__ import annotations

import sys

import nova.conf
from oslo_utils import uuidutils
from nova import context, objects
from nova.db.main import api as db


def main() -> None:
    conf, hosts = sys.argv[1], sys.argv[2:]
    objects.register_all()
    nova.conf.CONF([], project='nova', default_config_files=[conf])
    ctx = context.get_admin_context()
    for host in hosts:
        if objects.Service.get_by_host_and_binary(
                ctx, host, 'nova-compute') is None:
            # the DB row only (the object's create() would notify, and
            # no notifier is set up here)
            db.service_create(ctx, {
                'uuid': uuidutils.generate_uuid(),
                'host': host, 'binary': 'nova-compute', 'topic': 'compute',
                'report_count': 0,
                'version': objects.service.SERVICE_VERSION})


if __name__ == '__main__':
    main()

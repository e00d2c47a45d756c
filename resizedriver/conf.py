"""Configuration options.

Where Nova already has an option with the same meaning we register it under
Nova's own name and group (``instances_path``, ``use_cow_images``,
``[libvirt] virt_type`` / ``remote_filesystem_transport``), so one nova.conf
configures both; our own knobs live in ``[resizedriver]``.  Registration is
tolerant of Nova having registered the same option first.
"""

from __future__ import annotations

from oslo_config import cfg

CONF = cfg.CONF

DEFAULT_OPTS: list[cfg.Opt] = [
    cfg.StrOpt('instances_path', default='/var/lib/nova/instances',
               help='Where instances are stored on disk (as in Nova).'),
    cfg.BoolOpt('use_cow_images', default=True,
                help='Whether the destination keeps root and ephemeral '
                     'disks as qcow2 (True) or raw (False); disks in the '
                     'other format are converted when a resize finishes.'),
]

LIBVIRT_OPTS: list[cfg.Opt] = [
    cfg.StrOpt('virt_type', default='kvm',
               choices=('kvm', 'qemu'),
               help='Libvirt domain type. "kvm" silently falls back to '
                    '"qemu" (TCG) when this host cannot run KVM guests.'),
    cfg.StrOpt('connection_uri', default='',
               help='Libvirt URI; empty means qemu:///system.'),
    cfg.StrOpt('remote_filesystem_transport', default='ssh',
               choices=('ssh', 'rsync'),
               help='How disks are copied to another host.'),
]

RESIZEDRIVER_OPTS: list[cfg.Opt] = [
    cfg.IntOpt('shutdown_timeout', default=60, min=0,
               help='Seconds to wait for a clean guest shutdown before the '
                    'guest is powered off hard.'),
    cfg.IntOpt('shutdown_retry_interval', default=10, min=1,
               help='Seconds between repeated ACPI shutdown requests.'),
    cfg.IntOpt('start_timeout', default=120, min=1,
               help='Seconds to wait for a started guest to be running.'),
    cfg.StrOpt('ssh_user', default='',
               help='User for ssh/rsync to the destination host; empty '
                    'means the current user.'),
    cfg.PortOpt('ssh_port', default=None,
                help='Port of sshd on the destination host; unset: ssh\'s '
                     'own configuration decides (~/.ssh/config, e.g. the '
                     'Port 8022 kolla-ansible gives the nova user, else '
                     '22).'),
    cfg.StrOpt('ssh_identity_file', default='',
               help='Private key for ssh to the destination host.'),
    cfg.ListOpt('ssh_options', default=[],
                help='Extra "-o" options for ssh (e.g. '
                     'StrictHostKeyChecking=accept-new), added to the '
                     'defaults BatchMode=yes, ConnectTimeout=30, '
                     'ServerAliveInterval=15 and ServerAliveCountMax=4; an '
                     'option with the same keyword replaces that default '
                     'only.  The defaults never prompt, and end a copy '
                     'whose network went silent after about a minute (it '
                     'is then rolled back) instead of hanging the resize.  '
                     'A migrate sends its commands and copies over one '
                     'connection (ssh multiplexing); setting ControlMaster, '
                     'ControlPath or ControlPersist here keeps your own.'),
    cfg.IntOpt('command_timeout', default=600, min=1,
               help='Seconds any one command (ssh, qemu-img, ...) may run '
                    'before it is killed and the step fails.'),
    cfg.FloatOpt('min_transfer_rate_mib', default=5.0, min=0.01,
                 help='Slowest rate, in MiB/s, at which a command that '
                      'reads or writes a whole disk (copy, checksum, '
                      'conversion) is still waited for: it may run '
                      'command_timeout plus the disk\'s size at this rate '
                      'before it is killed.'),
    cfg.StrOpt('remote_command', default='resizedriver',
               help='How the destination host runs this package\'s '
                    'command; the operator CLI uses it to run the '
                    'destination half of a resize there.'),
    cfg.StrOpt('lock_path', default='',
               help='Directory for per-instance lock files; empty means '
                    '<instances_path>/locks.'),
    cfg.IntOpt('fold_timeout', default=3600, min=1,
               deprecated_for_removal=True,
               deprecated_reason='Unused: every live block job that '
                                 'folds layers (a pre-copy\'s, its '
                                 'snapshot tops, an overlay resize\'s) '
                                 'now may take command_timeout plus its '
                                 'data at min_transfer_rate_mib, as a '
                                 'copy may; a flat cap aborted every fold '
                                 'of a large enough disk, each retry '
                                 'the same.',
               help='Ignored (deprecated).'),
    cfg.BoolOpt('pre_copy', default=True,
                help='Move a running guest with qcow2 disks to another host '
                     'by pre-copy: its disks are copied while it runs (an '
                     'external disk-only snapshot freezes them), and only '
                     'what it wrote meanwhile while it is down, so the '
                     'downtime does not grow with the disks.  False: the '
                     'copy plan (everything copied while it is down).'),
    cfg.IntOpt('pre_copy_rounds', default=3, min=1, max=8,
               help='At most this many pre-copy rounds: after each, what '
                    'the guest wrote meanwhile is frozen by a new snapshot '
                    'and copied too while it runs, as long as that is '
                    'more than pre_copy_final_mb and less than the round '
                    'before copied (a guest that writes as fast as the '
                    'wire carries gains nothing from another round).'),
    cfg.IntOpt('pre_copy_final_mb', default=64, min=0,
               help='Stop the pre-copy rounds and power the guest off '
                    'once what it wrote during the last round is at most '
                    'this many MiB: that, copied while it is down, is '
                    'the part of the downtime that depends on the guest.'),
    cfg.IntOpt('parallel_copies', default=2, min=1, max=16,
               help='How many of an instance\'s files a move to another '
                    'path or host copies at once (its disks, kernel, '
                    'config drive: each one stream, read, sent and '
                    'verified on its own).'),
    cfg.IntOpt('max_virtual_size_gb', default=16384, min=1,
               help='Refuse disk images claiming a larger virtual size.'),
    cfg.StrOpt('live_resize', default='auto',
               choices=('auto', 'always', 'never'),
               help='Resize a running guest on this host without stopping '
                    'it (hot-plugged vCPUs and memory, live disk growth) '
                    'when it can be done: "auto" does so when possible '
                    'and resizes cold otherwise (the log says why), '
                    '"always" refuses a resize that cannot be live, '
                    '"never" always resizes cold.'),
    cfg.IntOpt('live_timeout', default=60, min=1,
               help='Seconds a live resize waits for the hypervisor to '
                    'report a hot-plugged vCPU count or memory size.'),
    cfg.BoolOpt('vcpu_hot_unplug', default=False,
                help='Whether a revert may take hot-plugged vCPUs away '
                     'from a running guest.  Off by default: on QEMU 7.2 '
                     'libvirt times out waiting for QEMU and QEMU may '
                     'crash later (never used there, even when on); a '
                     'revert that must remove vCPUs then reboots the '
                     'guest into the old flavor once.'),
    cfg.IntOpt('headroom_max_vcpus', default=0, min=0,
               help='Domains this driver defines may grow live to this '
                    'many vCPUs (0: no vCPU headroom).  Flavor extra spec '
                    '"resizedriver:max_vcpus" replaces it; image property '
                    '"resizedriver_max_vcpus" may lower it.'),
    cfg.FloatOpt('headroom_vcpus_factor', default=0.0, min=0.0,
                 help='vCPU headroom as a multiple of the flavor\'s vCPUs '
                      '(the larger of this and headroom_max_vcpus wins).'),
    cfg.IntOpt('headroom_max_memory_mb', default=0, min=0,
               help='Domains this driver defines may grow live to this '
                    'much memory, in MiB, through a virtio-mem device (0: '
                    'no memory headroom).  Flavor extra spec '
                    '"resizedriver:max_memory_mb" replaces it; image '
                    'property "resizedriver_max_memory_mb" may lower it.'),
    cfg.FloatOpt('headroom_memory_factor', default=0.0, min=0.0,
                 help='Memory headroom as a multiple of the flavor\'s '
                      'memory (the larger of this and '
                      'headroom_max_memory_mb wins).'),
]


def register_opts(conf: cfg.ConfigOpts = CONF,
                  novas: bool = True) -> None:
    """Register our options, and with ``novas`` those under Nova's own
    names, skipping any Nova has already registered.  Callers that read
    the latter register them (the Nova driver, the operator CLI)."""
    for group, opts in list_opts() + (list_novas_opts() if novas else []):
        for opt in opts:
            try:
                conf.register_opt(
                    opt, group=None if group == 'DEFAULT' else group)
            except cfg.DuplicateOptError:
                pass


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for oslo-config-generator (namespace ``resizedriver``):
    our own options only, so that a run with Nova's namespaces (a
    nova.conf sample, the configuration reference) declares none twice."""
    return [('resizedriver', RESIZEDRIVER_OPTS)]


def list_novas_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """Entry point for namespace ``resizedriver.nova_named``: the options
    we read under Nova's own names, for the operator CLI's configuration
    file on a host without nova.conf (``etc/resizedriver.conf.sample``).
    Under Nova, Nova's definitions apply."""
    return [('DEFAULT', DEFAULT_OPTS), ('libvirt', LIBVIRT_OPTS)]


# Only [resizedriver] at import: a process may import this before Nova's
# options (the config generator loads its plugins in no set order), and
# Nova's registration of its own refuses any already registered.
register_opts(novas=False)

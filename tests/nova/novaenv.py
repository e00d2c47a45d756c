"""Real Nova (the tox env's: 31, 33 or 34) around resizedriver, without
a database or services.

The driver is loaded by Nova's own ``load_compute_driver`` from the
nova.conf line operators write; instances, flavors, image metadata,
network info and migrations are real Nova objects built in memory (only
``save()`` is stubbed: there is no database).  The guest is the project's
test guest: its kernel, ramdisk and root image are put into ``_base`` under
the names Nova's image cache gives them, so spawn needs no Glance.
"""

from __future__ import annotations

# First, as nova-compute starts (its entry point's first line): Nova's own
# concurrency mode, eventlet's monkey patching in 31 to 33, native threads
# in 34.  Unpatched, Nova 31's driver hangs in init_host (a green thread
# of its libvirt Host blocks the process on a native queue).  A process
# that eventlet patched runs its tests one by one (tox.ini: pytest-xdist's
# threads and eventlet's hub do not mix).
import nova.cmd.compute  # noqa: F401

import contextlib
import filecmp
import hashlib
import os
import shutil
import subprocess
import uuid as uuidlib
from typing import Optional

import nova.conf
from nova import block_device as nova_block_device
from nova import context as nova_context
from nova import objects
from nova.db import migration as nova_migration
from nova.network import model as network_model
from nova.network import security_group_api
from nova.virt import driver as nova_driver
from nova.virt import virtapi as nova_virtapi
from oslo_privsep import priv_context

from resizedriver.host import kvm_usable
from tests.lib import hostenv, testguest

CONF = nova.conf.CONF
COMPUTE_DRIVER = 'resizedriver.LibvirtResizeDriver'   # the nova.conf line
IMAGE_ID = '0b7d3a8e-1111-4c9e-9f00-000000000001'
KERNEL_ID = '0b7d3a8e-1111-4c9e-9f00-000000000002'
RAMDISK_ID = '0b7d3a8e-1111-4c9e-9f00-000000000003'


class VirtAPI(nova_virtapi.VirtAPI):
    """No neutron here: nothing to wait for (vif_plugging_timeout = 0)."""

    @contextlib.contextmanager
    def wait_for_instance_event(self, instance, event_names, **kwargs):
        """Nova 31 and 32 call its bound ``deadline``, 33+ ``timeout``."""
        yield

    def exit_wait_early(self, events):
        pass


def configure(root: str, instances_path: str = '',
              host: str = 'rdtest-compute', my_ip: str = '127.0.0.1',
              node: str = '', name_prefix: str = 'rdtest') -> None:
    """Nova's configuration for a compute node under ``root`` (one cell
    database there); a ``node`` name gives it state and lock paths of its
    own, as on another machine.  Its domains are ``<name_prefix>-<id>``:
    each cell database counts ids from 1, so two sessions on one libvirtd
    need prefixes of their own."""
    suffix = f'-{node}' if node else ''
    objects.register_all()
    CONF([], project='nova', default_config_files=[])
    nova.conf.neutron.register_dynamic_opts(CONF)
    nova.conf.devices.register_dynamic_opts(CONF)
    for name, value, group in (
            ('compute_driver', COMPUTE_DRIVER, None),
            ('instances_path',
             instances_path or os.path.join(root, 'instances'), None),
            ('state_path', os.path.join(root, 'state' + suffix), None),
            ('host', host, None),
            ('my_ip', my_ip, None),
            ('instance_name_template', f'{name_prefix}-%08x', None),
            ('use_cow_images', True, None),
            # Nova's default for an image without os_type is vfat, whose
            # mkfs this host lacks; ext4 is what Linux images get
            ('default_ephemeral_format', 'ext4', None),
            ('vif_plugging_timeout', 0, None),
            ('virt_type', 'kvm' if kvm_usable() else 'qemu', 'libvirt'),
            ('lock_path', os.path.join(root, 'locks' + suffix),
             'oslo_concurrency'),
            ('connection', f'sqlite:///{root}/nova.sqlite', 'database')):
        CONF.set_override(name, value, group)
    # A real (sqlite) cell database: Nova looks up VIFs, BDMs and lazy
    # instance fields there.
    nova_migration.db_sync()
    # privsep as root without sudo: the helper is on PATH next to python.
    priv_context.init(root_helper=['env'])
    # No neutron here: a config drive's metadata (``force_config_drive``)
    # asks it for the instance's security groups, of which it has none.
    security_group_api.get_instance_security_groups = _no_security_groups


def _no_security_groups(context, instance, detailed=False) -> list:
    return []


def load_driver():
    """Exactly what nova-compute does with ``compute_driver``."""
    drv = nova_driver.load_compute_driver(VirtAPI(), CONF.compute_driver)
    # Our [resizedriver] options exist once our driver has registered them
    # (upstream's LibvirtDriver, in the benchmark, has none).
    if 'resizedriver' in CONF:
        CONF.set_override('shutdown_retry_interval', 2, 'resizedriver')
    return drv


def seed_images(instances_path: str,
                images: tuple[str, ...] = (IMAGE_ID, KERNEL_ID,
                                           RAMDISK_ID)) -> None:
    """Put the guest where Nova's image cache looks: _base/<sha1(id)>
    (there is no Glance to fetch them from)."""
    build = testguest.build_guest_image()
    base = os.path.join(instances_path, '_base')
    os.makedirs(base, exist_ok=True)
    for image_id, src in ((IMAGE_ID, 'base.raw'),
                          (KERNEL_ID, testguest.KERNEL),
                          (RAMDISK_ID, 'initrd.img')):
        if image_id not in images:
            continue
        dst = os.path.join(base, hashlib.sha1(image_id.encode()).hexdigest())
        # a rebuilt guest under the same image id replaces a stale copy
        # (an instances path that outlives a test session keeps one)
        if not os.path.exists(dst) or not filecmp.cmp(
                os.path.join(build, src), dst, shallow=False):
            shutil.copy(os.path.join(build, src), dst)


def flavor(flavorid: str, vcpus: int, memory_mb: int, root_gb: int,
           extra_specs: Optional[dict] = None, ephemeral_gb: int = 0,
           swap: int = 0):
    """A flavor; ``swap`` in MiB, as Nova's."""
    return objects.Flavor(
        id=int(flavorid), flavorid=flavorid, name=f'rd.{flavorid}',
        vcpus=vcpus, memory_mb=memory_mb, root_gb=root_gb,
        ephemeral_gb=ephemeral_gb, swap=swap,
        extra_specs=dict(extra_specs or {}), rxtx_factor=1.0,
        vcpu_weight=None,
        is_public=True, disabled=False, description=None)


def _cmdline(ip: str, extra: str = '') -> str:
    return f'console=ttyS0 quiet rdip={ip} {extra}'.strip()


def image_meta(ip: str, cmdline: str = '', **properties: str):
    """The test image; ``cmdline`` more kernel parameters (``rdwrite=``),
    ``properties`` as Glance image properties (``hw_qemu_guest_agent=
    'yes'``, ...)."""
    return objects.ImageMeta.from_dict({
        'id': IMAGE_ID, 'name': 'resizedriver-test', 'disk_format': 'raw',
        'container_format': 'bare', 'size': 64 * 1024 * 1024,
        'min_disk': 0, 'min_ram': 0, 'status': 'active',
        'properties': {'kernel_id': KERNEL_ID, 'ramdisk_id': RAMDISK_ID,
                       'os_command_line': _cmdline(ip, cmdline),
                       **properties}})


def network_info(mac: str):
    """One VIF of type tap: Nova 34 dropped Linux bridge VIFs, and tap is
    plugged by Nova itself (privsep creates the tap device).  Wiring the
    tap into the bridge is the network agent's job: ``wire_taps``."""
    vif_id = str(uuidlib.uuid4())
    vif = network_model.VIF(
        id=vif_id, address=mac, type=network_model.VIF_TYPE_TAP,
        devname=('tap' + vif_id)[:network_model.NIC_NAME_LEN],
        network=network_model.Network(
            id=str(uuidlib.uuid4()), bridge=hostenv.BRIDGE,
            label='rdtest', subnets=[]),
        details={}, vnic_type=network_model.VNIC_TYPE_NORMAL, active=True)
    return network_model.NetworkInfo([vif])


def wire_taps(nw) -> None:
    """Do what the L2 agent would: put each tap into the test bridge."""
    for vif in nw:
        subprocess.run(['ip', 'link', 'set', vif['devname'], 'master',
                        hostenv.BRIDGE, 'up'], check=True)


def remove_taps(nw) -> None:
    """What Nova's unplug of a tap VIF does on a real host, for host B:
    ``tools/host-b`` leaves B A's ``/sys``, where Nova looks for the tap
    before it deletes it, so B's taps outlive the guest (and a later plug
    of the same VIF there fails)."""
    for vif in nw:
        subprocess.run(['ip', 'link', 'delete', vif['devname']],
                       capture_output=True, check=False)


def instance(ctx, flv, ip: str, nw, cmdline: str = '',
             **image_properties: str):
    uuid = str(uuidlib.uuid4())
    inst = objects.Instance(
        context=ctx, uuid=uuid,
        info_cache=objects.InstanceInfoCache(network_info=nw,
                                             instance_uuid=uuid),
        project_id='rdtest', user_id='rdtest', host=CONF.host,
        image_ref=IMAGE_ID, kernel_id=KERNEL_ID,
        ramdisk_id=RAMDISK_ID, flavor=flv, old_flavor=None, new_flavor=None,
        vcpus=flv.vcpus, memory_mb=flv.memory_mb, root_gb=flv.root_gb,
        ephemeral_gb=flv.ephemeral_gb, instance_type_id=flv.id,
        root_device_name='/dev/vda',
        os_type=None, config_drive='', vm_state='active', task_state=None,
        power_state=1, progress=0, display_name='rdtest',
        hostname='rdtest',              # a config drive's metadata has it
        system_metadata={'image_base_image_ref': IMAGE_ID,
                         'image_kernel_id': KERNEL_ID,
                         'image_ramdisk_id': RAMDISK_ID,
                         'image_os_command_line': _cmdline(ip, cmdline),
                         **{f'image_{k}': v
                            for k, v in image_properties.items()}},
        metadata={})
    inst.create()
    return inst


def create_local_bdms(ctx, drv, inst) -> None:
    """The block device mappings Nova's API makes for a server booted
    from an image (``_check_and_transform_bdm``: the image's, and a blank
    one each for the flavor's ephemeral disk and swap), their devices
    named by the driver as the compute manager has it do at build."""
    def bdm(**fields):
        mapping = objects.BlockDeviceMapping(
            ctx, instance_uuid=inst.uuid, **nova_block_device.
            BlockDeviceDict(fields))
        mapping.create()
        return mapping
    flv = inst.flavor
    image = bdm(source_type='image', destination_type='local',
                image_id=IMAGE_ID, boot_index=0, device_type='disk',
                delete_on_termination=True)
    ephemerals = [bdm(**nova_block_device.create_blank_bdm(
        flv.ephemeral_gb))] if flv.ephemeral_gb else []
    swap = [bdm(**nova_block_device.create_blank_bdm(
        flv.swap, 'swap'))] if flv.swap else []
    drv.default_device_names_for_instance(
        inst, inst.root_device_name, [image], ephemerals, swap, [])


def block_device_info(inst) -> dict:
    """What the compute manager hands the driver: the instance's block
    device mappings in the driver's format."""
    return nova_driver.get_block_device_info(
        inst, objects.BlockDeviceMappingList.get_by_instance_uuid(
            inst._context, inst.uuid))


def admin_context():
    return nova_context.get_admin_context()

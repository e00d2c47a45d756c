"""Rule 0, the ``upstream`` plan: what resizedriver does not own goes
Nova's own way under Nova, and is refused by the CLI before anything is
touched (Ceph RBD, LVM, block and network disks, files elsewhere,
volumes, no local root disk)."""

from __future__ import annotations

import pytest

from resizedriver import chooser
from resizedriver import domain_xml
from resizedriver import exception
from resizedriver import inventory
from resizedriver.model import Destination
from resizedriver.operations import plans
from tests.unit.test_validation import GROW, _refused

INST = '/srv/instances/11111111-2222-3333-4444-555555555555'


def _domain(*disks: str) -> str:
    return ("<domain type='kvm'><name>g</name><devices>" + ''.join(disks) +
            '</devices></domain>')


ROOT_FILE = (f"<disk type='file' device='disk'><source file='{INST}/disk'/>"
             f"<target dev='vda'/></disk>")
RBD = ("<disk type='network' device='disk'><driver type='raw'/>"
       "<source protocol='rbd' name='vms/uuid_disk'>"
       "<host name='169.254.79.1' port='6789'/></source>"
       "<target dev='vda'/></disk>")
LVM = ("<disk type='block' device='disk'><driver type='raw'/>"
       "<source dev='/dev/nova-vg/uuid_disk'/><target dev='vda'/></disk>")
POOL = ("<disk type='volume' device='disk'><source pool='p' volume='v'/>"
        "<target dev='vdb'/></disk>")
NFS_VOLUME = ("<disk type='file' device='disk'><source file='/var/lib/nova/"
              "mnt/abc/volume-1'/><target dev='vdc'/></disk>")
HOST_ISO = ("<disk type='file' device='cdrom'><source file='/isos/x.iso'/>"
            "<target dev='hdc'/><readonly/></disk>")
EMPTY_CDROM = "<disk type='file' device='cdrom'><target dev='hdd'/></disk>"
CONFIG_DRIVE = (f"<disk type='file' device='cdrom'><source file='{INST}/"
                f"disk.config'/><target dev='hde'/><readonly/></disk>")


def test_disks_elsewhere_names_every_disk_that_is_not_an_instance_file():
    xml = _domain(LVM, POOL, NFS_VOLUME, HOST_ISO, EMPTY_CDROM, CONFIG_DRIVE)
    assert domain_xml.disks_elsewhere(xml, INST) == {
        'vda': 'a block disk (/dev/nova-vg/uuid_disk)',
        'vdb': 'a volume disk (p v)',
        'vdc': 'a file disk (/var/lib/nova/mnt/abc/volume-1)'}
    assert domain_xml.disks_elsewhere(_domain(RBD), INST) == {
        'vda': 'a network disk (rbd vms/uuid_disk)'}
    assert domain_xml.disks_elsewhere(
        _domain(ROOT_FILE, HOST_ISO, CONFIG_DRIVE), INST) == {}


@pytest.mark.parametrize('images_type', chooser.OWN_IMAGE_TYPES)
def test_files_in_the_instance_directory_are_ours(images_type):
    assert chooser.why_upstream(images_type, {}, [], True) is None


@pytest.mark.parametrize('args,why', [
    (('rbd', {'vda': 'a network disk (rbd vms/x)'}, [], False),
     'images_type is rbd; no root disk file in the instance directory '
     '(booted from volume); vda is a network disk (rbd vms/x)'),
    (('lvm', {'vda': 'a block disk (/dev/vg/x)'}, [], False),
     'images_type is lvm'),
    (('ploop', {}, [], True), 'images_type is ploop'),
    # a disk that is not a file, whatever the backend now says (an
    # instance spawned before images_type changed)
    (('default', {'vdb': 'a block disk (/dev/sdx)'}, [], True),
     'vdb is a block disk'),
    # volumes: not proven with our plans; named once, as volumes
    (('default', {'vdb': 'a block disk (/dev/sdx)'}, ['vdb'], True),
     'Cinder volumes are attached (vdb), which resizedriver\'s plans are '
     'not proven with'),
    (('default', {'vda': 'a block disk (/dev/sdx)'}, ['vda'], False),
     'booted from volume'),
])
def test_what_is_not_ours_goes_upstream_and_says_why(args, why):
    found = chooser.why_upstream(*args)
    assert found is not None and why in found, found
    for volume in args[2]:
        assert f'{volume} is' not in found


def test_a_vtpm_going_to_another_host_goes_upstream():
    """Nova's own migrate moves its swtpm state
    (``save_and_migrate_vtpm_dir``) and its finish restores it; ours copy
    only disks."""
    found = chooser.why_upstream('default', {}, [], True,
                                 vtpm_to_another_host=True)
    assert found is not None and 'vTPM' in found and 'swtpm' in found
    assert chooser.why_upstream('default', {}, [], True,
                                vtpm_to_another_host=False) is None


UUID = '11111111-2222-3333-4444-555555555555'
OWN_RBD = RBD.replace('uuid_disk', f'{UUID}_disk')


def test_the_instances_own_rbd_images_are_the_chooser_s_to_decide():
    """Only where the live plan could grow them (the caller gives them:
    this host, the guest runs); then rule 1b decides (test_live)."""
    volume = RBD.replace("dev='vda'", "dev='vdb'").replace(
        'vms/uuid_disk', 'volumes/volume-1')
    other = RBD.replace("dev='vda'", "dev='vdc'")
    xml = _domain(OWN_RBD, volume, other, CONFIG_DRIVE)
    assert inventory.own_rbd(xml, UUID) == {'vda': 'disk'}
    assert [(d.name, d.path, d.format, d.virtual_size) for d in
            inventory.rbd_disks(xml, UUID, lambda dev: 7)] == [
        ('disk', f'vms/{UUID}_disk', 'rbd', 7)]
    elsewhere = domain_xml.disks_elsewhere(_domain(OWN_RBD), INST)
    assert chooser.why_upstream('rbd', elsewhere, [], True,
                                own_rbd=['vda']) is None
    assert chooser.why_upstream('rbd', elsewhere, [], True) == \
        f'images_type is rbd; vda is a network disk (rbd vms/{UUID}_disk)'
    # an RBD volume or another image stays a reason
    assert 'vdb is a network disk' in chooser.why_upstream(
        'rbd', domain_xml.disks_elsewhere(xml, INST), [], True,
                                own_rbd=['vda'])


def test_a_record_of_the_upstream_plan_is_only_novas_to_finish():
    assert chooser.check_known(chooser.UPSTREAM) == chooser.UPSTREAM
    with pytest.raises(exception.ResizeRefused, match='Nova confirms or '
                                                      'reverts it'):
        plans.builders(chooser.UPSTREAM)


def test_the_engine_never_offers_upstream():
    assert chooser.UPSTREAM not in chooser.ENGINE_PLANS


@pytest.mark.parametrize('disk,match', [
    (RBD, "vdx is a network disk \\(rbd vms/uuid_disk\\): resizedriver "
          "resizes only disks that are files in the instance directory"),
    (LVM, 'vdx is a block disk'),
])
def test_the_cli_refuses_disks_elsewhere_before_anything_is_touched(
        make_env, instance, instances, disk, match):
    # the instance's own disks, and one more that is not a file there
    instance.xml = instance.xml.replace(
        '</devices>', disk.replace("dev='vda'", "dev='vdx'") + '</devices>')
    _refused(make_env, instance, GROW, Destination(None, instances, True),
             match)

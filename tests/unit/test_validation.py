"""What migrate refuses before the guest is powered off, and what it must
accept (review #8 items 5-8): new sizes, destination paths, the host
files a definition keeps, and conversion onto another ``_base``."""

from __future__ import annotations

import logging
import os
import subprocess

import pytest

from resizedriver import chooser
from resizedriver import exception
from resizedriver.engine import ResizeEngine
from resizedriver.model import GiB, Destination, Flavor, MiB
from resizedriver.operations.finish import FinishMigration
from resizedriver.operations.migrate import MigrateDiskAndPowerOff
from resizedriver.orchestrator import Orchestrator
from resizedriver.plan import Plan
from resizedriver.transport import LocalTransport
from tests.unit.fakes import FakeGuest, FakeHost
from tests.unit.test_precopy import _all_qcow2
from tests.unit.test_untrusted import _without_cdrom as without_cdrom

GROW = Flavor(vcpus=2, memory_mib=512, root_bytes=16 * MiB,
              ephemeral_bytes=4 * MiB, swap_bytes=0)


def _migrate_op(make_env, instance, flavor, dest):
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, flavor,
                                dest, LocalTransport())
    return op, guest


def _refused(make_env, instance, flavor, dest, match):
    before = instance.hashes()
    op, guest = _migrate_op(make_env, instance, flavor, dest)
    with pytest.raises(exception.ResizeRefused, match=match):
        op.plan()
    assert guest.calls == [] and guest.running
    assert instance.hashes() == before
    assert not os.path.exists(instance.resize_dir)


# -- 6. new sizes --------------------------------------------------------

@pytest.mark.parametrize('change,match', [
    ({'root_bytes': 16 * MiB + 100}, 'multiple of 512'),
    ({'ephemeral_bytes': 8 * MiB + 1}, 'multiple of 512'),
    ({'swap_bytes': 4096}, 'swap'),
    ({'swap_bytes': 1 * MiB + 3}, 'multiple of 512'),
    ({'root_bytes': 3 * GiB}, 'larger than'),
])
def test_new_sizes_are_checked_before_power_off(make_env, conf, instance,
                                                instances, change, match):
    conf.set_override('max_virtual_size_gb', 2, group='resizedriver')
    flavor = Flavor(**dict(GROW.to_dict(), **change))
    _refused(make_env, instance, flavor, Destination(None, instances, True),
             match)


class FlavorRule(MigrateDiskAndPowerOff):
    """An integration deciding shrinks from a flavor on record of its own,
    as the Nova adapter does: here, a record by which nothing shrinks."""

    def check_no_shrink(self) -> None:
        """The record's flavor is no larger than the new one."""


def test_a_disk_larger_than_the_new_flavor_keeps_its_size(
        make_env, instance, instances, caplog, monkeypatch):
    """A root disk larger than the new flavor's root (a revert kept it
    grown): the operator command, which has only the disks, refuses;
    an integration whose flavors allow the resize gets it, the disk kept
    at its size (logged) and never shrunk."""
    monkeypatch.setattr('resizedriver.vif.plug', lambda vifs, uuid: None)
    smaller = Flavor(2, 512, root_bytes=4 * MiB, ephemeral_bytes=4 * MiB)
    here = Destination(None, instances, True)
    _refused(make_env, instance, smaller, here, 'cannot shrink disk')
    env = make_env(FakeGuest(instance.uuid, 'g', without_cdrom(instance.xml)))
    op = FlavorRule(env, instance.uuid, smaller, here, LocalTransport())
    with caplog.at_level(logging.INFO):
        op.plan().run()
    assert (f"disk is {8 * MiB} bytes, more than the new flavor's "
            f"{4 * MiB}: it keeps its size") in caplog.text
    finish = FinishMigration(env, op.record, power_on=False)
    assert 'extend disks' not in finish.plan().step_names
    finish.plan().run()
    assert env.qemu_img().info(instance.path('disk'),
                               'qcow2').virtual_size == 8 * MiB


# -- 7. destination paths ------------------------------------------------

@pytest.mark.parametrize('path', ['dest-instances', './x', '/srv/../x',
                                  '/srv/x/'])
def test_destination_path_must_be_absolute_and_normal(make_env, instance,
                                                      path):
    _refused(make_env, instance, GROW, Destination(None, path, True),
             'absolute')


def test_cli_destination_path_is_normalised(conf, instances):
    orch = Orchestrator(ResizeEngine(conf, host=FakeHost([])))
    assert orch.destination(None, instances + '/').instances_path == \
        instances
    with pytest.raises(exception.ResizeRefused, match='absolute'):
        orch.destination(None, 'relative/path')


def test_cli_alias_of_our_own_path_is_our_path(conf, instances, tmp_path):
    alias = tmp_path / 'alias'
    alias.symlink_to(instances)
    orch = Orchestrator(ResizeEngine(conf, host=FakeHost([])))
    assert orch.destination(None, str(alias)).instances_path == instances


def test_trailing_slash_alias_resizes_in_place(conf, instance, instances):
    """It used to be refused as "a leftover" (the instance's own dir)."""
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    dest = Orchestrator(engine).destination(None, instances + '/')
    rec = engine.migrate_disk_and_power_off(instance.uuid, GROW, dest)
    assert rec.shared_path is True


# -- 8. conversion onto another host's _base -----------------------------

def test_raw_conversion_at_another_path_reads_the_destination_base(
        make_env, conf, instance, instances, tmp_path, monkeypatch):
    """``use_cow_images=False`` at another path: the copied overlay names
    the *source's* ``_base``, which the destination host does not have;
    it must be rebased onto the destination's copy before converting."""
    conf.set_override('use_cow_images', False)
    monkeypatch.setattr('resizedriver.vif.plug', lambda vifs, uuid: None)
    expected = tmp_path / 'expected.raw'
    subprocess.run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw',
                    instance.path('disk'), str(expected)], check=True)
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    env = make_env(FakeGuest(instance.uuid, 'g', without_cdrom(instance.xml)))
    op = MigrateDiskAndPowerOff(env, instance.uuid, GROW,
                                Destination(None, str(dest_path), True),
                                LocalTransport())
    op.plan().run()
    source_base = os.path.join(instances, '_base')
    os.rename(source_base, source_base + '.elsewhere')   # "another host"
    try:
        finish = FinishMigration(env, op.record, power_on=False)
        assert 'rebase overlays' in finish.plan().step_names
        finish.plan().run()
    finally:
        os.rename(source_base + '.elsewhere', source_base)
    disk = dest_path / instance.uuid / 'disk'
    with open(disk, 'rb') as got, open(expected, 'rb') as want:
        data = want.read()
        assert got.read(len(data)) == data
    assert os.path.getsize(disk) == GROW.root_bytes


# -- undoing a failed step must not remove what it did not make ----------

class RacingMkdir(LocalTransport):
    """Another process creates the destination dir between validation
    and our mkdir, which then fails."""

    def execute(self, *argv, **kwargs):
        if argv[0] == 'mkdir':
            os.mkdir(argv[-1])
            with open(os.path.join(argv[-1], 'theirs'), 'w') as f:
                f.write('not ours')
        return super().execute(*argv, **kwargs)


def test_a_failed_mkdir_does_not_remove_the_dir_it_found(make_env, instance,
                                                         tmp_path):
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    before = instance.hashes()
    op = MigrateDiskAndPowerOff(make_env(guest), instance.uuid, GROW,
                                Destination(None, str(dest_path), True),
                                RacingMkdir())
    with pytest.raises(exception.ResizeFailed, match='create destination'):
        op.plan().run()
    assert (dest_path / instance.uuid / 'theirs').read_text() == 'not ours'
    assert instance.hashes() == before and guest.running
    # made before the power off, as nothing in it needs the guest off:
    # found there, the resize is refused with the guest still running
    # (and a round trip to the destination less while it is down)
    assert 'power_off' not in guest.call_names


class _Killed(BaseException):
    """nova-compute killed: nothing after it runs, the journal stays."""


def test_a_crash_in_the_undo_of_a_failed_mkdir_keeps_the_dir_it_found(
        conf, instance, tmp_path, monkeypatch):
    """The fact that the destination dir is not ours was only in memory:
    killed while the failed mkdir was being undone, recovery (which knows
    only the journal) removed the directory someone else had made."""
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    guest = FakeGuest(instance.uuid, 'g', instance.xml)
    engine = ResizeEngine(conf, host=FakeHost([guest]))
    op = MigrateDiskAndPowerOff(engine.env, instance.uuid, GROW,
                                Destination(None, str(dest_path), True),
                                RacingMkdir())

    def killed(self, done):
        raise _Killed()
    monkeypatch.setattr(Plan, '_undo', killed)
    with pytest.raises(_Killed):
        engine.run(op.plan(), op.journal_context())
    monkeypatch.undo()
    [result] = engine.recover(instance.uuid)
    assert result.error is None, result
    assert (dest_path / instance.uuid / 'theirs').read_text() == 'not ours'
    assert engine.journals.find(instance.uuid) == []


# -- 5. host files a definition keeps --------------------------------------

def _with_host_files(xml: str, uefi: bool = True) -> str:
    """The fixture's read-only ISO, a guest-agent socket, UEFI."""
    firmware = ("<loader readonly='yes' type='pflash'>"
                "/usr/share/OVMF/OVMF_CODE.fd</loader>"
                "<nvram template='/usr/share/OVMF/OVMF_VARS.fd'>"
                "/var/lib/libvirt/qemu/nvram/g_VARS.fd</nvram>") if uefi \
        else ''
    xml = xml.replace('<os>', f'<os>{firmware}', 1)
    return xml.replace('<devices>', """<devices>
    <channel type='unix'>
      <source mode='bind'
        path='/var/lib/libvirt/qemu/org.qemu.guest_agent.0.g.sock'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>""", 1)


def test_same_host_keeps_cdrom_guest_agent_and_firmware(
        make_env, instance, instances, tmp_path, monkeypatch):
    """#8.5: they were refused in finish, after power off and the copy."""
    monkeypatch.setattr('resizedriver.vif.plug', lambda vifs, uuid: None)
    xml = _with_host_files(instance.xml)
    guest = FakeGuest(instance.uuid, 'g', xml)
    env = make_env(guest)
    op = MigrateDiskAndPowerOff(env, instance.uuid, GROW,
                                Destination(None, instances, True),
                                LocalTransport())
    op.plan().run()
    FinishMigration(env, op.record, power_on=False).plan().run()
    defined = env.host.lookup(instance.uuid).xml()
    for kept in ('org.qemu.guest_agent.0.g.sock', 'OVMF_CODE.fd',
                 'nvram/g_VARS.fd', 'isos/install.iso'):
        assert kept in defined


def test_a_writable_host_file_is_refused_before_power_off(make_env, instance,
                                                          instances):
    instance.xml = instance.xml.replace(
        '<devices>', "<devices><serial type='file'>"
        "<source path='/var/log/guest.log'/></serial>", 1)
    _refused(make_env, instance, GROW, Destination(None, instances, True),
             'outside the instance directory .*/var/log/guest.log')


@pytest.mark.parametrize('uefi,match', [
    (True, 'UEFI variable store'),
    (False, 'does not exist on the destination')])
def test_another_host_must_have_the_kept_files(make_env, instance, tmp_path,
                                               uefi, match):
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    instance.xml = _with_host_files(instance.xml, uefi=uefi)
    if not uefi:             # not there on "the other host"
        os.unlink(tmp_path / 'isos' / 'install.iso')
    _refused(make_env, instance, GROW,
             Destination(None, str(dest_path), same_hypervisor=False), match)


def test_finish_refuses_a_foreign_read_only_cdrom_that_is_no_iso(
        make_env, instance, tmp_path):
    from resizedriver import hostfiles
    xml = instance.xml.replace(
        os.path.join(os.path.dirname(instance.instances), 'isos',
                     'install.iso'), '/etc/shadow')
    files = hostfiles.kept(xml, instance.dir)
    with pytest.raises(exception.UnsafePath, match='ISO 9660'):
        hostfiles.check_here(files)


# -- pre-copy leftovers --------------------------------------------------

@pytest.mark.parametrize('left', ['disk.top', 'disk.top.3',
                                  'disk.local.top.pivoted'])
def test_a_pre_copy_left_in_the_directory_is_refused_before_power_off(
        make_env, instance, instances, left):
    """Any plan would lose what a top holds (the copy plans copy the disk
    without it; a pre-copy would take it for one of its rounds'): the
    interrupted pre-copy is recovered first."""
    open(instance.path(left), 'w').close()
    _refused(make_env, instance, GROW, Destination(None, instances, True),
             f'{left}.*resizedriver recover')


# -- programs the destination runs -----------------------------------------

class ToolsAt(LocalTransport):
    """Another host (to migrate) whose ssh sessions lack ``lacking``,
    with room for anything; records what each round trip asked."""

    def __init__(self, *lacking: str) -> None:
        super().__init__()
        self.host = 'desthost'
        self.lacking = lacking
        self.asked: list[tuple[str, ...]] = []

    def missing(self, *programs: str) -> list[str]:
        self.asked.append(programs)
        return [p for p in programs if p in self.lacking]

    def free_bytes(self, path: str) -> int:
        return 1 << 40


def _to_another_host(make_env, instance, tmp_path, transport,
                     remote_half=True):
    dest_path = tmp_path / 'dest-instances'
    dest_path.mkdir()
    guest = FakeGuest(instance.uuid, 'g', without_cdrom(instance.xml))
    op = MigrateDiskAndPowerOff(
        make_env(guest), instance.uuid, GROW,
        Destination('desthost', str(dest_path), same_hypervisor=False),
        transport)
    op.dest_half_by_remote_command = remote_half
    return op, guest


@pytest.mark.parametrize('lacking', [
    '/opt/rd/bin/resizedriver',     # the CLI runs its finish there
    'qemu-img',                     # which runs qemu-img there
    'python3'])                     # the copies' receiver
def test_a_destination_lacking_a_program_is_refused_before_power_off(
        make_env, conf, instance, tmp_path, lacking):
    conf.set_override('remote_command', '/opt/rd/bin/resizedriver '
                      '--config-file /etc/rd.conf', group='resizedriver')
    before = instance.hashes()
    dest = ToolsAt(lacking)
    op, guest = _to_another_host(make_env, instance, tmp_path, dest)
    with pytest.raises(exception.ResizeRefused) as refused:
        op.plan()
    message = str(refused.value)
    assert 'desthost' in message and lacking in message, message
    assert '\n' not in message
    assert len(dest.asked) == 1         # one round trip asked for all
    assert guest.calls == [] and guest.running
    assert instance.hashes() == before


@pytest.mark.parametrize('lacking,plan', [((), chooser.PRECOPY),
                                          (('qemu-img',), chooser.COPY)])
def test_without_qemu_img_there_a_move_is_copied_not_pre_copied(
        make_env, instance, tmp_path, lacking, plan):
    """Where the destination's own service runs its half (Nova's
    compute), the copy plan runs no qemu-img there; a pre-copy does."""
    _all_qcow2(instance)
    dest = ToolsAt(*lacking)
    op, _ = _to_another_host(make_env, instance, tmp_path, dest,
                             remote_half=False)
    op.plan()
    assert op.choice.plan == plan, op.choice.reason
    if lacking:
        assert 'desthost has no qemu-img' in op.choice.reason
    assert len(dest.asked) == 1

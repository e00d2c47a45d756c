"""Live resize inside Nova 34: the compute manager's own resize calls,
the guest never stops.

The flavors grant headroom by extra specs (as an operator would), so the
spawned guest can grow; what the guest prints (its boot counter above
all) proves it ran on through migrate, finish, confirm and revert.
"""

from __future__ import annotations

import json
import os

import pytest
from nova.virt.libvirt import driver as libvirt_driver

from resizedriver import headroom
from tests.lib import guestlog
from tests.nova import novaenv
from tests.nova.test_nova_resize import (Crash, assert_no_resize_left,
                                         kill_after, resize, revert)

GiB = 1024 ** 3
KiB = 1024
ROOM = {headroom.SPEC_VCPUS: '4', headroom.SPEC_MEMORY: '1024'}


def roomy(flavorid: str, vcpus: int, memory_mb: int, root_gb: int):
    return novaenv.flavor(flavorid, vcpus, memory_mb, root_gb, ROOM)


def _report(server, what: str, done) -> guestlog.GuestReport:
    return guestlog.wait_for(os.path.join(server.dir, 'console.log'), what,
                             done)


def _plan(server) -> str:
    with open(os.path.join(server.dir + '_resize', 'resize.json')) as f:
        return json.load(f)['plan']


def test_live_resize_under_nova_then_confirm(make_server):
    server = make_server(roomy('11', 1, 256, 1))
    before = server.wait_boot(1)
    xml = server.driver._host.get_guest(server.instance).get_xml_desc()
    assert "model='virtio-mem'" in xml            # spawned with headroom

    mig = resize(server, roomy('12', 2, 512, 2))
    assert _plan(server) == 'live'
    assert server.instance.progress == 100
    after = _report(server, '2 CPUs, +256 MiB, a 2 GiB disk', lambda r: (
        r.cpu_count == 2 and r.mem_kb - before.mem_kb == 256 * KiB and
        r.disks == {'vda': 2 * GiB}))
    assert after.boot == 1                         # never stopped
    assert server.ping()
    # Nova's XML for the new flavor is the next boot's, with headroom
    nxt = headroom.of_domain(
        server.driver._host.get_guest(server.instance).get_xml_desc(
            dump_inactive=True))
    assert (nxt.vcpus, nxt.max_vcpus, nxt.memory_mib) == (2, 4, 512)

    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert server.driver.get_info(server.instance).state == 1
    assert guestlog.read(os.path.join(server.dir, 'console.log')).boot == 1


@pytest.mark.releases
def test_live_resize_under_nova_then_revert(make_server):
    server = make_server(roomy('13', 1, 256, 1))
    before = server.wait_boot(1)

    # memory only: the revert is live too (virtio-mem unplugs), and
    # Nova's destroy() in revert_resize leaves the guest running
    mig = resize(server, roomy('14', 1, 512, 1))
    assert _plan(server) == 'live'
    _report(server, '+256 MiB', lambda r: r.mem_kb - before.mem_kb ==
            256 * KiB)
    revert(server, mig)
    back = _report(server, 'its old memory', lambda r: r.mem_kb ==
                   before.mem_kb)
    assert (back.boot, back.cpu_count) == (1, 1)
    assert_no_resize_left(server)
    assert server.ping()

    # a vCPU more: this QEMU cannot unplug it, so the revert reboots once
    mig = resize(server, roomy('15', 2, 256, 1))
    _report(server, '2 CPUs', lambda r: r.cpu_count == 2)
    revert(server, mig)
    rebooted = server.wait_boot(2)
    assert (rebooted.cpu_count, rebooted.mem_kb) == (1, before.mem_kb)
    assert_no_resize_left(server)
    assert server.ping()
    # Nova's init_host calls it again for instances stuck mid-resize.
    server.driver.finish_revert_migration(server.ctx, server.instance,
                                          server.nw, mig, None, True)
    assert server.driver.get_info(server.instance).state == 1


def test_a_rebooting_live_revert_killed_mid_way_ends_running(make_server,
                                                            monkeypatch):
    """Issue 20 item 5: nova-compute dies in the revert of a live resize
    that reboots (a vCPU was added), right after the resized guest was
    shut down.  Nova has no start-up branch for RESIZE_REVERTING, so
    recovery at ``init_host`` must start the guest the revert took down:
    it follows what the revert journaled when it began, not the state
    (off) the crash left."""
    server = make_server(roomy('16', 1, 256, 1))
    server.wait_boot(1)
    drv, inst = server.driver, server.instance
    mig = resize(server, roomy('17', 2, 256, 1))
    _report(server, '2 CPUs', lambda r: r.cpu_count == 2)
    kill_after(monkeypatch, 'shut down resized guest')
    with pytest.raises(Crash):
        revert(server, mig)
    monkeypatch.undo()
    assert drv.get_info(inst).state != 1

    monkeypatch.setattr(libvirt_driver.LibvirtDriver, 'init_host',
                        lambda self, host: None)
    drv.init_host(host=novaenv.CONF.host)
    monkeypatch.undo()
    assert drv.engine.journals.find() == []
    assert_no_resize_left(server)
    back = server.wait_boot(2)
    assert back.cpu_count == 1
    assert drv.get_info(inst).state == 1
    assert server.ping()


def test_headroom_follows_flavor_image_and_what_pins_the_guest(driver):
    """Which instances get headroom, on real Nova objects (no guest)."""
    from resizedriver.nova import translate
    ctx = novaenv.admin_context()
    nw = novaenv.network_info('52:54:00:77:02:01')

    def room(flavor, **image_properties):
        inst = novaenv.instance(ctx, flavor, '169.254.77.250/24', nw,
                                **image_properties)
        return translate.headroom(inst, novaenv.CONF)

    assert room(roomy('21', 1, 256, 1)) == headroom.Headroom(4, 1024)
    # the user's image may lower it; a malformed value is ignored
    assert room(roomy('22', 1, 256, 1), resizedriver_max_vcpus='2') == \
        headroom.Headroom(2, 1024)
    assert room(roomy('23', 1, 256, 1),
                resizedriver_max_vcpus='many') == headroom.Headroom()
    # a topology the image fixes keeps its sockets: no vCPU headroom
    assert room(roomy('24', 1, 256, 1), hw_cpu_sockets='1') == \
        headroom.Headroom(0, 1024)
    # dedicated CPUs: Nova places them, none at all
    pinned = novaenv.flavor('25', 1, 256, 1,
                            dict(ROOM, **{'hw:cpu_policy': 'dedicated'}))
    assert room(pinned) == headroom.Headroom()


def test_a_flavor_that_changes_more_than_sizes_resizes_cold(make_server):
    server = make_server(roomy('26', 1, 256, 1))
    server.wait_boot(1)
    limited = novaenv.flavor('27', 1, 512, 1,
                             dict(ROOM, **{'quota:cpu_shares': '2048'}))
    mig = resize(server, limited)
    assert _plan(server) == 'overlay'          # Nova's XML needs a boot
    assert server.wait_boot(2).mem_kb > 0
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)


def test_a_disk_a_revert_left_grown_is_no_reason_to_refuse(make_server):
    """Nova refuses a resize only when the new flavor's disk is below the
    instance flavor's ("Unable to resize disk down"): a root disk larger
    than both (a live resize grew it, its revert kept it) is kept at its
    size, never shrunk and never a reason to refuse."""
    server = make_server(roomy('31', 1, 256, 1))
    server.wait_boot(1)
    mig = resize(server, roomy('32', 1, 256, 2))       # root only, live
    assert _plan(server) == 'live'
    _report(server, 'a 2 GiB disk', lambda r: r.disks == {'vda': 2 * GiB})
    revert(server, mig)
    assert server.instance.flavor.root_gb == 1        # Nova's record
    assert _report(server, 'its old flavor', lambda r: r.disks ==
                   {'vda': 2 * GiB}).boot == 1         # the disk kept 2 GiB

    # more CPU and memory, the flavor's original 1 GiB root; a new extra
    # spec makes it cold (the overlay plan, then Nova's own images)
    mig = resize(server, novaenv.flavor('33', 2, 512, 1, dict(
        ROOM, **{'quota:cpu_shares': '2048'})))
    assert _plan(server) == 'overlay'
    after = server.wait_boot(2)
    assert (after.cpu_count, after.disks) == (2, {'vda': 2 * GiB})
    server.driver.confirm_migration(server.ctx, mig, server.instance,
                                    server.nw)
    assert_no_resize_left(server)
    assert server.ping()

"""One compute node's half of a Nova call, in a process of its own.

``python -m tests.nova.compute_node ROOT NODE [OPTIONS]`` plays
nova-compute on host ``NODE`` (``a``: this machine; ``b``: run inside host
B's namespaces by ``tools/host-b run``): it loads the driver from the
nova.conf line (``OPTIONS``, JSON: ``compute_driver``, default ours,
``name_prefix`` of its domains, and ``resizedriver``, ``libvirt`` and
``DEFAULT``, those groups' options) and runs ``init_host``, as a service
start would, and only then reads one manager step's request from stdin
(JSON, ``call`` and its arguments; a caller may start the process ahead,
as the service is up before the RPC arrives) and answers on stdout (JSON,
with the call's own ``seconds``; asked for ``steps``, the benchmark's
``phases.Call`` of the driver call's plan steps), and the next, one a
line, until stdin ends.  Both nodes share one cell database under
``ROOT`` (as compute nodes share their cell's), have their own state and
lock paths, and the same instances path, each on its own filesystem.
The disk info string travels from A's ``resize_instance`` to B's
``finish_resize`` as the RPC carries it; a request's ``dest`` ``a``
resizes on A instead (same host).  A request's ``kill_after``
(``[operation, step]``) has the process SIGKILL itself right after that
step of that plan ran, before its journal says done: nova-compute
killed, for the next process's ``init_host`` to recover; an answer
(the plan ran to its end without that step) says in ``ran`` which
steps of it ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import time
import traceback
from typing import Any, Callable, Iterator, Optional
from unittest import mock

from tests.lib import parallel
from tests.nova import novaenv

#: instances path of both nodes (tools/host-b gives B its own filesystem
#: there)
INSTANCES = '/var/lib/nova/instances'
NODES = {'a': ('rdtest-compute-a', '169.254.79.1'),
         'b': ('rdtest-compute-b', '169.254.79.2')}


def _configure(root: str, node: str, options: dict[str, Any]) -> Any:
    host, ip = NODES[node]
    # domain names: a caller beside the cross-host tests gives its own
    novaenv.configure(root, instances_path=INSTANCES, host=host, my_ip=ip,
                      node=node, name_prefix=options.get(
                          'name_prefix', f'rdtest-{parallel.run()}xh'))
    novaenv.CONF.set_override('compute_driver', options.get(
        'compute_driver', novaenv.COMPUTE_DRIVER))
    for name, value in options.get('DEFAULT', {}).items():
        novaenv.CONF.set_override(name, value)
    drv = novaenv.load_driver()
    for group in ('resizedriver', 'libvirt'):
        for name, value in options.get(group, {}).items():
            novaenv.CONF.set_override(name, value, group)
    drv.init_host(host=host)
    return drv


def _instance(ctx, uuid: str):
    from nova import objects
    return objects.Instance.get_by_uuid(
        ctx, uuid, expected_attrs=['flavor', 'info_cache',
                                   'system_metadata', 'metadata'])


def _swap_bdm_follows_flavor(ctx, inst, confirm: bool) -> dict:
    """The manager's finish_resize (``confirm``) and finish_revert_resize:
    the swap mapping takes the flavor's size; the block device info
    after."""
    from nova.compute import manager
    manager.ComputeManager._update_bdm_for_swap_to_finish_resize(
        None, ctx, inst, confirm=confirm)
    return novaenv.block_device_info(inst)


def _upstream_forced(forced: bool) -> Any:
    """With ``forced``, the resize takes Nova's own path whatever our
    chooser would pick (the test hook of ``upstream.reason``), so that
    upstream stays proven where a plan of ours now takes the case."""
    from resizedriver.nova import upstream
    if not forced:
        return contextlib.nullcontext()
    return mock.patch.object(upstream, 'reason',
                             lambda *a, **kw: 'forced by a test')


@contextlib.contextmanager
def steps_of(operation: str, after: Callable[[str, list[str]], None]
             ) -> Iterator[list[str]]:
    """While open, each step of ``operation`` that runs is named in the
    list it yields, and ``after(step, ran)`` runs right after that step,
    before its journal says done: where a test kills nova-compute."""
    from resizedriver import journal
    ran: list[str] = []
    real_done = journal.Journal.done

    def done(journal_: Any, name: str) -> None:
        if journal_.operation == operation:
            ran.append(name)
            after(name, ran)
        real_done(journal_, name)
    with mock.patch.object(journal.Journal, 'done', done):
        yield ran


def run(drv, req: dict[str, Any]) -> dict[str, Any]:
    """``_run`` of ``req``; with ``kill_after``, this process SIGKILLs
    itself right after that step, and an answer (it never ran) names in
    ``ran`` the steps that did."""
    if 'kill_after' not in req:
        return _run(drv, req)
    operation, step = req['kill_after']

    def sigkill_after(name: str, ran: list[str]) -> None:
        if name == step:
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    with steps_of(operation, sigkill_after) as ran:
        answer = _run(drv, req)
    return dict(answer, ran=ran)


def _run(drv, req: dict[str, Any]) -> dict[str, Any]:
    from nova import objects
    from nova.compute import manager, task_states
    ctx = novaenv.admin_context()
    call = req['call']
    cmdline = req.get('cmdline', '')
    if call == 'seed':
        # what Glance would give this node's image cache
        novaenv.seed_images(INSTANCES)
        return {}
    if call == 'spawn':
        novaenv.seed_images(INSTANCES)
        flv = novaenv.flavor(*req['flavor'])
        nw = novaenv.network_info(req['mac'])
        inst = novaenv.instance(ctx, flv, req['ip'], nw, cmdline)
        if req.get('local_bdms'):
            novaenv.create_local_bdms(ctx, drv, inst)
        drv.spawn(ctx, inst, novaenv.image_meta(req['ip'], cmdline), [],
                  None, {}, network_info=nw,
                  block_device_info=novaenv.block_device_info(inst))
        novaenv.wire_taps(nw)
        return {'uuid': inst.uuid}
    if call == 'ephemeral_base':
        # what spawning an instance with that ephemeral size here would
        # leave in this node's image cache: Nova's own mkfs output
        from nova.virt.libvirt.driver import LibvirtDriver
        LibvirtDriver._create_ephemeral(
            os.path.join(INSTANCES, '_base', req['name']), req['gb'],
            'ephemeral0', None)
        return {}
    inst = _instance(ctx, req['uuid'])
    nw = inst.get_network_info()
    bdi = novaenv.block_device_info(inst)   # the manager's, from the DB
    if call in ('power_off', 'power_on'):
        if call == 'power_off':
            drv.power_off(inst, 60, 2)
        else:
            drv.power_on(ctx, inst, nw)
            novaenv.wire_taps(nw)
        return {}
    if call == 'reboot':
        # the operator's ``reset-state --active`` then ``reboot --hard``,
        # Nova's advice for an instance a failed revert left
        inst.task_state, inst.vm_state = None, 'active'
        inst.save()
        drv.reboot(ctx, inst, nw, 'HARD', bdi)
        novaenv.wire_taps(nw)
        return {}
    if call == 'resize_instance':
        new = novaenv.flavor(*req['flavor'])
        dest = NODES[req.get('dest', 'b')]
        mig = objects.Migration(
            context=ctx, instance_uuid=inst.uuid,
            source_compute=NODES['a'][0], dest_compute=dest[0],
            dest_host=dest[1], migration_type='resize',
            status='migrating', old_instance_type_id=inst.flavor.id,
            new_instance_type_id=new.id)
        mig.create()
        inst.old_flavor, inst.new_flavor = inst.flavor, new
        inst.save()
        called = time.monotonic()
        with _upstream_forced(req.get('upstream', False)):
            disk_info = drv.migrate_disk_and_power_off(
                ctx, inst, mig.dest_host, new, nw, bdi, 60, 2)
        called_end = time.monotonic()
        manager.ComputeManager._set_instance_info(inst, new)
        inst.host = dest[0]
        inst.save()
        return {'disk_info': disk_info, 'migration': mig.id,
                'called': (called, called_end)}
    mig = (objects.Migration.get_by_id(ctx, req['migration'])
           if 'migration' in req else None)
    if call == 'finish_resize':
        # Nova on B fetches the kernel and ramdisk from Glance into its
        # image cache; there is no Glance here, so they are put there as
        # it would.  The root disk's backing file is the resize's to copy.
        novaenv.seed_images(INSTANCES, (novaenv.KERNEL_ID,
                                        novaenv.RAMDISK_ID))
        bdi = _swap_bdm_follows_flavor(ctx, inst, confirm=True)
        image_meta = novaenv.image_meta(req['ip'], cmdline)
        inst.task_state = task_states.RESIZE_FINISH     # as the manager
        inst.save()
        called = time.monotonic()
        drv.finish_migration(ctx, mig, inst, req['disk_info'], nw,
                             image_meta, True, {}, bdi, True)
        called_end = time.monotonic()
        inst.task_state = None
        inst.save()
        novaenv.wire_taps(nw)
        return {'called': (called, called_end)}
    elif call == 'confirm_resize':
        drv.confirm_migration(ctx, mig, inst, nw)
    elif call == 'revert_resize':
        inst.task_state = task_states.RESIZE_REVERTING
        inst.save()
        # The manager's destroy_disks = not shared: the destination's
        # disk files go; RBD images are shared (the caller says False).
        drv.destroy(ctx, inst, nw, bdi,
                    destroy_disks=req.get('destroy_disks', True))
        novaenv.remove_taps(nw)
    elif call == 'finish_revert_resize':
        bdi = _swap_bdm_follows_flavor(ctx, inst, confirm=False)
        manager.ComputeManager._set_instance_info(inst, inst.old_flavor)
        inst.host = NODES['a'][0]
        inst.save()
        drv.finish_revert_migration(ctx, inst, nw, mig, bdi, True)
        inst.task_state = None
        inst.save()
        novaenv.wire_taps(nw)
    elif call == 'destroy':
        drv.destroy(ctx, inst, nw, bdi, destroy_disks=True)
    else:
        raise SystemExit(f'unknown call {call!r}')
    return {}


def _step_log() -> Any:
    """The benchmark's record of the plan's steps (``steps`` in the
    request): their start times, with the call's."""
    from benchmarks import phases
    return phases.StepLog().install()


def _start_privsep() -> None:
    """Nova's privsep daemon, as a running nova-compute has had it since
    its first privileged call; started at this process's first one, it
    would add its start (0.4 s here) to the driver call timed."""
    import nova.privsep
    nova.privsep.sys_admin_pctxt.start()


def main(serve: Callable[[Any, dict[str, Any]], dict[str, Any]] = run,
         argv: Optional[list[str]] = None) -> None:
    """Answer each request (a line) with ``serve`` (``run``, or one that
    watches it: ``tests.nova.probed_node``), one line each, until the
    end of input: one call, or a caller's whole session with this node,
    as one nova-compute serves them all."""
    root, node, *rest = argv or sys.argv[1:]
    options = json.loads(rest[0]) if rest else {}
    # the answers alone on stdout: the rest (our children too) on stderr
    answers = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    # Nova's connection-event thread never ends (see conftest): leave by
    # os._exit, after saying what happened.
    try:
        drv = _configure(root, node, options)
        try:
            steps = None
            for line in sys.stdin:
                req = json.loads(line)
                if req.get('steps') and steps is None:
                    steps = _step_log()
                    _start_privsep()
                started = time.monotonic()
                answer = serve(drv, req)
                answer['seconds'] = time.monotonic() - started
                if req.get('steps') and steps is not None:
                    # of the driver's call
                    answer['steps'] = dataclasses.asdict(steps.call(
                        *answer.get('called',
                                    (started, time.monotonic()))))
                answers.write(json.dumps(answer) + '\n')
                answers.flush()
        finally:
            drv.cleanup_host(host=NODES[node][0])
    except BaseException:
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    os._exit(0)


if __name__ == '__main__':
    main()

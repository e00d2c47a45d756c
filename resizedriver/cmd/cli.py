"""``resizedriver``: resize plain libvirt domains laid out like Nova's.

    resizedriver resize DOMAIN [--vcpus N] [--memory MIB] [--root-size SIZE]
                        [--ephemeral-size SIZE] [--swap-size SIZE]
                        [--dest-host HOST] [--dest-instances-path PATH]
    resizedriver confirm DOMAIN
    resizedriver revert DOMAIN
    resizedriver status [--json]
    resizedriver recover [DOMAIN]

``finish`` and ``drop-guest`` are the destination's halves, run over ssh by
the source's ``resize`` / ``revert``.  Errors are one line on stderr and a
non-zero exit, never a traceback (unless --debug).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging as std_logging
import os
import re
import sys
import threading
from typing import Any, Optional, Sequence

import libvirt
from oslo_config import cfg
from oslo_log import log as logging

from resizedriver import chooser
from resizedriver import conf as rd_conf
from resizedriver import exception
from resizedriver import inventory
from resizedriver import layout
from resizedriver import summary
from resizedriver.engine import ResizeEngine
from resizedriver.guest import Guest
from resizedriver.journal import Journal
from resizedriver.model import Flavor, MiB
from resizedriver.orchestrator import Orchestrator
from resizedriver.record import ResizeRecord

LOG = logging.getLogger(__name__)
_UNITS = {'': 1, 'b': 1, 'k': 1024, 'm': MiB, 'g': 1024 * MiB,
          't': 1024 ** 2 * MiB}


def parse_size(text: str) -> int:
    """'128M', '1G', '1GiB', '4096' (bytes) -> bytes."""
    m = re.fullmatch(r'\s*(\d+)\s*([kmgtb]?)(?:i?b)?\s*', text.lower())
    if not m:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a size (examples: 128M, 2G, 1048576)')
    return int(m.group(1)) * _UNITS[m.group(2)]


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f'{text!r} is not a positive number')
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog='resizedriver',
        description='Resize and cold-migrate libvirt guests laid out like '
                    'Nova instances.')
    p.add_argument('--config-file', action='append', default=[],
                   help='oslo.config file (repeatable), e.g. nova.conf')
    p.add_argument('--debug', action='store_true',
                   help='debug logging and tracebacks on errors')
    p.add_argument('--verbose', '-v', action='store_true',
                   help='log each step (by default only the result, the '
                        'progress, warnings and errors are shown)')
    sub = p.add_subparsers(dest='command', required=True)

    r = sub.add_parser('resize', help='resize and/or move a guest')
    r.add_argument('domain', help='domain name or UUID')
    r.add_argument('--vcpus', type=positive_int)
    r.add_argument('--memory', type=positive_int, metavar='MIB',
                   help='memory in MiB')
    r.add_argument('--root-size', type=parse_size, metavar='SIZE')
    r.add_argument('--ephemeral-size', type=parse_size, metavar='SIZE')
    r.add_argument('--swap-size', type=parse_size, metavar='SIZE',
                   help='0 removes swap')
    r.add_argument('--dest-host',
                   help='move to this host (ssh); default: this host')
    r.add_argument('--dest-instances-path',
                   help='instances path on the destination; default: ours')
    r.add_argument('--no-start', action='store_true',
                   help='leave the resized guest shut off')
    r.add_argument('--live', choices=chooser.LIVE_MODES,
                   help='resize the running guest without stopping it: '
                        '"auto" when possible (else cold, saying why), '
                        '"always" or refuse before touching anything, '
                        '"never"; default: [resizedriver] live_resize '
                        '(auto)')

    for name, text in (('confirm', 'keep the resized guest, drop the old'),
                       ('revert', 'go back to the guest as it was')):
        c = sub.add_parser(name, help=text)
        c.add_argument('domain', help='domain name or UUID')
        if name == 'revert':
            c.add_argument('--no-start', action='store_true')

    st = sub.add_parser('status',
                        help='list the resizes pending on this host')
    st.add_argument('--json', action='store_true',
                    help='one JSON document, for monitoring scripts')
    rc = sub.add_parser(
        'recover', help='roll back or complete operations a crash '
                        'interrupted (all on this host, or one guest)')
    rc.add_argument('domain', nargs='?', help='domain name or UUID')

    f = sub.add_parser('finish', help=argparse.SUPPRESS)
    f.add_argument('--no-start', action='store_true')
    d = sub.add_parser('drop-guest', help=argparse.SUPPRESS)
    d.add_argument('uuid')
    return p


def _setup(args: argparse.Namespace) -> None:
    rd_conf.register_opts(rd_conf.CONF)     # Nova's names too: no Nova here
    logging.register_options(rd_conf.CONF)
    rd_conf.CONF.set_default('use_stderr', True)
    argv = [a for f in args.config_file for a in ('--config-file', f)]
    if args.debug:
        argv.append('--debug')
    rd_conf.CONF(argv, project='resizedriver',
                 default_config_files=None if not args.config_file else [])
    logging.setup(rd_conf.CONF, 'resizedriver')
    if not (args.verbose or args.debug):
        std_logging.getLogger('resizedriver').setLevel(std_logging.WARNING)


class Console:
    """Copy progress for a person: a live line on a terminal (every file
    being copied, side by side with ``parallel_copies``), else one line
    per file when it is done (so logs stay readable)."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self._copying: dict[str, tuple[int, int]] = {}
        self._last = ''
        self._lock = threading.Lock()

    def progress(self, name: str, done: int, total: int) -> None:
        with self._lock:
            if done >= total:
                self._copying.pop(name, None)
                self._write('copying ' + _share(name, total, total), '\n')
            else:
                self._copying[name] = (done, total)
            if self.live and self._copying:
                self._write('copying ' + ', '.join(
                    _share(n, d, t) for n, (d, t) in self._copying.items()),
                    '\r')

    def _write(self, line: str, end: str) -> None:
        if self.live and self._last.endswith('\r'):
            self.stream.write('\x1b[2K')      # clear the live line first
        if line + end != self._last:
            self.stream.write(line + end)
            self.stream.flush()
            self._last = line + end


def _share(name: str, done: int, total: int) -> str:
    pct = 100 * done // total if total else 100
    return f'{name}: {pct:3d}% ({done / MiB:.1f}/{total / MiB:.1f} MiB)'


def _guest(engine: ResizeEngine, domain: str) -> Guest:
    guest = engine.env.host.lookup(domain)
    if guest is None:
        raise exception.NotFound(f'no libvirt domain named {domain!r}')
    return guest


def _uuid_of(engine: ResizeEngine, domain: str) -> str:
    return _guest(engine, domain).uuid


def _new_flavor(engine: ResizeEngine, uuid: str,
                args: argparse.Namespace) -> Flavor:
    """The current flavor with what the command line changes."""
    xml = _guest(engine, uuid).xml()
    inst = layout.InstanceLayout(engine.conf.instances_path, uuid)
    current = inventory.current_flavor(
        xml, inventory.discover(xml, inst, engine.env.qemu_img()))
    changes = {k: v for k, v in (
        ('vcpus', args.vcpus), ('memory_mib', args.memory),
        ('root_bytes', args.root_size),
        ('ephemeral_bytes', args.ephemeral_size),
        ('swap_bytes', args.swap_size)) if v is not None}
    return dataclasses.replace(current, **changes)


def _uuid_for_recovery(engine: ResizeEngine, domain: str) -> str:
    """A UUID as is (its domain may be gone mid-operation), else a name."""
    try:
        return layout.check_uuid(domain)
    except exception.ResizeRefused:
        return _uuid_of(engine, domain)


def _status_document(pending: list[ResizeRecord],
                     interrupted: list[Journal]) -> dict[str, Any]:
    """``status --json``: each pending resize's summary fields (as the
    summary line has them; ``downtime_s`` and ``duration_s`` null until
    the finish on this host has them) and each interrupted operation."""
    return {
        'pending': [dict(summary.fields(rec.uuid, rec.plan,
                                        rec.topology.value, rec.summary),
                         name=rec.name,
                         destination=rec.destination.host or None,
                         still_read_after_confirm=os.path.exists(
                             os.path.join(rec.source.resize_dir,
                                          layout.IN_USE_MARKER)))
                    for rec in pending],
        'interrupted': [{'instance': j.uuid, 'operation': j.operation,
                         'interrupted_at': j.interrupted_at}
                        for j in interrupted]}


def _describe(rec: ResizeRecord) -> str:
    resize_dir = rec.source.resize_dir
    if os.path.exists(os.path.join(resize_dir, layout.IN_USE_MARKER)):
        return (f'{rec.uuid} {rec.name}: confirmed, but the running guest '
                f'still reads its disks through {resize_dir} (see '
                f'{layout.IN_USE_MARKER} there); "resizedriver recover '
                f'{rec.uuid}" folds them and deletes it')
    o, n = rec.old_flavor, rec.new_flavor
    where = rec.destination.host or 'this host'
    return (f'{rec.uuid} {rec.name}: vcpus {o.vcpus}->{n.vcpus}, memory '
            f'{o.memory_mib}->{n.memory_mib} MiB, root '
            f'{o.root_bytes // MiB}->{max(n.root_bytes, o.root_bytes) // MiB}'
            f' MiB, to {where}:{rec.destination.instances_path} '
            f'({rec.plan} plan); confirm or revert')


def run(args: argparse.Namespace, out=sys.stdout) -> None:
    console = Console()
    engine = ResizeEngine(progress=console.progress)
    orch = Orchestrator(engine)
    if args.command == 'resize':
        uuid = _uuid_of(engine, args.domain)
        flavor = _new_flavor(engine, uuid, args)
        dest = orch.destination(args.dest_host, args.dest_instances_path)
        rec = orch.resize(uuid, flavor, dest, power_on=not args.no_start,
                          live=args.live)
        print(f'resized: {_describe(rec)}', file=out)
    elif args.command == 'confirm':
        orch.confirm(_uuid_of(engine, args.domain))
        print(f'confirmed {args.domain}', file=out)
    elif args.command == 'revert':
        orch.revert(_uuid_of(engine, args.domain),
                    power_on=not args.no_start)
        print(f'reverted {args.domain}', file=out)
    elif args.command == 'status':
        pending = engine.pending()
        interrupted = engine.journals.find()
        if args.json:
            print(json.dumps(_status_document(pending, interrupted),
                             indent=1), file=out)
            return
        for rec in pending:
            print(_describe(rec), file=out)
        for j in interrupted:
            print(f'{j.uuid}: {j.operation} was interrupted at '
                  f'{j.interrupted_at!r}; run "resizedriver recover"',
                  file=out)
        if not pending and not interrupted:
            print('no resize pending', file=out)
    elif args.command == 'recover':
        uuid = args.domain and _uuid_for_recovery(engine, args.domain)
        results = orch.recover(uuid)
        for result in results:
            print(result, file=out)
        if not results:
            print('nothing to recover', file=out)
        failed = [r for r in results if r.error]
        if failed:
            raise exception.ResizeFailed(
                f'{len(failed)} operation(s) could not be recovered',
                step='recover', rolled_back=False)
    elif args.command == 'finish':
        record = ResizeRecord.from_json(sys.stdin.read())
        engine.finish_migration(record, power_on=not args.no_start)
    elif args.command == 'drop-guest':
        engine.drop_destination_guest(args.uuid)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _setup(args)
        run(args)
    except (exception.ResizeDriverError, cfg.Error, OSError,
            libvirt.libvirtError) as e:
        if args.debug:
            raise
        print(f'resizedriver: error: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('resizedriver: interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())

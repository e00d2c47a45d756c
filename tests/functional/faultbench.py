"""Breaking real resizes on purpose, and checking what is left.

A ``Bench`` drives the ``resizedriver`` command against one real guest
with faults injected from outside the code under test: the stand-ins in
``faultbin/`` (ssh, qemu-img), ``crashcli.py`` (SIGKILL at a step), a
guest that ignores ACPI, a full filesystem, a flavor libvirt rejects.
After each fault it runs ``resizedriver recover`` when the fault was a
crash, then checks the instance: running where it should be, with the
flavor the guest itself reports, the same bytes as before, nothing half
written anywhere, and then that the same resize goes through.

The guest moves between two instances paths, A and B: each successful
retry is confirmed, so the next fault starts from the other side.

"Same bytes": every file of the instance directory and its backing file
are compared by sha256, except the qcow2 root disk, compared by the
content the guest sees (qemu-img convert), minus sectors 0 and 1.  QEMU
rewrites qcow2 metadata of an open image when it shuts it down, and the
guest writes its boot counter into sector 0 on every boot and its
shutdown mark into sector 1 at every clean shutdown; the counter is
checked instead: the first boot after recovery must print the count
before the resize plus one, which it can only read from the old disk.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from typing import Iterable, Optional

from tests.functional.conftest import HERE, MiB, Scenario, run_cli, sha256
from tests.lib import guestlog

FAULTBIN = os.path.join(HERE, 'faultbin')
KILLED = -9
#: the guest's own marks at the start of its disk (boot counter, shutdown
#: mark: tools/guest-init), left out of the content compared
GUEST_MARKS = 1024

#: a line of ``resizedriver recover``: operation, action, steps
_RECOVERED = re.compile(
    r'^\S+: (\S+) interrupted .*: (rolled back|completed) \((\d+) step',
    re.MULTILINE)

#: rows of the step x fault -> outcome table printed after the run
TABLE: list['Row'] = []


@dataclasses.dataclass
class Row:
    operation: str
    fault: str
    outcome: str
    source: str = ''
    retry: str = ''


@dataclasses.dataclass(frozen=True)
class Flavor:
    vcpus: int
    memory_mib: int
    root_mib: int

    def args(self) -> list[str]:
        return ['--vcpus', str(self.vcpus), '--memory', str(self.memory_mib),
                '--root-size', f'{self.root_mib}M']

    def next(self) -> 'Flavor':
        """Another flavor: CPUs and memory change, the root disk grows."""
        return Flavor(3 - self.vcpus, 576 - self.memory_mib,
                      self.root_mib + 8)


class Bench:
    def __init__(self, scenario: Scenario) -> None:
        self.s = scenario
        self.uuid = scenario.guest.uuid
        self.faults = os.path.join(scenario.root, 'faults')
        os.makedirs(self.faults)
        self.paths = {'A': scenario.instances, 'B': scenario.dest_instances}
        self.side = 'A'
        self.flavor = Flavor(1, 256, 64)
        self.boot = scenario.wait_boot(1).boot
        self.domain_id = self.current_domain_id()
        self.pending = False          # a retry left a resize to resolve
        #: side, flavor, fingerprint and boot count from before the
        #: pending resize: what a revert must bring back
        self.before_pending: tuple[str, Flavor, dict[str, str], int] = \
            ('A', self.flavor, {}, self.boot)

    # -- running the command -----------------------------------------------

    @property
    def here(self) -> str:
        return self.paths[self.side]

    @property
    def there(self) -> str:
        return self.paths['B' if self.side == 'A' else 'A']

    def conf(self, transport: str = 'ssh', shutdown_timeout: int = 60,
             side: Optional[str] = None, ssh_extra: tuple = ()) -> str:
        """The scenario's config with a side (by default where the guest
        is) as instances path, and more ssh options if asked."""
        side = side or self.side
        with open(self.s.conf_file) as f:
            text = f.read()
        if ssh_extra:
            text = re.sub(r'^(ssh_options = .*)$',
                          lambda m: m.group(1) + ',' + ','.join(ssh_extra),
                          text, flags=re.MULTILINE)
        text = text.replace(f'instances_path = {self.s.instances}\n',
                            f'instances_path = {self.paths[side]}\n')
        text = text.replace('remote_filesystem_transport = ssh',
                            f'remote_filesystem_transport = {transport}')
        text = text.replace('shutdown_timeout = 60',
                            f'shutdown_timeout = {shutdown_timeout}')
        name = '-'.join([side, transport, str(shutdown_timeout),
                         *ssh_extra]).replace('=', '')
        path = os.path.join(self.s.root, f'bench-{name}.conf')
        with open(path, 'w') as f:
            f.write(text)
        return path

    def cli(self, *args: str, crash_at: Optional[str] = None,
            expect_rc: Optional[int] = 0, **conf_kw) -> \
            subprocess.CompletedProcess:
        env = dict(os.environ, RD_FAULTS=self.faults,
                   PATH=FAULTBIN + os.pathsep + os.environ['PATH'])
        return run_cli(self.conf(**conf_kw), args, crash_at, expect_rc, env,
                       timeout=300)

    def resize_args(self, flavor: Optional[Flavor] = None,
                    same_path: bool = False, ssh: bool = False) -> list[str]:
        args = ['resize', self.uuid, *(flavor or self.flavor.next()).args(),
                '--dest-instances-path', self.here if same_path else
                self.there]
        return args + (['--dest-host', '127.0.0.1'] if ssh else [])

    def set_fault(self, name: str, value: str = '') -> None:
        with open(os.path.join(self.faults, name), 'w') as f:
            f.write(value)

    def fault_output(self, name: str) -> str:
        """What the stand-ins wrote to ``name`` ('' when nothing)."""
        path = os.path.join(self.faults, name)
        if not os.path.exists(path):
            return ''
        with open(path) as f:
            return f.read()

    def clear_faults(self) -> None:
        for name in os.listdir(self.faults):
            if name != 'events':
                os.unlink(os.path.join(self.faults, name))

    # -- what is there -----------------------------------------------------

    def fingerprint(self, inst: Optional[str] = None) -> dict[str, str]:
        """Digest of every file of the instance on this side (or in
        ``inst``; see the module docstring for the root disk) and of the
        backing files."""
        inst = inst or os.path.join(self.here, self.uuid)
        digests = {}
        for name in sorted(os.listdir(inst)):
            path = os.path.join(inst, name)
            if name == 'console.log' or not os.path.isfile(path):
                continue
            if name != 'resize.json':
                digests[name] = (_content_digest(path) if name == 'disk'
                                 else sha256(path))
        for path in sorted(glob.glob(os.path.join(self.here, '_base', '*'))):
            digests['_base/' + os.path.basename(path)] = sha256(path)
        return digests

    def leftovers(self) -> list[str]:
        """Anything a later resize could trip over, on either side."""
        found = leftovers(self.paths.values())
        other = os.path.join(self.there, self.uuid)
        if os.path.exists(other):
            found.append(other)
        return found

    def report(self) -> guestlog.GuestReport:
        return guestlog.read(self.s.guest.console_log(self.s.host))

    def guest_running(self) -> bool:
        guest = self.s.host.lookup(self.uuid)
        return guest is not None and guest.is_running()

    def current_domain_id(self) -> int:
        """libvirt gives a domain a new ID each time it starts."""
        return self.s.host.conn.lookupByUUIDString(self.uuid).ID()

    # -- checks ------------------------------------------------------------

    def expect_guest(self, flavor: Flavor) -> None:
        """Running here with ``flavor``, as the guest itself says.  If it
        was started since the last check, its boot counter is the one it
        had plus one: it was read from the disk it had."""
        assert self.guest_running(), 'the guest is not running'
        inst = os.path.join(self.here, self.uuid) + '/'
        assert all(p.startswith(inst) for p in self.s.disk_paths())
        domain_id = self.current_domain_id()
        boot = self.boot + (domain_id != self.domain_id)
        seen = self.s.wait_boot(boot)
        assert seen.cpu_count == flavor.vcpus, seen
        assert seen.disks['vda'] == flavor.root_mib * MiB, seen
        self.boot, self.domain_id = boot, domain_id

    def expect_settled(self) -> None:
        assert self.leftovers() == [], self.leftovers()
        assert self.cli('status').stdout.strip() == 'no resize pending'

    def expect_on_source(self, before: dict[str, str], row: Row) -> None:
        """After a failed or recovered resize: back as it was."""
        self.expect_guest(self.flavor)
        now = self.fingerprint()
        assert now == before, ('source bytes changed', {
            k: (before.get(k), now.get(k)) for k in set(before) | set(now)
            if before.get(k) != now.get(k)})
        row.source = 'unchanged'
        self.expect_settled()

    # -- the moves ---------------------------------------------------------

    @property
    def source_side(self) -> str:
        """Where the kept copy and the record of a pending resize are."""
        return self.before_pending[0]

    def resolve_pending(self) -> None:
        """Confirm what the last retry left, so a new fault starts clean."""
        if self.pending:
            self.cli('confirm', self.uuid, side=self.source_side)
            self.pending = False
            self.expect_settled()

    def retry(self, row: Optional[Row] = None, transport: str = 'ssh',
              **resize_kw) -> None:
        """The same resize again, unbroken: it must go through.  It stays
        pending (confirmed or reverted by the next cell)."""
        self.clear_faults()
        self.mark_before_resize()
        self.cli(*self.resize_args(**resize_kw), transport=transport)
        self.flavor = self.flavor.next()
        if not resize_kw.get('same_path'):
            self.side = 'B' if self.side == 'A' else 'A'
        self.expect_guest(self.flavor)
        self.pending = True
        if row:
            row.retry = 'ok'

    def mark_before_resize(self) -> None:
        self.before_pending = (self.side, self.flavor, self.fingerprint(),
                               self.boot)

    def reverted(self) -> dict[str, str]:
        """The pending resize was reverted: back to what it began from
        (the boot counter too: it is read from the kept disk)."""
        self.side, self.flavor, before, self.boot = self.before_pending
        self.pending = False
        return before

    def begin(self, operation: str, fault: str,
              pending: bool = False) -> tuple[Row, dict]:
        """A new row; the guest settled (or with a resize pending, for
        faults in confirm and revert); the fingerprint to compare with."""
        if pending and not self.pending:
            self.retry()
        elif not pending:
            self.resolve_pending()
        row = Row(operation, fault, '')
        TABLE.append(row)
        return row, self.fingerprint()

    def recover(self, row: Row, expect: str, **conf_kw) -> None:
        """``resizedriver recover``; the first operation it names must
        have been handled the ``expect`` way ('rolled back', 'completed')."""
        out = self.cli('recover', **conf_kw).stdout.strip()
        done = [m.groups() for m in _RECOVERED.finditer(out)]
        assert done and done[0][1] == expect, out
        row.outcome = 'killed; recover: ' + ', '.join(
            f'{op} {action} ({n} ' +
            ('undone)' if action == 'rolled back' else 'run again)')
            for op, action, n in done)


def leftovers(instances_paths: Iterable[str]) -> list[str]:
    """Partial copies, ``_resize`` and ``.staging`` dirs and journals
    under the paths."""
    found = []
    for root in instances_paths:
        for dirpath, dirnames, filenames in os.walk(root):
            for name in filenames:
                if (name.endswith(('.part', '.tmp')) or
                        (name.startswith('.') and len(name) > 8 and
                         name[-7] == '.')):       # rsync's .name.XXXXXX
                    found.append(os.path.join(dirpath, name))
            for name in dirnames:
                if name.endswith(('_resize', '.staging')):
                    found.append(os.path.join(dirpath, name))
        found += glob.glob(os.path.join(root, 'resize-journal', '*'))
    return found


def _content_digest(qcow2: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, 'content')
        subprocess.run(['qemu-img', 'convert', '-U', '-f', 'qcow2', '-O',
                        'raw', qcow2, raw], check=True)
        h = hashlib.sha256()
        with open(raw, 'rb') as f:
            f.seek(GUEST_MARKS)
            for block in iter(lambda: f.read(1 << 20), b''):
                h.update(block)
        return h.hexdigest()


def wait_until(predicate, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.2)


def mount_tmpfs(path: str, size_mib: int) -> None:
    os.makedirs(path, exist_ok=True)
    subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size_mib}m',
                    'tmpfs', path], check=True)


def umount(path: str) -> None:
    subprocess.run(['umount', '-l', path], check=False)
    shutil.rmtree(path, ignore_errors=True)


def format_table(rows: list[Row]) -> list[str]:
    head = Row('operation', 'fault', 'outcome', 'source bytes', 'retry')
    cols = [list(dataclasses.asdict(r).values()) for r in [head] + rows]
    widths = [max(len(c[i]) for c in cols) for i in range(5)]
    lines = ['  '.join(c[i].ljust(widths[i]) for i in range(5)).rstrip()
             for c in cols]
    lines.insert(1, '  '.join('-' * w for w in widths))
    return lines

"""Transports for real: local copies, and ssh/rsync copies through an ssh
stand-in that runs the remote command on this host (so the receiver, rsync
--server, sha256sum and friends are the real programs).

Every test that could hang on a broken transport runs the copy in a thread
with a deadline: a hang is a failure, not a stuck test run.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

from resizedriver import exception
from resizedriver import sparse
from resizedriver import transport
from resizedriver.sparse import partial_path
from resizedriver.transport import (Deadlines, LocalTransport,
                                    RsyncTransport, SshOptions,
                                    SshTransport)
from resizedriver.transport import ssh as ssh_transport
from tests.unit.conftest import sha256

MiB = 1024 * 1024
HANG = 30       # seconds after which a copy counts as hung
REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

FAKE_SSH = r'''#!/usr/bin/env python3
"""ssh stand-in: log argv, then run the remote command on this host."""
import json, os, subprocess, sys, time
args = sys.argv[1:]
with open(os.environ['FAKE_SSH_LOG'], 'a') as f:
    f.write(json.dumps(args) + '\n')
i = 0
while args[i].startswith('-') and args[i] != '--':
    i += 2                      # every option we give takes a value
if args[i] == '--':
    i += 1
host, i = args[i], i + 1
if args[i:i + 1] == ['--']:     # as ssh, which reads options after the host
    i += 1
if os.environ.get('FAKE_SSH_MAX_SESSIONS_1') and 'ControlMaster=no' in args:
    # ssh's words when sshd's MaxSessions refuses one more session on the
    # master's connection (the master's own command holds one)
    sys.stderr.write('mux_client_request_session: session request '
                     'failed: Session open refused by peer\n')
    sys.exit(255)
if os.environ.get('FAKE_SSH_CHATTY'):
    sys.stderr.write('e' * 200000)     # > a pipe buffer of stderr
    sys.stderr.flush()
time.sleep(float(os.environ.get('FAKE_SSH_SLEEP', '0')))
if not os.environ.get('FAKE_SSH_STALL'):
    os.execvp('sh', ['sh', '-c', ' '.join(args[i:])])
# pass on FAKE_SSH_STALL bytes of stdin, then go silent, still connected
remote = subprocess.Popen(['sh', '-c', ' '.join(args[i:])],
                          stdin=subprocess.PIPE, bufsize=0)
left = int(os.environ['FAKE_SSH_STALL'])
while left > 0:
    chunk = sys.stdin.buffer.read1(min(left, 65536))
    if not chunk:
        remote.stdin.close()
        sys.exit(remote.wait())
    remote.stdin.write(chunk)
    left -= len(chunk)
time.sleep(3600)
'''


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch) -> str:
    """Put the ssh stand-in first on PATH; returns its argv log."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    script = bindir / 'ssh'
    script.write_text(FAKE_SSH)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    log = str(tmp_path / 'ssh.log')
    monkeypatch.setenv('PATH', f'{bindir}:{os.environ["PATH"]}')
    monkeypatch.setenv('FAKE_SSH_LOG', log)
    return log


def ssh_argvs(log: str) -> list[list[str]]:
    with open(log) as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def src(tmp_path) -> str:
    """3 MiB of data (more than any pipe holds) with a hole after it."""
    path = str(tmp_path / 'src.raw')
    with open(path, 'wb') as f:
        f.write(os.urandom(3 * MiB))
        f.truncate(16 * MiB)
    return path


@pytest.fixture
def dest(tmp_path) -> str:
    path = tmp_path / 'dest'
    path.mkdir()
    return str(path)


KINDS = {'local': lambda: LocalTransport(),
         'ssh': lambda: SshTransport('desthost', SshOptions()),
         'rsync': lambda: RsyncTransport('desthost', SshOptions())}
REMOTE = ['ssh', 'rsync']


def make(kind: str, fake_ssh) -> transport.Transport:
    return KINDS[kind]()


def leftovers(directory: str) -> list[str]:
    """Partial files: ours, and rsync's .<name>.XXXXXX."""
    return sorted(n for n in os.listdir(directory)
                  if n.endswith(sparse.PARTIAL_SUFFIX) or n.startswith('.'))


def processes_mentioning(marker: str) -> list[str]:
    """Command lines of live (non-zombie) processes naming ``marker``."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmdline = f.read().replace(b'\0', b' ').decode(
                    errors='replace')
            with open(f'/proc/{pid}/stat') as f:
                state = f.read().rsplit(')', 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != 'Z' and int(pid) != os.getpid():
            found.append(cmdline)
    return found


def in_thread(fn) -> tuple[threading.Thread, list]:
    """Run ``fn`` in a thread; [result or exception] once it ends."""
    out: list = []

    def target():
        try:
            out.append(fn())
        except BaseException as e:      # noqa: B902 - reported to test
            out.append(e)
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG)
    assert not thread.is_alive(), 'the copy hung'
    return thread, out


def no_children_left(marker: str) -> None:
    """Killed children may take a moment to be gone from /proc."""
    for _ in range(50):
        if not processes_mentioning(marker):
            return
        time.sleep(0.1)
    assert processes_mentioning(marker) == []


# -- copies -------------------------------------------------------------


@pytest.mark.parametrize('kind', list(KINDS))
def test_copy_is_complete_sparse_and_leaves_nothing(kind, fake_ssh, src,
                                                    dest):
    dst = os.path.join(dest, 'disk')
    seen = []
    make(kind, fake_ssh).copy_file(
        src, dst, lambda done, total: seen.append((done, total)), owner='u1')
    assert sha256(dst) == sha256(src)
    assert os.stat(dst).st_blocks * 512 < 8 * MiB
    assert leftovers(dest) == []
    assert seen[-1] == (16 * MiB, 16 * MiB)


@pytest.fixture
def corrupt_copy(kind, fake_ssh, request, monkeypatch) -> None:
    """Make the destination's copy differ from the source: in transit
    for the sparse stream; on the disk rsync wrote, before we read it
    back, for rsync."""
    if kind != 'rsync':
        request.getfixturevalue('corrupting_wire')
        return
    real = RsyncTransport.sha256_from_disk

    def flip_then_read_back(self, path):
        with open(path, 'r+b') as f:
            f.write(b'X')
        return real(self, path)

    monkeypatch.setattr(RsyncTransport, 'sha256_from_disk',
                        flip_then_read_back)


@pytest.mark.parametrize('kind', list(KINDS))
def test_unverified_copy_never_gets_the_final_name(kind, fake_ssh, src,
                                                   dest, corrupt_copy):
    """A copy that reads back different fails, and the previous file
    under the final name (another instance's backing file) stays."""
    dst = os.path.join(dest, 'base')
    with open(dst, 'wb') as f:
        f.write(b'in use')
    with pytest.raises(exception.CommandFailed, match='differs'):
        make(kind, fake_ssh).copy_file(src, dst, owner='u1')
    with open(dst, 'rb') as f:
        assert f.read() == b'in use'
    assert leftovers(dest) == []


def _recording(cls, monkeypatch) -> list[list[str]]:
    """The argv of every command the transport class ``cls`` runs on its
    target from now on."""
    commands: list[list[str]] = []
    real_execute = cls.execute

    def recording(self, *argv, **kw):
        commands.append(list(argv))
        return real_execute(self, *argv, **kw)

    monkeypatch.setattr(cls, 'execute', recording)
    return commands


@pytest.mark.parametrize('kind', list(KINDS))
def test_copy_is_verified_then_published_durably(kind, fake_ssh, src, dest,
                                                 monkeypatch):
    """Verified first, then renamed and the directory fsynced, all before
    copy_file returns, the two in one round trip (each costs a session
    or a connection: pre-copy's last copies are made with the guest
    off).  The stream's receiver reads the copy back from the device
    itself (test_sparse); rsync's copy is read back after it: its cached
    pages dropped, then hashed."""
    commands = _recording(type(make(kind, fake_ssh)), monkeypatch)
    dst = os.path.join(dest, 'disk')
    make(kind, fake_ssh).copy_file(src, dst, owner='u1')
    part = partial_path(dst, 'u1')
    names = [c[0] for c in commands if c[0] != 'stat']
    if kind == 'rsync':
        assert names == ['dd', 'sha256sum', 'sh']
        assert commands[0][1:3] == [f'if={part}', 'iflag=nocache']
    else:
        assert names == ['sh']
    assert commands[-1][-3:] == [part, dst, dest]
    assert 'mv -T' in commands[-1][2] and '&& sync' in commands[-1][2]
    assert os.path.exists(dst) and not os.path.exists(part)


@pytest.mark.parametrize('kind', list(KINDS))
def test_a_copy_is_prepared_in_the_round_trip_that_publishes_it(
        kind, fake_ssh, src, dest, monkeypatch):
    """``prepare``'s command runs on the verified partial file in the
    command that renames it (pre-copy rewrites a top's header there: one
    round trip less with the guest off); if it fails, nothing gets the
    final name and the partial file goes."""
    commands = _recording(type(make(kind, fake_ssh)), monkeypatch)
    dst = os.path.join(dest, 'disk')
    part = partial_path(dst, 'u1')
    make(kind, fake_ssh).copy_file(
        src, dst, owner='u1',
        prepare=lambda p: ['sh', '-c', 'printf X >> "$1"', 'sh', p])
    names = [c[0] for c in commands if c[0] not in ('stat', 'dd',
                                                    'sha256sum')]
    assert names == ['sh'] and part in commands[-1]
    with open(src, 'rb') as f, open(dst, 'rb') as g:
        assert g.read() == f.read() + b'X'
    assert not os.path.exists(part)
    os.unlink(dst)
    with pytest.raises(exception.CommandFailed):
        make(kind, fake_ssh).copy_file(src, dst, owner='u1',
                                       prepare=lambda p: ['false', p])
    assert not os.path.exists(dst) and leftovers(dest) == []


# rsync reads the source itself (its own process), not through sparse.
@pytest.mark.parametrize('kind', [k for k in KINDS if k != 'rsync'])
def test_the_source_is_read_once(kind, fake_ssh, src, dest, monkeypatch):
    """The hash compared with the copy's is of the bytes that were sent:
    the source is opened once and each of its data bytes read once (the
    guest is down meanwhile)."""
    import builtins
    real_open, real_pread = builtins.open, os.pread
    opens, read = [], []

    def counting_open(file, *args, **kw):
        if file == src:
            opens.append(file)
        return real_open(file, *args, **kw)

    def counting_pread(fd, n, offset):
        data = real_pread(fd, n, offset)
        if os.readlink(f'/proc/self/fd/{fd}') == src:
            read.append(len(data))
        return data

    monkeypatch.setattr(builtins, 'open', counting_open)
    monkeypatch.setattr(os, 'pread', counting_pread)
    make(kind, fake_ssh).copy_file(src, os.path.join(dest, 'disk'),
                                   owner='u1')
    assert len(opens) == 1
    assert sum(read) == 3 * MiB         # its data; never its hole
    assert sha256(os.path.join(dest, 'disk')) == sha256(src)


def test_rsync_fsyncs_what_it_writes(fake_ssh, src, dest):
    RsyncTransport('desthost', SshOptions()).copy_file(
        src, os.path.join(dest, 'disk'), owner='u1')
    server = [a for a in ssh_argvs(fake_ssh) if 'rsync' in a]
    assert '--fsync' in server[0]


# -- partial files are per owner ------------------------------------------


@pytest.mark.parametrize('kind', list(KINDS))
def test_two_owners_never_share_a_partial_file(kind, fake_ssh, src, dest):
    """Two instances from one image copying the same _base file: each
    writes and removes only its own partial file."""
    dst = os.path.join(dest, 'base')
    theirs = [partial_path(dst, 'other')]
    if kind == 'rsync':
        theirs.append(os.path.join(dest, '.base.other.part.Ab12Cd'))
    for path in theirs:
        with open(path, 'wb') as f:
            f.write(b'half of their copy')
    t = make(kind, fake_ssh)
    t.copy_file(src, dst, owner='mine')
    t.remove_partial(dst, 'mine')
    assert sha256(dst) == sha256(src)
    for path in theirs:
        with open(path, 'rb') as f:
            assert f.read() == b'half of their copy'


def test_rsync_removes_its_own_temp_files(fake_ssh, dest):
    dst = os.path.join(dest, 'base')
    mine = os.path.join(dest, '.base.mine.part.Zz99Yy')
    with open(mine, 'wb') as f:
        f.write(b'x')
    with open(partial_path(dst, 'mine'), 'wb') as f:
        f.write(b'x')
    RsyncTransport('desthost', SshOptions()).remove_partial(dst, 'mine')
    assert leftovers(dest) == []


def test_partial_name_needs_a_plain_owner():
    with pytest.raises(ValueError):
        partial_path('/d/base', '../x')
    with pytest.raises(ValueError):
        partial_path('/d/base', '')


# -- every child is bounded and reaped -----------------------------------


@pytest.mark.parametrize('kind', list(KINDS))
def test_progress_callback_raising_ends_the_copy(kind, fake_ssh, src, dest,
                                                monkeypatch):
    """Nova's progress callback (instance.save()) can raise: the copy
    ends at once with that error, nothing keeps running or writing."""
    def progress(done, total):
        raise RuntimeError('instance.save() failed')

    monkeypatch.setenv('FAKE_SSH_STALL', str(MiB))   # still copying
    dst = os.path.join(dest, 'disk')
    _, out = in_thread(lambda: make(kind, fake_ssh).copy_file(
        src, dst, progress, owner='u1'))
    assert isinstance(out[0], RuntimeError), out
    no_children_left(dest)
    assert not os.path.exists(dst)
    assert leftovers(dest) == []


# rsync reads the source itself (its own process), not through sparse.
@pytest.mark.parametrize('kind', [k for k in KINDS if k != 'rsync'])
def test_read_error_on_the_source_ends_the_copy(kind, fake_ssh, src, dest,
                                                monkeypatch):
    """EIO reading the disk half-way: the error, promptly; the previous
    file under the final name untouched; nothing left running."""
    real_pread = os.pread
    reads = []

    def failing_pread(fd, n, offset):
        reads.append(offset)
        if len(reads) > 1:
            raise OSError(errno.EIO, 'Input/output error')
        return real_pread(fd, n, offset)

    monkeypatch.setattr(sparse.os, 'pread', failing_pread)
    dst = os.path.join(dest, 'disk')
    with open(dst, 'wb') as f:
        f.write(b'previous')
    _, out = in_thread(lambda: make(kind, fake_ssh).copy_file(
        src, dst, owner='u1'))
    assert isinstance(out[0], OSError) and out[0].errno == errno.EIO, out
    no_children_left(dest)
    with open(dst, 'rb') as f:
        assert f.read() == b'previous'
    assert leftovers(dest) == []


def test_chatty_remote_stderr_does_not_deadlock(fake_ssh, src, dest,
                                                monkeypatch):
    """More remote stderr than a pipe holds, before the remote reads its
    stdin: stderr must be read while we write."""
    monkeypatch.setenv('FAKE_SSH_CHATTY', '1')
    dst = os.path.join(dest, 'disk')
    _, out = in_thread(lambda: SshTransport(
        'desthost', SshOptions()).copy_file(src, dst, owner='u1'))
    assert out == [None]
    assert sha256(dst) == sha256(src)


@pytest.mark.parametrize('kind', REMOTE)
def test_copy_past_its_deadline_is_killed(kind, fake_ssh, src, dest,
                                          monkeypatch):
    monkeypatch.setenv('FAKE_SSH_SLEEP', '60')
    t = KINDS[kind]()
    t.deadlines = Deadlines(command=1, rate=1e12)
    started = time.monotonic()
    _, out = in_thread(lambda: t.copy_file(
        src, os.path.join(dest, 'disk'), owner='u1'))
    assert isinstance(out[0], exception.CommandFailed), out
    assert 'did not finish within 1 s' in str(out[0])
    assert time.monotonic() - started < 15
    no_children_left(dest)


def test_command_past_its_deadline_is_killed_with_its_children():
    seconds = f'60.{os.getpid():07d}'   # names our sleeps in /proc
    t = LocalTransport(Deadlines(command=1))
    started = time.monotonic()
    with pytest.raises(exception.CommandFailed, match='did not finish'):
        t.execute('sh', '-c', 'sleep "$1" & sleep "$1"', 'sh', seconds)
    assert time.monotonic() - started < 15
    no_children_left(seconds)


# -- what reaches ssh ------------------------------------------------------


@pytest.mark.parametrize('host', ['-oProxyCommand=touch /tmp/x', '-x',
                                  'a b', 'a\tb', 'a\nb', 'h\x7f', ''])
def test_a_host_ssh_could_misread_is_refused(conf, host):
    conf.set_override('remote_filesystem_transport', 'ssh', group='libvirt')
    with pytest.raises(transport.BadHost) as ei:
        transport.for_host(host, conf)
    assert isinstance(ei.value, exception.ResizeRefused)
    assert '\n' not in str(ei.value)


@pytest.mark.parametrize('kind', REMOTE)
def test_host_comes_after_the_end_of_options(kind):
    argv = KINDS[kind]()._command(['true'])
    assert argv[argv.index('--') + 1] == 'desthost'
    assert argv.index('--') < argv.index('desthost')


def test_rsync_keeps_ssh_arguments_whole(fake_ssh, src, dest, tmp_path):
    key = tmp_path / 'my keys' / 'id rsa'
    opts = SshOptions(user='nova', identity_file=str(key),
                      options=['UserKnownHostsFile=/a b/known'])
    RsyncTransport('desthost', opts).copy_file(
        src, os.path.join(dest, 'disk'), owner='u1')
    argv = [a for a in ssh_argvs(fake_ssh) if 'rsync' in ' '.join(a)][0]
    assert argv[argv.index('-i') + 1] == str(key)
    assert 'UserKnownHostsFile=/a b/known' in argv
    assert argv[argv.index('-l') + 1] == 'nova'
    assert argv[argv.index('--') + 1] == 'desthost'


def options_of(argv: list[str]) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == '-o']


def test_operator_ssh_options_keep_the_safe_defaults():
    opts = options_of(SshOptions(
        options=['StrictHostKeyChecking=accept-new']).argv())
    assert opts == list(ssh_transport.DEFAULT_OPTIONS) + [
        'StrictHostKeyChecking=accept-new']


def test_an_operator_option_replaces_only_its_own_default():
    opts = options_of(SshOptions(
        options=['connecttimeout=5', 'ServerAliveInterval 30']).argv())
    assert opts == ['BatchMode=yes', 'ServerAliveCountMax=4',
                    'connecttimeout=5', 'ServerAliveInterval 30']


@pytest.mark.parametrize('kind', KINDS)
def test_missing_programs_are_found_in_one_round_trip(fake_ssh, kind,
                                                      tmp_path):
    tool = tmp_path / 'bin' / 'rd tool'       # on PATH, a space in it
    tool.write_text('#!/bin/sh\n')
    tool.chmod(0o755)
    t = make(kind, fake_ssh)
    assert t.missing('sh', 'no-such-rd-program', 'rd tool', str(tool),
                     'python3', '/no/such/rd tool') == [
        'no-such-rd-program', '/no/such/rd tool']
    assert t.missing() == []
    if kind in REMOTE:
        assert len(ssh_argvs(fake_ssh)) == 2


@pytest.mark.parametrize('kind', REMOTE)
def test_ssh_s_own_config_picks_the_port_unless_one_is_configured(conf,
                                                                  kind):
    """kolla-ansible runs the compute hosts' sshd on 8022 and says so in
    the nova user's ~/.ssh/config: a "-p" would override it."""
    conf.set_override('remote_filesystem_transport', kind, group='libvirt')
    argv = transport.for_host('desthost', conf)._command(['true'])
    assert '-p' not in argv[:argv.index('--')]
    conf.set_override('ssh_port', 8022, group='resizedriver')
    argv = transport.for_host('desthost', conf)._command(['true'])
    assert argv[argv.index('-p') + 1] == '8022'


def test_configured_ssh_options_are_merged(conf):
    conf.set_override('ssh_options', ['IdentitiesOnly=yes'],
                      group='resizedriver')
    t = transport.for_host('desthost', conf)
    opts = options_of(t._command(['true']))
    assert opts == list(ssh_transport.DEFAULT_OPTIONS) + ['IdentitiesOnly=yes']


# -- qemu-img --------------------------------------------------------------


def test_every_qemu_img_command_is_limited(tmp_path):
    """Not only info: create/resize/rebase/convert run under prlimit with
    a deadline; convert's grows with the image it reads."""
    from resizedriver.qemuimg import QemuImg
    calls = []

    class Recording(LocalTransport):
        def execute(self, *argv, stdin=None, timeout=None):
            calls.append((argv, timeout))
            return str(64 * 1024 * MiB) if argv[0] == 'stat' else ''

    q = QemuImg(Recording(Deadlines(command=100, rate=MiB)), 1 << 40)
    q.create('/i/disk', 'qcow2', MiB)
    q.resize('/i/disk', 'qcow2', 2 * MiB)
    q.rebase_unsafe('/i/disk', '/b/base', 'raw')
    q.convert('/i/disk', '/i/disk.part', 'qcow2', 'raw')
    runs = [(argv, timeout) for argv, timeout in calls if argv[0] != 'stat']
    assert [argv[4] for argv, _ in runs] == ['create', 'resize', 'rebase',
                                             'convert']
    for argv, _ in runs:
        assert argv[0] == 'prlimit' and argv[2].startswith('--as=')
        assert argv[3] == 'qemu-img'
    assert [t for _, t in runs] == [100, 100, 100, 100 + 64 * 1024]


@pytest.mark.parametrize('stderr, says', [
    ('ssh: connect to host desthost port 22: Connection refused',
     'cannot reach desthost over ssh: ssh: connect to host desthost port '
     '22: Connection refused'),
    # OpenSSH ends with 255 and no word (at LogLevel=ERROR) when the
    # command on the other side is killed, or the connection drops, midway
    ('', "ssh to desthost ended (exit 255) with no message while running "
         "'resizedriver finish': the connection dropped or the command "
         "was killed there"),
])
def test_ssh_failing_says_whether_it_reached_the_host(stderr, says):
    from oslo_concurrency import processutils
    err = SshTransport('desthost', SshOptions())._error(
        processutils.ProcessExecutionError(exit_code=255, stderr=stderr),
        ('resizedriver', 'finish'))
    assert isinstance(err, exception.DestinationUnreachable)
    assert str(err) == says


# -- one connection per resize ----------------------------------------------


def control_of(argv: list[str]) -> dict[str, str]:
    """The ssh options of ``argv`` that say how it multiplexes."""
    return dict(o.split('=', 1) for o in options_of(argv)
                if o.startswith(('ControlPath=', 'ControlMaster=',
                                 'ControlPersist=')))


def master_and_clients(log: str) -> tuple[list[str], list[list[str]]]:
    """The one master's argv (started in the background: anywhere in
    the log) and every other."""
    argvs = ssh_argvs(log)
    [master] = [a for a in argvs
                if control_of(a).get('ControlMaster') == 'yes']
    return master, [a for a in argvs if a is not master]


@pytest.mark.parametrize('kind', REMOTE)
def test_a_session_sends_every_command_and_copy_over_one_master(
        kind, fake_ssh, src, dest):
    """Each ssh round trip costs a connection (0.4-0.7 s to host B here,
    pre-copy's last copy made five with the guest off): inside a session
    every command and copy names the session's master socket, and never
    becomes a master itself; the master goes with the session."""
    t = make(kind, fake_ssh)
    with t.session():
        t.execute('true')
        t.copy_file(src, os.path.join(dest, 'disk'), owner='u1')
        path = control_of(ssh_argvs(fake_ssh)[0])['ControlPath']
        # nobody else may connect through it
        assert os.stat(os.path.dirname(path)).st_mode & 0o077 == 0
    master, clients = master_and_clients(fake_ssh)
    assert control_of(master) == {'ControlPath': path,
                                  'ControlMaster': 'yes',
                                  'ControlPersist': 'no'}
    assert clients and all(control_of(c) == {'ControlPath': path,
                                             'ControlMaster': 'no'}
                           for c in clients), clients
    no_children_left(path)
    assert not os.path.exists(os.path.dirname(path))
    t.execute('true')                  # after it: a connection of its own
    assert control_of(ssh_argvs(fake_ssh)[-1]) == {}


def test_a_session_s_master_dies_with_its_caller(fake_ssh, tmp_path):
    """A resizedriver process killed mid-resize (SIGKILL: no finally)
    leaves no master connection behind: the master's remote command
    reads our end of a pipe, and ends when it closes."""
    code = ('import os, signal\n'
            'from resizedriver.transport import SshOptions, SshTransport\n'
            't = SshTransport("desthost", SshOptions())\n'
            'with t.session():\n'
            '    t.execute("true")\n'
            '    while "ControlMaster=yes" not in open(\n'
            '            os.environ["FAKE_SSH_LOG"]).read():\n'
            '        pass      # the master started\n'
            '    os.kill(os.getpid(), signal.SIGKILL)\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    path = control_of(master_and_clients(fake_ssh)[0])['ControlPath']
    no_children_left(path)
    shutil.rmtree(os.path.dirname(path))     # what the kill left


@pytest.mark.parametrize('kind', REMOTE)
def test_a_session_sshd_refuses_goes_over_connections_of_its_own(
        kind, fake_ssh, src, dest, monkeypatch):
    """sshd's MaxSessions (10 by default) may allow fewer sessions on
    one connection than a migrate opens at once (its master's, parallel
    copies): what ssh refuses goes over a connection of its own, as
    without a session."""
    monkeypatch.setenv('FAKE_SSH_MAX_SESSIONS_1', '1')
    t = make(kind, fake_ssh)
    dst = os.path.join(dest, 'disk')
    with t.session():
        assert t.execute('echo', 'x') == 'x\n'
        t.copy_file(src, dst, owner='u1')
    assert sha256(dst) == sha256(src) and leftovers(dest) == []
    _, clients = master_and_clients(fake_ssh)
    muxed = [c for c in clients if control_of(c)]
    direct = [c for c in clients if not control_of(c)]
    assert len(muxed) >= 2 and len(direct) >= 2, clients


def test_an_operator_s_own_multiplexing_is_left_alone(fake_ssh):
    opts = SshOptions(options=['ControlMaster=auto',
                               'ControlPath=/run/x/%C'])
    t = SshTransport('desthost', opts)
    with t.session():
        t.execute('true')
    [argv] = ssh_argvs(fake_ssh)
    assert control_of(argv) == {'ControlMaster': 'auto',
                                'ControlPath': '/run/x/%C'}


def test_a_local_session_runs_nothing(tmp_path):
    with LocalTransport().session():
        assert LocalTransport().execute('echo', 'x') == 'x\n'

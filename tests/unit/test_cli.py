from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import types

import pytest

from resizedriver import conf as rd_conf
from resizedriver import exception
from resizedriver.cmd import cli
from resizedriver.host import Host
from resizedriver.journal import JournalStore
from resizedriver.layout import IN_USE_MARKER, RECORD_NAME
from resizedriver.nova.progress import InstanceProgress
from tests.unit.test_record import UUID, make_record

MiB = 1024 * 1024


@pytest.mark.parametrize('text,value', [
    ('4096', 4096), ('0', 0), ('1b', 1), ('128M', 128 * MiB),
    ('128m', 128 * MiB), ('1G', 1024 * MiB), ('1GiB', 1024 * MiB),
    ('2gb', 2048 * MiB), ('10 MiB', 10 * MiB), (' 3k ', 3072),
    ('1T', 1024 * 1024 * MiB), ('512KiB', 512 * 1024)])
def test_parse_size_accepts(text, value):
    assert cli.parse_size(text) == value


@pytest.mark.parametrize('text', [
    '', 'G', 'abc', '-1', '1.5G', '1X', '1P', '1 G B', '0x10', '1e3',
    '1GiBs', '10MM'])
def test_parse_size_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_size(text)


@pytest.mark.parametrize('text', ['0', '-2', 'x', '1.5', ''])
def test_positive_int_refuses(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive_int(text)


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A config file pointing at tmp instances; the global CONF and the
    logging set-up main() does are undone afterwards."""
    instances = tmp_path / 'instances'
    instances.mkdir()
    ini = tmp_path / 'resizedriver.conf'
    ini.write_text(f'[DEFAULT]\ninstances_path = {instances}\n'
                   f'[libvirt]\nconnection_uri = test:///nonexistent\n')
    out = io.StringIO()
    real_run = cli.run
    monkeypatch.setattr(cli, 'run', lambda args: real_run(args, out=out))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield instances, str(ini), out
    rd_conf.CONF.clear()
    rd_conf.CONF.reset()
    for h in root.handlers[:]:
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


def test_bad_size_exits_2(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(['resize', 'guest', '--root-size', '12Q'])
    assert ei.value.code == 2
    assert "'12Q' is not a size" in capsys.readouterr().err


def test_bad_vcpus_exits_2(capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main(['resize', 'guest', '--vcpus', '0'])
    assert ei.value.code == 2


def test_status_with_nothing_pending(cli_env, capsys):
    instances, ini, out = cli_env
    assert cli.main(['--config-file', ini, 'status']) == 0
    assert out.getvalue() == 'no resize pending\n'
    assert rd_conf.CONF.instances_path == str(instances)


def test_status_json_is_one_document(cli_env):
    instances, ini, out = cli_env
    os.makedirs(instances / f'{UUID}_resize')
    make_record(str(instances)).write(
        str(instances / f'{UUID}_resize' / RECORD_NAME))
    _interrupted(instances, 'migrate_disk_and_power_off', {})
    assert cli.main(['--config-file', ini, 'status', '--json']) == 0
    doc = json.loads(out.getvalue())
    assert [p['instance'] for p in doc['pending']] == [UUID]
    assert doc['pending'][0]['downtime_s'] is None
    assert doc['interrupted'] == [{
        'instance': UUID, 'operation': 'migrate_disk_and_power_off',
        'interrupted_at': 'some step'}]


def test_status_lists_pending(cli_env):
    instances, ini, out = cli_env
    os.makedirs(instances / f'{UUID}_resize')
    make_record(str(instances)).write(
        str(instances / f'{UUID}_resize' / RECORD_NAME))
    assert cli.main(['--config-file', ini, 'status']) == 0
    text = out.getvalue()
    assert 'no resize pending' not in text
    assert text.startswith(f'{UUID} guest-1: vcpus 1->2, memory 256->512')
    assert 'dst.example:/srv/dest' in text


def test_status_says_the_guest_still_reads_a_confirmed_resize_dir(cli_env):
    """An overlay confirm whose fold is left to recovery: its _resize is
    not a pending resize nor disposable, and status says so."""
    instances, ini, out = cli_env
    resize_dir = instances / f'{UUID}_resize'
    os.makedirs(resize_dir)
    make_record(str(instances)).write(str(resize_dir / RECORD_NAME))
    (resize_dir / IN_USE_MARKER).write_text('Do not delete\n')
    assert cli.main(['--config-file', ini, 'status']) == 0
    [line] = out.getvalue().splitlines()
    assert line == (f'{UUID} guest-1: confirmed, but the running guest '
                    f'still reads its disks through {resize_dir} (see '
                    f'{IN_USE_MARKER} there); "resizedriver recover '
                    f'{UUID}" folds them and deletes it')


def _error_lines(err: str) -> list[str]:
    assert 'Traceback' not in err
    return [line for line in err.splitlines() if line.strip()]


def test_malformed_record_is_one_error_line(cli_env, capsys):
    instances, ini, out = cli_env
    os.makedirs(instances / f'{UUID}_resize')
    (instances / f'{UUID}_resize' / RECORD_NAME).write_text('{broken')
    assert cli.main(['--config-file', ini, 'status']) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert lines[0].startswith('resizedriver: error: malformed resize record')


def test_unknown_domain_is_one_error_line(cli_env, capsys, monkeypatch):
    instances, ini, out = cli_env
    looked_up = []

    def lookup(self, name):
        looked_up.append(name)
        return None
    monkeypatch.setattr(Host, 'lookup', lookup)
    rc = cli.main(['--config-file', ini, 'resize', 'no-such-guest',
                   '--vcpus', '2'])
    assert rc == 1
    assert looked_up == ['no-such-guest']
    lines = _error_lines(capsys.readouterr().err)
    assert lines == ["resizedriver: error: no libvirt domain named "
                     "'no-such-guest'"]
    assert out.getvalue() == ''
    assert os.listdir(instances) == []


def test_debug_reraises(cli_env, monkeypatch):
    instances, ini, out = cli_env
    monkeypatch.setattr(Host, 'lookup', lambda self, name: None)
    with pytest.raises(exception.NotFound):
        cli.main(['--config-file', ini, '--debug', 'confirm', 'x'])


def test_missing_config_file_is_one_error_line(cli_env, capsys, tmp_path):
    rc = cli.main(['--config-file', str(tmp_path / 'nope.conf'), 'status'])
    assert rc == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith('resizedriver: error: ')
    assert 'nope.conf' in lines[0]


def test_recover_with_nothing_interrupted(cli_env):
    instances, ini, out = cli_env
    assert cli.main(['--config-file', ini, 'recover']) == 0
    assert out.getvalue() == 'nothing to recover\n'


def _interrupted(instances, operation: str, context: dict) -> None:
    store = JournalStore(str(instances), socket.gethostname())
    journal = store.open(operation, UUID, context)
    journal.started('some step', True)


def test_status_shows_interrupted_operations(cli_env):
    instances, ini, out = cli_env
    _interrupted(instances, 'migrate_disk_and_power_off', {})
    assert cli.main(['--config-file', ini, 'status']) == 0
    assert out.getvalue() == (
        f"{UUID}: migrate_disk_and_power_off was interrupted at "
        f"'some step'; run \"resizedriver recover\"\n")


def test_recover_that_fails_says_so_and_exits_1(cli_env, capsys):
    instances, ini, out = cli_env
    _interrupted(instances, 'no_such_operation', {})
    assert cli.main(['--config-file', ini, 'recover', UUID]) == 1
    assert 'NOT recovered: unknown operation' in out.getvalue()
    lines = _error_lines(capsys.readouterr().err)
    assert lines[-1] == ('resizedriver: error: 1 operation(s) could not be '
                         'recovered')


@pytest.mark.parametrize('flags,level', [([], logging.WARNING),
                                         (['--verbose'], logging.NOTSET)])
def test_step_logs_only_with_verbose(cli_env, flags, level):
    _instances, ini, _out = cli_env
    rd_logger = logging.getLogger('resizedriver')
    rd_logger.setLevel(logging.NOTSET)
    assert cli.main(['--config-file', ini, *flags, 'status']) == 0
    assert rd_logger.level == level
    rd_logger.setLevel(logging.NOTSET)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_progress_line_shows_every_file_being_copied():
    """Files copied side by side share the live line; each finished one
    gets a line of its own; off a terminal only those are written."""
    tty = cli.Console(_Tty())
    tty.progress('disk', MiB, 4 * MiB)
    tty.progress('disk.local', 0, 2 * MiB)
    tty.progress('disk.local', 2 * MiB, 2 * MiB)
    tty.progress('disk', 4 * MiB, 4 * MiB)
    out = tty.stream.getvalue()
    assert ('copying disk:  25% (1.0/4.0 MiB), disk.local:   0% '
            '(0.0/2.0 MiB)\r') in out
    assert 'copying disk.local: 100% (2.0/2.0 MiB)\n' in out
    assert out.endswith('copying disk: 100% (4.0/4.0 MiB)\n')
    log = cli.Console(io.StringIO())
    for args in (('disk', MiB, 4 * MiB), ('disk', 4 * MiB, 4 * MiB)):
        log.progress(*args)
    assert log.stream.getvalue() == 'copying disk: 100% (4.0/4.0 MiB)\n'


def test_instance_progress_adds_up_files_copied_side_by_side():
    saved = []
    inst = types.SimpleNamespace(progress=0,
                                 save=lambda: saved.append(inst.progress))
    progress = InstanceProgress(inst)
    progress.expect(100)
    for name, done in (('disk', 30), ('kernel', 10), ('disk', 60),
                       ('kernel', 40), ('disk', 60)):
        progress(name, done, 60 if name == 'disk' else 40)
    assert saved == [30, 40, 70, 100]

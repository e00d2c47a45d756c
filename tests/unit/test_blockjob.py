"""blockjob.pull's decisions, against a stand-in domain.

The real behaviour (libvirt 9.0, QEMU 7.2) is proven in
tests/functional/test_blockjob.py; here are the paths a real QEMU does
not take on demand: a job that vanishes without folding, another kind of
job on the disk, a progress callback that raises.
"""

from __future__ import annotations

from typing import Optional

import libvirt
import pytest

from resizedriver import blockjob
from resizedriver.guest import BlockJob

TOP, KEPT, BASE = '/i/u/disk', '/i/u_resize/disk', '/i/_base/sha'
PULL = libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_PULL


class Domain:
    """What blockjob uses of a Guest: a chain, at most one job."""

    uuid, name = 'u', 'guest'

    def __init__(self, chain: list[str], job_polls: Optional[int] = 2,
                 succeeds: bool = True, job_type: Optional[int] = None):
        self.chain = chain
        self.job_polls = job_polls     # None: the job never ends
        self.succeeds = succeeds
        self.job: Optional[BlockJob] = BlockJob(job_type, 1, 9) \
            if job_type is not None else None
        self.calls: list[str] = []

    def live_xml(self) -> str:
        inner = '<backingStore/>'
        for path in reversed(self.chain[1:]):
            inner = (f"<backingStore type='file'><source file='{path}'/>"
                     f"{inner}</backingStore>")
        return (f"<domain><devices><disk type='file' device='disk'>"
                f"<source file='{self.chain[0]}'/>{inner}"
                f"<target dev='vda'/></disk></devices></domain>")

    def block_pull(self, dev: str, base: Optional[str],
                   bandwidth: int = 0) -> None:
        self.calls.append(f'pull {base}')
        self.base = base
        self.job = BlockJob(PULL, 0, 9)

    def block_job(self, dev: str) -> Optional[BlockJob]:
        if self.job is None:
            return None
        if self.job_polls is not None:
            if self.job_polls == 0:
                self.job = None
                if self.succeeds:
                    keep = self.chain.index(self.base) if self.base else None
                    self.chain = [self.chain[0]] + (
                        self.chain[keep:] if keep else [])
                return None
            self.job_polls -= 1
        return self.job

    def abort_block_job(self, dev: str) -> None:
        self.calls.append('abort')
        self.job = None

    def flush_disks(self) -> None:
        self.calls.append('flush')


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(blockjob, 'POLL_SECONDS', 0.001)
    monkeypatch.setattr(blockjob, 'PAUSED_CATCH_UP', 0.05)


def test_pull_folds_onto_base_then_flushes():
    dom = Domain([TOP, KEPT, BASE])
    seen = []
    blockjob.pull(dom, 'vda', BASE, timeout=10,
                  progress=lambda cur, end: seen.append((cur, end)))
    assert dom.chain == [TOP, BASE]
    assert dom.calls == [f'pull {BASE}', 'flush']
    assert seen == [(0, 9), (0, 9)]


def test_full_pull_when_there_is_no_base():
    dom = Domain([TOP, KEPT])
    blockjob.pull(dom, 'vda', None, timeout=10)
    assert dom.chain == [TOP]
    assert dom.calls == ['pull None', 'flush']


def test_a_folded_chain_is_only_flushed():
    dom = Domain([TOP, BASE])
    blockjob.pull(dom, 'vda', BASE, timeout=10)
    assert dom.calls == ['flush']


def test_a_job_that_vanishes_without_folding_is_a_failure():
    """libvirt drops a failed job from blockJobInfo as it drops a
    completed one: only the chain tells them apart."""
    dom = Domain([TOP, KEPT, BASE], succeeds=False)
    with pytest.raises(blockjob.FoldFailed, match='the job failed'):
        blockjob.pull(dom, 'vda', BASE, timeout=10)
    assert 'flush' not in dom.calls


def test_a_running_pull_is_adopted_not_started_again():
    dom = Domain([TOP, KEPT, BASE], job_type=PULL)
    dom.base = BASE
    blockjob.pull(dom, 'vda', BASE, timeout=10)
    assert dom.calls == ['flush']
    assert dom.chain == [TOP, BASE]


def test_another_kind_of_job_is_refused():
    dom = Domain([TOP, KEPT, BASE],
                 job_type=libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_COPY)
    with pytest.raises(blockjob.FoldFailed, match='another block job'):
        blockjob.pull(dom, 'vda', BASE, timeout=10)
    assert dom.calls == []


def test_timeout_aborts_the_job():
    dom = Domain([TOP, KEPT, BASE], job_polls=None)
    with pytest.raises(blockjob.FoldFailed, match='aborted'):
        blockjob.pull(dom, 'vda', BASE, timeout=0.05)
    assert dom.calls == [f'pull {BASE}', 'abort']
    assert dom.chain == [TOP, KEPT, BASE]


def test_a_raising_progress_callback_aborts_the_job():
    dom = Domain([TOP, KEPT, BASE], job_polls=None)

    def progress(cur, end):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        blockjob.pull(dom, 'vda', BASE, timeout=10, progress=progress)
    assert dom.calls == [f'pull {BASE}', 'abort']


def test_a_base_not_in_the_chain_is_refused():
    dom = Domain([TOP, KEPT, '/elsewhere/base'])
    with pytest.raises(blockjob.FoldFailed, match='not below'):
        blockjob.pull(dom, 'vda', BASE, timeout=10)
    assert dom.calls == []


# -- commit_active: a pre-copy snapshot taken back ------------------------

COMMIT = libvirt.VIR_DOMAIN_BLOCK_JOB_TYPE_ACTIVE_COMMIT
SNAP_TOP, DISK = '/i/u/disk.top', '/i/u/disk'


class Committing(Domain):
    """An active commit: mirroring (cur == end) after ``lag`` polls, or
    only once the guest is paused (a guest that writes faster than the
    commit copies); the pivot refused ``not_ready`` times first."""

    def __init__(self, lag: int = 1, only_when_paused: bool = False,
                 not_ready: int = 0) -> None:
        super().__init__([SNAP_TOP, DISK, BASE], job_polls=None)
        self.lag = lag
        self.only_when_paused = only_when_paused
        self.not_ready = not_ready
        self.paused = False

    def block_commit_active(self, dev: str, base: str) -> None:
        self.calls.append(f'commit {base}')
        self.job = BlockJob(COMMIT, 0, 9)

    def block_job(self, dev: str) -> Optional[BlockJob]:
        if self.job is not None and self.job.type == COMMIT:
            self.lag -= 1
            synced = self.lag <= 0 and (self.paused or
                                        not self.only_when_paused)
            self.job = BlockJob(COMMIT, 9 if synced else 1, 9)
        return self.job

    def pivot_block_job(self, dev: str) -> None:
        if self.not_ready:
            self.not_ready -= 1
            self.calls.append('pivot refused')
            raise libvirt.libvirtError('block job not ready yet')
        self.calls.append('pivot' + (' paused' if self.paused else ''))
        self.job = None
        self.chain = self.chain[1:]

    def pause(self) -> None:
        self.calls.append('pause')
        self.paused = True

    def resume(self) -> None:
        self.calls.append('resume')
        self.paused = False

    def is_paused(self) -> bool:
        return self.paused


def test_the_pivot_is_paused_until_the_top_is_gone():
    """From the pause on the disk holds all the top does and nothing
    newer: the top may be committed again after any crash."""
    dom = Committing()
    blockjob.commit_active(dom, 'vda', DISK, timeout=10,
                           drop_top=lambda: dom.calls.append('drop top'))
    assert dom.calls == [f'commit {DISK}', 'pause', 'pivot paused',
                         'drop top', 'resume']
    assert dom.chain == [DISK, BASE]


def test_a_pivot_libvirt_is_not_ready_for_is_tried_again(monkeypatch):
    # time enough for two refusals on a loaded machine: the 0.05 s of
    # the fixture ran out there between them ("refused for 0 s")
    monkeypatch.setattr(blockjob, 'PAUSED_CATCH_UP', 10.0)
    dom = Committing(not_ready=2)
    blockjob.commit_active(dom, 'vda', DISK, timeout=10,
                           drop_top=lambda: None)
    assert dom.calls.count('pivot refused') == 2
    assert 'pivot paused' in dom.calls


def test_a_guest_writing_faster_than_the_commit_is_paused_to_end_it():
    dom = Committing(only_when_paused=True)
    blockjob.commit_active(dom, 'vda', DISK, timeout=0.05,
                           drop_top=lambda: None)
    assert dom.calls == [f'commit {DISK}', 'pause', 'pivot paused',
                         'resume']


def test_a_commit_that_fails_resumes_the_guest_on_its_top():
    dom = Committing(not_ready=10 ** 6)
    with pytest.raises(blockjob.FoldFailed, match='pivot was refused'):
        blockjob.commit_active(dom, 'vda', DISK, timeout=0.05,
                               drop_top=lambda: dom.calls.append('drop'))
    assert dom.calls[-2:] == ['abort', 'resume'] and 'drop' not in dom.calls
    assert dom.chain == [SNAP_TOP, DISK, BASE]


def test_a_pause_that_fails_aborts_the_commit():
    """The guest could not be paused (it stopped meanwhile, say): the
    commit must not be left mirroring."""
    dom = Committing()

    def cannot_pause() -> None:
        raise libvirt.libvirtError('domain is not running')

    dom.pause = cannot_pause
    with pytest.raises(libvirt.libvirtError):
        blockjob.commit_active(dom, 'vda', DISK, timeout=10,
                               drop_top=lambda: dom.calls.append('drop'))
    assert dom.calls == [f'commit {DISK}', 'abort']
    assert dom.job is None and dom.chain == [SNAP_TOP, DISK, BASE]


def test_a_failure_after_the_pivot_keeps_the_guest_paused():
    """Pivoted, the guest may only run again once its top is gone: a
    failure then (here: the chain does not read as expected) leaves it
    paused for recovery, which removes the top and resumes it."""
    dom = Committing()
    real = blockjob.backing_chain
    blockjob.backing_chain = lambda guest, dev: (
        ['/elsewhere'] if 'pivot paused' in dom.calls else real(guest, dev))
    try:
        with pytest.raises(blockjob.FoldFailed, match='stays paused'):
            blockjob.commit_active(dom, 'vda', DISK, timeout=10,
                                   drop_top=lambda: dom.calls.append('drop'))
    finally:
        blockjob.backing_chain = real
    assert dom.paused and 'drop' not in dom.calls


def test_a_failure_with_the_chain_unreadable_keeps_the_guest_paused(
        monkeypatch):
    """The pivot raised, and whether it happened cannot be read: resumed
    on a disk it may have been pivoted to, the guest would write there
    while its top still counts as newer.  Paused, recovery finds out."""
    dom = Committing()

    def pivot_then_fail(dev: str) -> None:
        Committing.pivot_block_job(dom, dev)
        raise libvirt.libvirtError('connection lost')

    def unreadable(guest, dev):
        raise libvirt.libvirtError('connection lost')

    dom.pivot_block_job = pivot_then_fail
    monkeypatch.setattr(blockjob, 'backing_chain', unreadable)
    with pytest.raises(blockjob.FoldFailed, match='ended before its pivot'):
        blockjob.commit_active(dom, 'vda', DISK, timeout=10,
                               drop_top=lambda: dom.calls.append('drop'))
    assert dom.paused and 'drop' not in dom.calls

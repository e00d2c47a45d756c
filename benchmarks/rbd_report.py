"""The RBD benchmark's results (``benchmarks/rbd_bench.py``) and what it
makes of them: when a live resize shows in the guest, the call times the
compute nodes report, the table of medians and its plot.  No Nova here:
the unit tests read it.

``python -m benchmarks.rbd_report DIR...``: the table and the phases'
table of the runs in every ``--results`` DIR's ``rbd.json`` together
(``benchmarks/run rbd --repeats 1`` once per exclusive hold of the
machine: each hold stays short)."""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import sys
from typing import Optional

from benchmarks import phases, probes, report
from resizedriver import stepname

GiB = 1024 ** 3
#: the flavors resized from and to: id, vCPUs, MiB, root GiB
OLD, NEW = ('1', 1, 256, 1), ('2', 2, 512, 2)
#: what the guest prints once it has the new flavor's vCPUs and root disk
NEW_SHAPE = (f'RDGUEST cpus=0-{NEW[1] - 1}',
             f'RDGUEST disk vda={NEW[3] * GiB}')
COLUMNS = ('topology', 'driver', 'plan', 'runs', 'downtime s',
           'in effect s', 'migrate s', 'finish s', 'confirm s', 'calls s',
           'load')
#: the figures each row gives the median of
MEDIANS = ('downtime', 'in_effect', 'migrate', 'finish', 'confirm')


@dataclasses.dataclass
class RbdResult:
    topology: str            # 'same host' or 'A -> B'
    driver: str              # 'ours' or 'upstream' (Nova 34)
    headroom: bool           # the flavors grant resizedriver headroom
    plan: str                # from resizedriver's record ('' for Nova 34)
    downtime: float          # s the guest was down (0: never stopped)
    in_effect: float         # migrate called -> the guest shows its shape
    migrate: float           # wall time of each driver call
    finish: float
    confirm: float
    #: the machine's 1-minute load average as the run began
    load: float = 0.0
    #: where the time after the guest's power-off went (cold resizes by
    #: a plan of ours; None: live, or Nova's own)
    phases: Optional[phases.Phases] = None
    #: s per plan step with the guest down: migrate's after its power
    #: off, and finish's (``downed_steps``)
    steps: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict) -> 'RbdResult':
        """From its ``dataclasses.asdict`` (``rbd.json``)."""
        where = d.get('phases')
        return cls(**dict(d, phases=phases.Phases(**where) if where
                          else None))


def new_shape_at(lines: list[probes.Line], after: float) -> float | None:
    """When the guest showed the new flavor's shape without a reboot:
    the latest of the first ``NEW_SHAPE`` lines seen after ``after``;
    None while one is missing.  A new boot there is an error: the resize
    was not live, and its downtime is not 0."""
    seen = [line for line in lines if line.at > after]
    if any(line.text.startswith('RDGUEST boot=') for line in seen):
        raise RuntimeError('the guest rebooted: not a live resize')
    times = [next((line.at for line in seen if line.text == want), None)
             for want in NEW_SHAPE]
    return None if None in times else max(t for t in times if t is not None)


def seconds(answer: dict) -> float:
    """A compute node's answer: the driver call's own wall time, where it
    says when it called (migrate, finish), else the whole request's."""
    if 'called' in answer:
        start, end = answer['called']
        return float(end - start)
    return float(answer['seconds'])


def _driver_text(r: RbdResult) -> str:
    text = report.CROSS_DRIVER_TEXT[r.driver]
    return text + ', headroom' if r.headroom else text


def _groups(results: list[RbdResult]) \
        -> dict[tuple[str, str, str], list[RbdResult]]:
    """The runs of each case and plan that ran, in the order first seen,
    by name (topology, driver, plan: '-' for Nova's own driver)."""
    groups: dict[tuple[str, str, str], list[RbdResult]] = {}
    for r in results:
        groups.setdefault((r.topology, _driver_text(r), r.plan or '-'),
                          []).append(r)
    return groups


def median_rows(results: list[RbdResult]) \
        -> list[tuple[tuple[str, str, str], int, dict[str, float]]]:
    """One row per case and plan that ran (``_groups``): its name, its
    number of runs, and the median of each of ``MEDIANS`` over them.  A
    case whose runs took different plans gets a row for each."""
    return [(case, len(runs), {
        name: statistics.median(getattr(r, name) for r in runs)
        for name in MEDIANS}) for case, runs in _groups(results).items()]


def _loads(results: list[RbdResult]) -> dict[tuple[str, str, str], str]:
    """Each row's runs' load averages, as they began."""
    return {case: ' '.join(f'{r.load:.1f}' for r in runs)
            for case, runs in _groups(results).items()}


def phase_rows(results: list[RbdResult]) \
        -> list[tuple[tuple[str, str, str], phases.Phases]]:
    """Per row whose runs have phases (a cold plan of ours): its
    topology, plan and number of runs, and each phase's median."""
    out = []
    for (topology, _, plan), runs in _groups(results).items():
        seen = [r.phases for r in runs if r.phases is not None]
        if seen:
            out.append(((topology, plan, str(len(seen))),
                        phases.median(seen)))
    return out


def _calls(medians: dict[str, float]) -> float:
    return medians['migrate'] + medians['finish'] + medians['confirm']


def table(results: list[RbdResult], note: str) -> str:
    """The medians as a reStructuredText table, then ``note``; 'calls
    s' is the sum of the three calls' medians, 'load' each run's load
    average as it began."""
    loads = _loads(results)
    rows = [(*case, str(runs), *(f'{m[name]:.1f}' for name in MEDIANS),
             f'{_calls(m):.1f}', loads[case])
            for case, runs, m in median_rows(results)]
    return report.format_table(COLUMNS, rows, note)


def phases_table(results: list[RbdResult]) -> str:
    """Where the time between the guest's power-off and the resized
    guest's start returning went, a column per phase (medians)."""
    return report.phase_table(
        phase_rows(results), ('topology', 'plan', 'runs'),
        "medians; s from the guest's power-off line to start returned")


def plot(results: list[RbdResult], path: str) -> None:
    """Per case and plan: the median downtime beside the three calls'."""
    fig, ax = report.axes()
    rows = median_rows(results)
    labels = [f'{topology}\n{driver}' + (f': {plan}' if plan != '-' else '')
              for (topology, driver, plan), _, _ in rows]
    down = [m['downtime'] for _, _, m in rows]
    ax.barh([i - 0.2 for i in range(len(rows))], down, height=0.4,
            color='tab:red', label='guest downtime')
    ax.barh([i + 0.2 for i in range(len(rows))],
            [_calls(m) for _, _, m in rows], height=0.4, color='tab:blue',
            label="driver calls' wall time")
    for i, value in enumerate(down):
        ax.annotate(f'{value:.1f} s', (value, i - 0.2), fontsize='small',
                    va='center', xytext=(3, 0), textcoords='offset points')
    ax.set_yticks(range(len(rows)), labels, fontsize='small')
    ax.invert_yaxis()
    ax.margins(x=0.12)
    ax.set_xlabel('s, median of the runs')
    ax.set_title('RBD resize: resizedriver vs. Nova 34 LibvirtDriver')
    ax.grid(True, axis='x', alpha=0.3)
    ax.legend(fontsize='small', loc='upper right')
    fig.set_figheight(4.8)
    report.save_figure(fig, path)


def downed_steps(migrate: phases.Call, finish: phases.Call) \
        -> dict[str, float]:
    """Seconds of each step that runs with the guest down: migrate's
    from its power off on (the power off's own time is mostly the
    guest's shutdown), and every one of finish's."""
    names = [n for _, n in migrate.steps]
    after = names[names.index(stepname.POWER_OFF) + 1:] \
        if stepname.POWER_OFF in names else []
    spans = migrate.spans()
    return {**{n: spans[n] for n in after},
            **{n: t for n, t in finish.spans().items() if n}}


def steps_table(results: list[RbdResult]) -> str:
    """Per row with steps (a cold plan of ours): each step with the
    guest down and its median seconds, in the order they ran."""
    lines = []
    for (topology, _, plan), runs in _groups(results).items():
        seen = [r.steps for r in runs if r.steps]
        if seen:
            lines.append(f'{topology}, {plan}: ' + ', '.join(
                f'{n} {statistics.median(s.get(n, 0.0) for s in seen):.2f}'
                for n in seen[0]))
    return '\n'.join(lines)


def load_results(directories: list[str]) -> tuple[list[RbdResult],
                                                  list[str]]:
    """Every run in the ``rbd.json`` of ``directories``, and their notes."""
    results, notes = [], []
    for directory in directories:
        with open(os.path.join(directory, 'rbd.json')) as f:
            data = json.load(f)
        notes.append(data['note'])
        results += [RbdResult.from_dict(r) for r in data['results']]
    return results, notes


def text(results: list[RbdResult], note: str) -> str:
    """The table, the phases' table and the steps' medians."""
    return (f'{table(results, note)}\n\n{phases_table(results)}\n\n'
            f'steps with the guest down, s (medians):\n'
            f'{steps_table(results)}')


def main(argv: list[str]) -> int:
    results, notes = load_results(argv)
    print(text(results, '\n'.join(notes)))
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

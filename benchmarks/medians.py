"""The median of each phase over repeated benchmark runs.

``python -m benchmarks.medians OUT DIR...``: every ``--results`` DIR of
``benchmarks/run`` (results.json), ``benchmarks/run cross-host``
(cross-host.json) and ``benchmarks/run cli`` (cli-phases.json); prints one
table, a row per integration and plan with the median of each phase
(``phases.Phases``) over the runs, and plots it to ``OUT`` (a PNG).  A
machine shared with others is noisy: one run says little, the median of
three says more.
"""

from __future__ import annotations

import collections
import json
import os
import sys

from benchmarks import phases, report

#: file in a results dir -> the integration its resizes went through
FILES = {'results.json': 'Nova, same host',
         'cross-host.json': 'Nova, A -> B',
         'cli-phases.json': 'CLI, same host'}


def _cases(directory: str) -> list[tuple[tuple[str, str], dict]]:
    """(integration, plan) and phases of each cold resize measured."""
    out = []
    for name, integration in FILES.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path):
            continue
        with open(path) as f:
            data = json.load(f)
        for r in data['results'] if isinstance(data, dict) else data:
            if r.get('phases'):
                out.append(((integration, r['plan']), r['phases']))
    return out


def medians(directories: list[str]) \
        -> list[tuple[tuple[str, str, str], phases.Phases]]:
    runs: dict[tuple[str, str], list[dict]] = collections.defaultdict(list)
    for directory in directories:
        for case, where in _cases(directory):
            runs[case].append(where)
    return [((integration, plan, str(len(seen))),
             phases.median([phases.Phases(**w) for w in seen]))
            for (integration, plan), seen in runs.items()]


def main(argv: list[str]) -> int:
    out, *directories = argv
    rows = medians(directories)
    print(report.phase_table(rows, ('integration', 'plan', 'runs'),
                             'medians; s from the guest\'s power-off line'))
    report.plot_phases([(f'{i}: {p}', where) for (i, p, _), where in rows],
                       out)
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))

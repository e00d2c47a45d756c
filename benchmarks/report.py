"""The benchmark's output: a table (reStructuredText, for README.rst),
results.json and a PNG plot of downtime against overlay size."""

from __future__ import annotations

import dataclasses
import json
import os

MiB = 1024 ** 2
KIND_TEXT = {'cpu': 'CPU/RAM', 'disk': 'disk +1G'}
DRIVER_TEXT = {'live': 'ours, live', 'ours': 'ours, cold',
               'copy': 'ours, raw disks (copy)',
               'upstream': 'Nova 34'}
#: the driver variants of the benchmarks between hosts, as they name them
CROSS_DRIVER_TEXT = {'ours': 'resizedriver', 'copy': 'resizedriver',
                     'upstream': 'Nova 34'}
COLUMNS = ('resize', 'data', 'driver', 'downtime s', 'migrate s',
           'finish s', 'confirm s', 'written down MiB', 'written total MiB',
           'bg MiB/s')


def size_text(size: int) -> str:
    return f'{size // 1024 ** 3}G' if size % 1024 ** 3 == 0 \
        else f'{size // MiB}M'


def _row(r) -> tuple[str, ...]:
    return (KIND_TEXT[r.kind], size_text(r.size), r.driver,
            f'{r.downtime:.1f}', f'{r.migrate:.1f}', f'{r.finish:.1f}',
            f'{r.confirm:.1f}', f'{r.written_down / MiB:.0f}',
            f'{r.written_total / MiB:.0f}', f'{r.background / MiB:.1f}')


def table(results: list, note: str) -> str:
    return format_table(COLUMNS, [_row(r) for r in results], note)


def phase_table(rows: list[tuple[tuple[str, ...], object]],
                columns: tuple[str, ...], note: str) -> str:
    """Where each cold resize's downtime went (``phases.Phases``), after
    the ``columns`` naming each case."""
    from benchmarks import phases
    return format_table(columns + phases.COLUMNS,
                        [case + where.row() for case, where in rows
                         if where is not None], note)


def format_table(columns: tuple[str, ...], rows: list[tuple[str, ...]],
                 note: str) -> str:
    """A reStructuredText simple table, then ``note``."""
    every = [columns] + rows
    widths = [max(len(row[i]) for row in every) for i in range(len(columns))]
    rule = '  '.join('=' * w for w in widths)

    def line(row: tuple[str, ...]) -> str:
        return '  '.join(c.ljust(w)
                         for c, w in zip(row, widths, strict=True)).rstrip()
    lines = [rule, line(columns), rule, *map(line, rows), rule]
    return '\n'.join(lines) + f'\n\n{note}'


def save(results: list, directory: str, note: str) -> None:
    save_named(results, directory, note, 'results')
    plot(results, os.path.join(directory, 'downtime.png'))


def plot_phases(rows: list[tuple[str, object]], path: str) -> None:
    """One stacked bar per cold resize (its label, ``phases.Phases``):
    the phases from the guest's power-off line to start returned."""
    from benchmarks import phases
    names = phases.COLUMNS[:-2]          # not the totals
    plot_stacked([(label, list(dataclasses.astuple(where)[:-2]))
                  for label, where in rows if where is not None],
                 names, "s from the guest's power-off line to start returned",
                 'cold resize: where the time after power-off goes', path)


def plot_stacked(rows: list[tuple[str, list[float]]], names: tuple[str, ...],
                 xlabel: str, title: str, path: str, ncol: int = 4) -> None:
    """One stacked bar per row (its label, seconds per ``names``), the
    legend in ``ncol`` columns below."""
    if not rows:
        return
    fig, ax = axes()
    fig.set_figheight(5.5)
    left = [0.0] * len(rows)
    colours = matplotlib_colours(len(names))
    for i, (name, colour) in enumerate(zip(names, colours, strict=True)):
        widths = [max(v[i], 0.0) for _, v in rows]
        ax.barh(range(len(rows)), widths, left=left, color=colour,
                label=name.removesuffix(' s'))
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.axvline(0.5, color='black', linestyle=':', linewidth=1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize='small', ncol=ncol, loc='upper center',
              bbox_to_anchor=(0.5, -0.2))
    save_figure(fig, path)


def matplotlib_colours(n: int) -> list:
    from matplotlib import colormaps
    return [colormaps['tab20'](i) for i in range(n)]


def save_named(results: list, directory: str, note: str, name: str) -> None:
    """``<directory>/<name>.json``: the note and every result."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f'{name}.json'), 'w') as f:
        json.dump({'note': note,
                   'results': [dataclasses.asdict(r) for r in results]},
                  f, indent=1)


def plot_cross(results: list, names: dict[str, str], path: str) -> None:
    """Cross-host downtime against the data written, one line a driver."""
    fig, ax = axes()
    for driver, colour in (('ours', 'tab:blue'), ('copy', 'tab:purple'),
                           ('upstream', 'tab:red')):
        points = sorted((r.size, r.downtime) for r in results
                        if r.driver == driver)
        if points:
            ax.plot([s / MiB for s, _ in points], [d for _, d in points],
                    '-o', color=colour,
                    label=f'{names[driver]} ({driver})')
    _finish(fig, ax, results, path,
            'resize A -> B: resizedriver vs. Nova 34 LibvirtDriver')


def plot(results: list, path: str) -> None:
    fig, ax = axes()
    # colour: driver; line and marker: kind of resize
    for driver, colour in (('live', 'tab:green'), ('ours', 'tab:blue'),
                           ('copy', 'tab:purple'), ('upstream', 'tab:red')):
        label = DRIVER_TEXT[driver]
        for kind, style in zip(KIND_TEXT, ('-o', '--s'), strict=True):
            points = sorted((r.size, r.downtime) for r in results
                            if r.driver == driver and r.kind == kind)
            if points:
                ax.plot([s / MiB for s, _ in points], [d for _, d in points],
                        style, color=colour,
                        label=f'{label}: {KIND_TEXT[kind]}')
    _finish(fig, ax, results, path,
            'same-host resize: resizedriver vs. Nova 34 LibvirtDriver')


def axes():
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    return pyplot.subplots(figsize=(6.4, 4))


def _finish(fig, ax, results: list, path: str, title: str) -> None:
    """Axes, labels and title of a downtime-against-size plot; saved."""
    sizes = sorted({r.size for r in results})
    ax.set_xscale('log', base=2)
    ax.set_xticks([s / MiB for s in sizes], [size_text(s) for s in sizes])
    ax.set_xlabel('data written into the root overlay')
    ax.set_ylabel('guest downtime (s, from its console)')
    ax.set_title(title)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def save_figure(fig, path: str) -> None:
    from matplotlib import pyplot
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    pyplot.close(fig)

"""Shared by the fault-injecting stand-ins for ssh and qemu-img.

The fault tests put this directory first in the PATH of the resizedriver
process they break.  Each stand-in looks for control files in $RD_FAULTS
and, when none applies, execs the real program, so everything not broken
on purpose is the real thing.  What was injected is appended to
$RD_FAULTS/events for the test to read.
"""

import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FAULTS = os.environ.get('RD_FAULTS', '')


def fault(name: str):
    """The content of control file ``name``, None when it is absent."""
    if not FAULTS:
        return None
    try:
        with open(os.path.join(FAULTS, name)) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def set_fault(name: str, value: str = '') -> None:
    with open(os.path.join(FAULTS, name), 'w') as f:
        f.write(value)


def clear_fault(name: str) -> None:
    try:
        os.unlink(os.path.join(FAULTS, name))
    except FileNotFoundError:
        pass


def event(text: str) -> None:
    with open(os.path.join(FAULTS, 'events'), 'a') as f:
        f.write(text + '\n')


def real(program: str) -> str:
    path = os.pathsep.join(p for p in os.environ.get('PATH', '').split(
        os.pathsep) if os.path.abspath(p) != HERE)
    found = shutil.which(program, path=path)
    if not found:
        sys.exit(f'{program}: not found')
    return found


def exec_real(program: str) -> None:
    binary = real(program)
    os.execv(binary, [binary] + sys.argv[1:])


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open(f'/proc/{entry}/stat') as f:
                ppid = int(f.read().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return tree

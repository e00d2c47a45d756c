"""The configuration reference with Nova's: no option declared twice."""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys


def test_a_sample_with_novas_options_declares_each_option_once(tmp_path):
    """A generator run with both namespaces (a nova.conf sample that
    documents ours, the docs' configuration reference) must not declare
    Nova's own options a second time, with other defaults and choices
    (``instances_path``: Nova's ``$state_path/instances``)."""
    out = tmp_path / 'nova.conf.sample'
    generator = os.path.join(os.path.dirname(sys.executable),
                             'oslo-config-generator')
    subprocess.run([generator, '--namespace', 'nova.conf', '--namespace',
                    'resizedriver', '--output-file', str(out)],
                   check=True, capture_output=True)
    group, seen = 'DEFAULT', collections.Counter()
    for line in out.read_text().splitlines():
        if m := re.fullmatch(r'\[(.+)\]', line):
            group = m.group(1)
        elif m := re.match(r'#(\w+) =', line):
            seen[group, m.group(1)] += 1
    twice = sorted(k for k, n in seen.items() if n > 1)
    assert twice == []
    # ours are there, once
    assert seen['resizedriver', 'pre_copy'] == 1


def test_our_options_imported_first_leave_nova_s_own_loadable():
    """A process may import our options before Nova's: the config
    generator loads its namespaces' plugins in no set order, and Nova's
    registration of its options refuses any already registered."""
    done = subprocess.run(
        [sys.executable, '-c', 'import resizedriver.conf, nova.conf'],
        capture_output=True, text=True)
    assert done.returncode == 0, done.stderr.splitlines()[-1:]

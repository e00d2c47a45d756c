"""Layers under an instance's disks that are not Nova's.

Nova reads the backing file of a qcow2 disk in the instance directory as
the name of an image in its cache (``_base/<name>``): a hard reboot, and
on the destination of a block live migration
(``_create_images_and_backing``), fetch the Glance image under that
name when the file is not there.  Two layers of ours are not such
images, and the disks read them until a fold takes them away:

* a pre-copied layer, ``<name>.precopy`` (``<name>.precopy.<n>``) in
  the instance directory, until the pull after the finish folds it
  (``operations.precopy``);
* the kept ``<uuid>_resize`` of a confirmed overlay resize whose fold was
  left to recovery, marked as read by the running guest
  (``operations.overlay``).

Migrated, the guest would read the pristine image where the layer held
its data.  Nothing of Nova's may touch the chain until recovery has
completed the fold: this says whether that is so, and what to run.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from resizedriver.layout import IN_USE_MARKER, InstanceLayout
from resizedriver.model import GROWABLE, role_for_name
from resizedriver.operations.precopy import LAYER

_LAYER_FILE = re.compile(
    r'^(?P<disk>.+)' + re.escape(LAYER) + r'(?:\.[0-9]+)?$')


def reason(inst: InstanceLayout) -> Optional[str]:
    """One line naming the layer the disks of ``inst`` read that Nova
    cannot resolve as its own, and the fix; None when there is none."""
    found = _precopy_layers(inst)
    marker = os.path.join(inst.resize_dir, IN_USE_MARKER)
    if found:
        what = f'{found[0]} (a pre-copied layer not yet folded)'
    elif os.path.exists(marker):
        what = (f'{inst.resize_dir} (the kept source of a confirmed '
                f'resize, not yet folded)')
    else:
        return None
    return (f'the disks of {inst.uuid} read {what}, which Nova would '
            f'take for an image of its cache: run "resizedriver recover '
            f'{inst.uuid}" (nova-compute does at start) to complete the '
            f'fold first')


def _precopy_layers(inst: InstanceLayout) -> list[str]:
    if not os.path.isdir(inst.dir):
        return []
    return [inst.path(f) for f in sorted(os.listdir(inst.dir))
            if (match := _LAYER_FILE.match(f)) and
            role_for_name(match['disk']) in GROWABLE]

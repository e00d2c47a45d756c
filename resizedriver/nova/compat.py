"""What differs between the Nova releases resizedriver supports.

Nova 31 (2025.1) to 34 (2026.2): the rest of the adapter calls this
module where they differ and never branches on a version.  Each
difference is found from what the running Nova offers (a method, a
parameter), so a point release that backports one is right too; the
version only says whether it is in the supported range (a warning at
load if not).

=============================================  ====  ====  ====  ====
what                                           31    32    33    34
=============================================  ====  ====  ====  ====
``_get_guest_xml(old_guest=)``,                no    no    yes   yes
``_get_existing_guest_config()``: a revert's
XML keeps the firmware of the guest it
replaces
``finish_migration(share_info=)``,             no    no    no    yes
``finish_revert_migration(share_info=)``
``thread_pool_factory.spawn`` (else            no    no    no    yes
``utils.spawn``: 32-33 a futurist Future,
31 an eventlet GreenThread)
=============================================  ====  ====  ====  ====

The driver's own ``_get_guest_xml`` passes on whatever Nova's callers
give it, so it needs nothing here.
"""

from __future__ import annotations

import concurrent.futures
import inspect
from importlib import metadata
from typing import Any, Callable

from nova.virt.libvirt import driver as libvirt_driver
from oslo_log import log as logging

LOG = logging.getLogger(__name__)

#: the Nova releases (major versions) the tests run against or cover
SUPPORTED = (31, 34)
#: what operators know them by
SUPPORTED_NAMES = '31 (2025.1) to 34 (2026.2)'


def takes(func: Callable[..., Any], name: str) -> bool:
    """Whether ``func`` has a parameter ``name``."""
    return name in inspect.signature(func).parameters


_Driver = libvirt_driver.LibvirtDriver
#: Nova 33+ builds a revert's XML from the guest it replaces
_OLD_GUEST = takes(_Driver._get_guest_xml, 'old_guest') and \
    hasattr(_Driver, '_get_existing_guest_config')


def old_guest(driver: Any, instance: Any) -> dict[str, Any]:
    """The ``old_guest`` keyword of a revert's ``_get_guest_xml``, as
    Nova's own ``finish_revert_migration`` passes it (33+: the defined
    guest's config, whose UEFI loader and NVRAM the new XML keeps), or
    none where Nova has no such thing (31, 32: its own revert passes
    none either)."""
    if not _OLD_GUEST:
        return {}
    return {'old_guest': driver._get_existing_guest_config(instance)}


def share_info(method: Callable[..., Any], info: Any) -> dict[str, Any]:
    """The ``share_info`` keyword for Nova's ``method`` where it takes
    one (34's ``finish_migration`` and ``finish_revert_migration``), else
    none: the compute manager of 31-33 hands those methods no shares
    (``info`` is then None)."""
    return {'share_info': info} if takes(method, 'share_info') else {}


def nova_version() -> str:
    """The installed Nova's version, as pip has it."""
    return metadata.version('nova')


def warn_if_unsupported(version: str) -> bool:
    """Log one warning if Nova ``version`` is not a supported release;
    True if it is."""
    try:
        major = int(version.split('.')[0])
    except ValueError:
        major = 0
    if SUPPORTED[0] <= major <= SUPPORTED[1]:
        return True
    LOG.warning('resizedriver supports Nova %s; this is Nova %s, which '
                'it was not tested with: resizes may fail',
                SUPPORTED_NAMES, version)
    return False


warn_if_unsupported(nova_version())


def spawn(func: Callable[..., Any], *args: Any) -> Any:
    """Run ``func`` beside the service the way this Nova runs its own
    background work (its executor: green threads under eventlet), as a
    future (``result(timeout)``): 34's ``thread_pool_factory.spawn``;
    before it ``utils.spawn``, whose outcome goes into a future here (31
    returns an eventlet GreenThread, 32 and 33 a futurist Future)."""
    try:
        from nova import thread_pool_factory
    except ImportError:
        pass
    else:
        return thread_pool_factory.spawn(func, *args)
    from nova import utils
    future: concurrent.futures.Future = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(func(*args))
        except BaseException as e:  # noqa: B036 - the caller's to see
            future.set_exception(e)
    utils.spawn(run)
    return future

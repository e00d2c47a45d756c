"""The operations as the plan modules see them.

A plan module (``live``, ``overlay``, ``precopy``) builds the steps of
the operations that run it (``migrate.MigrateDiskAndPowerOff``,
``finish.FinishMigration``, ``confirm.ConfirmMigration``), which find it
in the registry (``plans``).  Were the plan modules to name those
classes, even for the type checker only, each would import the modules
that import it.  They name these protocols instead: what of an operation
a plan uses, and no more.  The registry's ``Builders`` are typed with
them, so the type checker holds each operation (and an integration's
subclass) to its protocol where it hands itself to its plan.  Nothing
here imports an operation or a plan.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol

if TYPE_CHECKING:
    from resizedriver.env import HostEnv
    from resizedriver.guest import Guest
    from resizedriver.layout import InstanceLayout
    from resizedriver.model import Destination, DiskFile, Flavor, Topology
    from resizedriver.plan import Step
    from resizedriver.qemuimg import QemuImg
    from resizedriver.record import ResizeRecord
    from resizedriver.summary import Summary
    from resizedriver.transport import Prepare, Transport


class MigrateOp(Protocol):
    """The source half (``migrate.MigrateDiskAndPowerOff``)."""

    env: HostEnv
    inst: InstanceLayout
    dest: Destination
    dest_inst: InstanceLayout
    transport: Transport
    topology: Topology
    new_flavor: Flavor
    disks: list[DiskFile]
    source_xml: str
    backing_to_copy: list[str]
    live_revert: str
    makes_swap: bool
    summary: Summary
    facts: dict[str, Any]

    @property
    def guest(self) -> Guest: ...

    @property
    def record(self) -> ResizeRecord: ...

    def write_record(self, path: Optional[str] = None) -> None: ...

    def remove_record(self) -> None: ...

    def copy_all(self, pairs: list[tuple[str, str]],
                 prepare: Optional[dict[str, Prepare]] = None
                 ) -> None: ...

    def copy_backing(self) -> None: ...

    def copy_disks(self) -> None: ...

    def remove_copied_backing(self) -> None: ...

    def create_dest_dir(self) -> None: ...

    def remove_dest_dir(self) -> None: ...

    def move_to_resize(self) -> None: ...

    def move_back(self) -> None: ...

    def power_off_step(self) -> None: ...

    def power_on_again(self) -> None: ...


class FinishOp(Protocol):
    """The destination half (``finish.FinishMigration``)."""

    env: HostEnv
    record: ResizeRecord
    dest: InstanceLayout
    qemu_img: QemuImg
    power_on: bool
    #: the disks as copied, each with what it becomes, and the resized
    #: guest's disks
    copied: list[DiskFile]
    pairs: list[tuple[DiskFile, DiskFile]]
    final: list[DiskFile]

    def steps_after_checks(self) -> list[Step]: ...

    def check_disks(self) -> None: ...

    def write_disk_info(self) -> None: ...

    def rbd_size(self, disk: DiskFile) -> int: ...

    def check_source_definition(self) -> None: ...

    def plug_vifs(self) -> None: ...

    def define(self) -> None: ...

    def define_persistent(self) -> None: ...

    def undefine(self) -> None: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ConfirmOp(Protocol):
    """Confirm, on the source (``confirm.ConfirmMigration``)."""

    env: HostEnv
    record: ResizeRecord

    def undefine(self) -> None: ...

    def delete_resize_dir(self) -> None: ...

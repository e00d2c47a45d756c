"""Errors the engine raises.

Two families matter to callers: ``ResizeRefused`` is raised before anything
was touched (the Nova adapter turns it into ``InstanceFaultRollback`` so the
instance goes back to ACTIVE); ``ResizeFailed`` means a step failed and the
plan was rolled back (its message says whether the rollback was complete).
"""

from __future__ import annotations


class ResizeDriverError(Exception):
    """Base class; the message is meant for an operator, not a developer."""


class ResizeRefused(ResizeDriverError):
    """The request cannot work; nothing was changed."""


class Upstream(ResizeRefused):
    """The chooser sent the resize to Nova's own path (rule 1b), before
    anything was touched: an integration that has that path runs it,
    others refuse (the message says why)."""


class DiskShrinkRefused(ResizeRefused):
    pass


class UnsupportedDisk(ResizeRefused):
    pass


class InsufficientSpace(ResizeRefused):
    pass


class DestinationUnreachable(ResizeRefused):
    pass


class ResizePending(ResizeRefused):
    pass


class UnsafePath(ResizeRefused):
    pass


class NotFound(ResizeDriverError):
    pass


class CommandFailed(ResizeDriverError):
    """An external command (qemu-img, ssh, rsync, ...) failed."""


class ResizeFailed(ResizeDriverError):
    """A step failed; ``rolled_back`` tells whether every undo succeeded."""

    def __init__(self, message: str, step: str, rolled_back: bool) -> None:
        super().__init__(message)
        self.step = step
        self.rolled_back = rolled_back


class UnreadableImage(UnsupportedDisk, CommandFailed):
    """qemu-img could not inspect a disk: malformed, not in the format it
    claims, or over the resource limits inspection runs under.

    It is both a refusal (nothing was touched; an untrusted image is turned
    away) and a failed command, so callers catching either still do.
    """


class RecoveryNeeded(ResizeRefused):
    """An interrupted operation on the instance must be recovered first."""

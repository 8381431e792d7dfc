"""What can go wrong talking to vCenter, as errors an operator can act on."""

from __future__ import annotations

from engine.errors import SendenseError


class VCenterError(SendenseError):
    exit_code = 3


class LoginError(VCenterError):
    """The vCenter refused the user name or password (the message never holds the password)."""


class ThumbprintMismatch(VCenterError):
    """The certificate is not the pinned one: someone in the middle, or a re-issued cert."""


class VMNotFound(VCenterError):
    pass


class SnapshotError(SendenseError):
    exit_code = 4


class FullBackupNeeded(Exception):
    """Not an error: the disk's change tracking restarted, so only a full copy is correct."""

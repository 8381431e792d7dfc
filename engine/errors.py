"""One place for what can go wrong: every engine error knows its exit code and HTTP status.

A command turns an error into one line and ``exit_code``; a service answers it with
``{"detail": <the line>}`` and ``http_status``; a client of a service turns the status it
got back into the same class (``error_for_status``), so the CLI exits with the code the
error would have had had it happened in the CLI itself. The exit codes are a contract
for scripts (docs/contracts.md):

====  =========================================================  ====
exit  meaning                                                    HTTP
====  =========================================================  ====
1     unexpected internal error                                  500
2     bad input (flags, a request body, a file)                  422
3     vCenter refused or failed (login, thumbprint, VM absent)   502
4     VMware snapshot could not be taken or removed              502
5     copy failed (NBD read, write or flush)                     500
6     disk source failed (nbdkit, VDDK)                          500
7     no such thing (backup, repository, vCenter, VM context)    404
8     conflict (already running, not running, already there)    409
9     the API token was refused                                  401
10    a service could not be reached (hub, node, no free port)   503
11    a service behind the one asked refused (node said no)      502
12    too little free space for what must be written             507
13    a restore point is damaged (``verify`` found bad bytes)      409
130   cancelled (SIGINT or SIGTERM)
====  =========================================================  ====
"""

from __future__ import annotations


class SendenseError(Exception):
    """An error an operator can act on: the message is the whole story, no traceback.

    A kind of error names its codes where it is declared:
    ``class NotFound(SendenseError, exit_code=7, http_status=404)``; a kind that names
    neither takes its parent's.
    """

    exit_code = 1
    http_status = 500

    def __init_subclass__(
        cls, *, exit_code: int | None = None, http_status: int | None = None, **kwargs: object
    ) -> None:
        super().__init_subclass__(**kwargs)
        if exit_code is not None:
            cls.exit_code = exit_code
        if http_status is not None:
            cls.http_status = http_status


class BadInput(SendenseError, exit_code=2, http_status=422):
    """Flags, a request body or a file that cannot be used as given."""


class VCenterError(SendenseError, exit_code=3, http_status=502):
    """vCenter refused or failed."""


class LoginError(VCenterError):
    """The vCenter refused the user name or password (the message never holds the password)."""


class ThumbprintMismatch(VCenterError):
    """The certificate is not the pinned one: someone in the middle, or a re-issued cert."""


class VMNotFound(VCenterError, http_status=404):
    """No VM at that inventory path or moref."""


class SnapshotError(SendenseError, exit_code=4, http_status=502):
    """The VMware snapshot could not be taken or removed."""


class CopyError(SendenseError, exit_code=5):
    """A disk copy failed; the message names the disk, offset and the NBD error."""


class SourceError(SendenseError, exit_code=6):
    """A disk source (nbdkit, VDDK) could not be started or died."""


class NotFound(SendenseError, exit_code=7, http_status=404):
    """No such backup, repository, vCenter or VM context."""


class Conflict(SendenseError, exit_code=8, http_status=409):
    """Already running, not running, already there."""


class Unauthorized(SendenseError, exit_code=9, http_status=401):
    """The API token was missing or wrong."""


class Unavailable(SendenseError, exit_code=10, http_status=503):
    """A service did not answer (refused, timed out, tunnel down), or has no room (ports)."""


class Refused(SendenseError, exit_code=11, http_status=502):
    """A service behind the one asked said no; the message carries its ``detail``."""


class NoSpace(SendenseError, exit_code=12, http_status=507):
    """Too little free space for what must be written; the message says how much is
    needed and how much is free."""


class Damaged(SendenseError, exit_code=13, http_status=409):
    """A restore point's bytes are not what was backed up; the message names the disk
    and the byte range."""


class Cancelled(SendenseError, exit_code=130, http_status=409):
    """Stopped on request (SIGINT, SIGTERM, a cancelled job)."""


# The class a client raises for an error answer: the most general one with that status.
_BY_STATUS: dict[int, type[SendenseError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    422: BadInput,
    400: BadInput,
    502: Refused,
    503: Unavailable,
    507: NoSpace,
}


def error_for_status(status: int, detail: str) -> SendenseError:
    """The engine error an HTTP error answer stands for (unknown statuses: exit code 1)."""
    return _BY_STATUS.get(status, SendenseError)(detail)

"""The one error type every command turns into a single line and an exit code."""

from __future__ import annotations


class SendenseError(Exception):
    """An error an operator can act on: the message is the whole story, no traceback.

    ``exit_code`` lets scripts tell kinds of failure apart (2 is bad input).
    """

    exit_code = 1


class BadInput(SendenseError):
    exit_code = 2

"""Errors a user can fix. The CLI prints them as one line and exits with code 2."""


class RobustmoError(Exception):
    """A problem with the user's input or environment, with a message saying how to fix it."""


class RunInterrupted(RobustmoError):
    """Ctrl-C: the run stopped cleanly after a checkpoint; the message says how to continue.
    The CLI exits with code 130."""

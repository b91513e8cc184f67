"""Errors a user can act on: one line of text and an exit code."""


class VaeError(Exception):
    """A failure at run time (exit code 1) whose message is shown as one line."""

    exit_code = 1

    def __init__(self, message: object = "") -> None:
        # Messages quote file names and other libraries' errors, which may hold line breaks.
        super().__init__(" ".join(str(message).split()))


class UsageError(VaeError):
    """The command was asked for something it cannot be asked for (exit code 2)."""

    exit_code = 2

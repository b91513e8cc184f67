"""Errors a user can act on: one line of text and an exit code."""


class VaeError(Exception):
    """A failure at run time (exit code 1) whose message is shown as one line."""

    exit_code = 1

    def __init__(self, message: object = "") -> None:
        # Messages quote file names and other libraries' errors, which may hold line breaks.
        super().__init__(" ".join(str(message).split()))


class Stopped(VaeError):
    """A signal stopped the command (exit code 128 + the signal's number): not an error, but no
    result either; every file it wrote is whole or absent."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


class UsageError(VaeError):
    """The command was asked for something it cannot be asked for (exit code 2)."""

    exit_code = 2


def out_of_memory(exc: BaseException) -> str | None:
    """For an allocation failure (a MemoryError, torch's "can't allocate memory" or "out of
    memory"), what it asked for in the user's terms; None for any other exception."""
    import re

    text = str(exc)
    if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text):
        return None
    asked = re.search(r"allocate ([0-9]+) bytes", text)
    size = f" ({int(asked.group(1)) / 2**30:,.1f} GiB asked for at once)" if asked else ""
    return f"not enough memory{size}"

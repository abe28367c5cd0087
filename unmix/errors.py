"""One exception type for mistakes a user can fix; the CLI turns it into one line and exit code 2."""


class UnmixError(ValueError):
    """A user-facing error: the message says what is wrong and what is valid."""

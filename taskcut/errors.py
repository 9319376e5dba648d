"""The one error type users see: a message that fits on one line and says what to change."""


class TaskcutError(Exception):
    """A problem with the user's input or files; the CLI prints it as one line and exits 2."""

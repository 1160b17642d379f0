"""The project's user-facing error: one line naming the file (and row or line) and what was expected."""


class DataError(ValueError):
    """Bad input data, a bad download or a bad checkpoint; the message is meant for the user as is."""

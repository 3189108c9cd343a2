"""The one exception type for problems with a user's input."""


class PointsegError(Exception):
    """An input problem that a person can fix: a bad file, value or setting.

    The message names the file, field or value that was found, and what was expected. The CLI
    prints it without a traceback and exits with status 1.
    """

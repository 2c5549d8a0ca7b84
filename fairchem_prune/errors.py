"""The one exception type for user-facing failures (bad input, bad configuration)."""


class PruneError(Exception):
    """A problem with the user's input. Its message is one line that names the problem and the fix;
    the command-line tools print it and exit with status 2."""

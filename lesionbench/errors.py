"""User-facing errors: the CLI prints the message as one line, with no traceback."""


class LesionBenchError(ValueError):
    """A problem the user can fix; the message names the file or key and the fix."""

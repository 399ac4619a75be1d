"""The one exception type the command line turns into a one-line message (exit code 2)."""


class UFineBenchError(Exception):
    """A problem with the user's input or files: reported in one line, never as a traceback."""

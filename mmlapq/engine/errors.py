class LAPQError(Exception):
    """A problem with the user's input: tools print it as one line
    ``error: ...`` (what is wrong and how to fix it) and exit non-zero."""

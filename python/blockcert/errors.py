"""The one exception type that reaches the user as a single line."""


class BlockCertError(Exception):
    """A problem with the user's input or environment: printed as one line, non-zero exit.

    The message says what is wrong, with what, and what to do about it.
    """

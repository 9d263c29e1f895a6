"""Errors that reach the user as one line and a non-zero exit code, never a traceback."""


class UserError(Exception):
    """Bad input from the user: the CLI prints ``error: <message>`` and exits with ``exit_code``.

    The message should say what was wrong and what to do instead, on one line.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class ConfigError(UserError):
    """An invalid setting in a config dataclass, raised by its ``__post_init__``.

    Not a ``ValueError`` on purpose: tyro turns a ``ValueError`` raised while it builds a
    config into a boxed help screen; this one passes through to the CLI's one-line error.
    """

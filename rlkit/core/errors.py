"""Errors that reach the user as one line and a non-zero exit code, never a traceback."""


class UserError(Exception):
    """Bad input from the user: the CLI prints ``error: <message>`` and exits with ``exit_code``.

    The message should say what was wrong and what to do instead, on one line.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RunStoppedError(UserError):
    """A run that cannot go on, with everything it saved intact (labels, its last checkpoint):
    exit code 1, and the command adds how to resume it."""

    #: The run lost the (Ray) cluster it ran on: resuming needs one up again.
    cluster_lost: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


def head_lost_message(head: str, why: str) -> str:
    """How a run says it lost the Ray cluster whose head's GCS is at ``head`` (``why``: what
    it saw), wherever it finds out (the worker pool, or the watch of a process Ray ended)."""
    return f"lost the Ray cluster: its head's GCS at {head} no longer answers ({why})"


class ConfigError(UserError):
    """An invalid setting in a config dataclass, raised by its ``__post_init__``.

    Not a ``ValueError`` on purpose: tyro turns a ``ValueError`` raised while it builds a
    config into a boxed help screen; this one passes through to the CLI's one-line error.
    """


def check_types(config: object, prefix: str = "--") -> None:
    """Raise a :class:`ConfigError` naming the flag of the first field of the dataclass
    ``config`` whose value does not fit its annotation (``--trainer.batch-size must be int,
    got 2.5``). The CLI's parser gives every field its type; a config built in Python may not.
    Call it before checks that compare values (a string would fail them with a TypeError)."""
    import dataclasses

    from rlkit.core.typecheck import describe, field_hints, fits

    hints = field_hints(type(config))
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        value, hint = getattr(config, field.name), hints[field.name]
        if not fits(value, hint):
            flag = prefix + field.name.replace("_", "-")
            raise ConfigError(f"{flag} must be {describe(hint)}, got {value!r}")


def check_settings(config: object, checks: dict[str, bool], prefix: str = "--") -> None:
    """Raise a :class:`ConfigError` naming the flag of the first setting whose check failed.

    ``checks`` maps field names of ``config`` to whether their values are valid; the flag is
    ``prefix`` plus the name with dashes (``--trainer.batch-size``). Every float field of a
    dataclass ``config`` must also be finite: no setting means anything at nan or inf. Call
    :func:`check_types` first, before ``checks`` are worked out from the values.
    """
    import dataclasses
    import math

    if dataclasses.is_dataclass(config):
        for field in dataclasses.fields(config):
            value = getattr(config, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                flag = prefix + field.name.replace("_", "-")
                raise ConfigError(f"{flag} must be a finite number, got {value!r}")
    for name, ok in checks.items():
        if not ok:
            flag = prefix + name.replace("_", "-")
            raise ConfigError(f"{flag} has an invalid value {getattr(config, name)!r}")


def save_traceback(exc: BaseException, header: str) -> str:
    """Write ``exc``'s traceback, under ``header`` (what was running), to a new file in the
    temp folder and return its path: the one-line error names the file, the user keeps the
    whole story without it filling the terminal."""
    import os
    import tempfile
    import traceback

    fd, path = tempfile.mkstemp(prefix="rlkit-error-", suffix=".log", text=True)
    with os.fdopen(fd, "w") as log:
        log.write(f"{header}\n\n{''.join(traceback.format_exception(exc))}")
    return path


def message_line(exc: BaseException) -> str:
    """The line of ``exc``'s message that says what went wrong ("" for none): the first, or
    for torch's ``load_state_dict`` report (a header, then one line per mismatch) the first
    mismatch."""
    lines = [line.strip() for line in str(exc).strip().splitlines()] or [""]
    if len(lines) > 1 and lines[0].startswith("Error(s) in loading state_dict"):
        return lines[1]
    return lines[0]


def error_summary(exc: BaseException, limit: int = 200) -> str:
    """``Type: message line`` (:func:`message_line`, cut at ``limit`` characters)."""
    first = message_line(exc)
    if len(first) > limit:
        first = first[: limit - 3] + "..."
    return type(exc).__name__ + (f": {first}" if first else "")

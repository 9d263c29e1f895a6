"""The ``rlkit`` command: ``rlkit GROUP COMMAND [options]``.

Each command lives in its own module under :mod:`rlkit.commands` (imported only when
run, so ``rlkit ird ...`` never loads Ray or the web stack) and exposes ``main(argv)``,
which parses its options with tyro from a config dataclass. Bad input anywhere surfaces
as :class:`rlkit.core.errors.UserError`: one line on stderr, a non-zero exit code.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from difflib import get_close_matches
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tyro.constructors import ConstructorRegistry

_Config = TypeVar("_Config")

# (group, command) -> (module:function, one-line help)
COMMANDS: dict[tuple[str, str], tuple[str, str]] = {
    ("prefs", "train"): (
        "rlkit.commands.prefs:train",
        "learn a reward from preferences and a policy on it",
    ),
    ("prefs", "eval"): (
        "rlkit.commands.prefs:evaluate",
        "evaluate a run's policy on the true reward",
    ),
    ("label", "serve"): ("rlkit.commands.label:serve", "serve the clip-labeling web UI for a run"),
    ("label", "export"): ("rlkit.commands.label:export", "export a run's labels as jsonl or csv"),
    ("vpn", "train"): ("rlkit.commands.vpn:train", "train a Value Prediction Network"),
    ("vpn", "eval"): ("rlkit.commands.vpn:evaluate", "evaluate a VPN run greedily"),
    ("ird", "lavaland"): ("rlkit.commands.ird:lavaland", "Inverse Reward Design on Lavaland"),
}


def usage() -> str:
    """The help text listing every ``rlkit GROUP COMMAND`` with its one-line description."""
    lines = ["usage: rlkit GROUP COMMAND [options]   (rlkit GROUP COMMAND --help for options)", ""]
    width = max(len(f"{group} {cmd}") for group, cmd in COMMANDS)
    for (group, cmd), (_, help_) in COMMANDS.items():
        lines.append(f"  rlkit {f'{group} {cmd}':<{width}}   {help_}")
    return "\n".join(lines)


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run ``rlkit GROUP COMMAND [options]`` (``argv``: the arguments after ``rlkit``, default
    ``sys.argv[1:]``); returns the exit code. A :class:`~rlkit.core.errors.UserError`, an
    OSError or an unforeseen exception is one line on stderr, not a traceback."""
    from rlkit.core.streams import fill_closed_streams

    fill_closed_streams()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):  # asked for: stdout, exit 0; missing: stderr, 2
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    groups = sorted({g for g, _ in COMMANDS})
    group = argv[0]
    if group not in groups:
        close = get_close_matches(group, groups, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; choose one of {', '.join(groups)}"
        return _fail(f"unknown command group {group!r}{hint}")
    cmds = sorted(c for g, c in COMMANDS if g == group)
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(usage(), file=sys.stdout if len(argv) >= 2 else sys.stderr)
        return 0 if len(argv) >= 2 else 2
    if (group, argv[1]) not in COMMANDS:
        close = get_close_matches(argv[1], cmds, n=1)
        hint = f"did you mean {close[0]}?" if close else f"choose one of {', '.join(cmds)}"
        return _fail(f"unknown command 'rlkit {group} {argv[1]}'; {hint}")
    target, _ = COMMANDS[(group, argv[1])]
    module_name, func_name = target.split(":")
    os.environ.setdefault("MUJOCO_GL", "egl")
    # rlkit's networks are small and its envs step in the same process: one intra-op
    # thread is faster than several fighting the envs (and each other) for the cores.
    # Set OMP_NUM_THREADS yourself to override (e.g. for big CNNs on a many-core machine).
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from rlkit.core.allocator import keep_freed_memory
    from rlkit.core.errors import UserError

    # Freed tensors' memory stays in the heap for the next step (rlkit.core.allocator);
    # RLKIT_MALLOC_DEFAULTS=1 keeps glibc's defaults.
    if os.environ.get("RLKIT_MALLOC_DEFAULTS", "0") in ("", "0"):
        keep_freed_memory()

    try:
        func = getattr(importlib.import_module(module_name), func_name)
        result = func(argv[2:])
    except UserError as exc:
        return _fail(str(exc), exc.exit_code)
    except BrokenPipeError as exc:
        if _stdout_closed_by_reader():  # `rlkit ... | head`: as any Unix tool, stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (exit's flush)
            return 128 + signal.SIGPIPE
        return _fail(f"{exc.strerror or exc}", 1)
    except OSError as exc:  # the machine said no (disk full, no permission, ...): one line
        where = f": {exc.filename}" if exc.filename else ""
        return _fail(f"{exc.strerror or exc}{where}", 1)
    except KeyboardInterrupt:
        print(
            "interrupted; what was already saved (checkpoints, labels) is intact", file=sys.stderr
        )
        return 130
    except Exception as exc:  # nobody foresaw it: one line here, the traceback in a file
        if os.environ.get("RLKIT_TRACEBACK", "0") not in ("", "0"):
            raise
        return _fail(unexpected_error_line(exc, argv), 1)
    return int(result or 0)


def _stdout_closed_by_reader() -> bool:
    """Whether stdout is a pipe whose reading end is closed (``rlkit ... | head`` once head
    has its lines): the write end then polls as an error."""
    import select

    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (captured, closed)
        return False


def unexpected_error_line(exc: BaseException, argv: list[str]) -> str:
    """The one line for an exception no check caught in ``rlkit *argv``: its type and the
    first line of its message, and the file (under the temp folder) that keeps the whole
    traceback. ``RLKIT_TRACEBACK=1`` lets the exception through instead, e.g. for a debugger."""
    import shlex

    from rlkit.core.errors import error_summary, save_traceback

    path = save_traceback(exc, shlex.join(["rlkit", *argv]))
    return (
        f"rlkit {argv[0]} {argv[1]} failed: {error_summary(exc)} (traceback in {path};"
        " RLKIT_TRACEBACK=1 shows it here)"
    )


def run_tyro(
    config_type: type[_Config],
    argv: list[str],
    prog: str,
    description: str | None = None,
    default: _Config | None = None,
) -> _Config:
    """Parse ``argv`` into ``config_type`` with tyro; ``--help`` prints and exits 0.
    ``default``: an instance whose values the flags not in ``argv`` take.

    A flag tyro cannot parse (unknown, missing value, wrong type, invalid choice) becomes a
    one-line :class:`~rlkit.core.errors.UserError` (exit 2) instead of tyro's boxed screen.
    """
    import contextlib
    import io

    import tyro

    from rlkit.core.errors import UserError

    empty = empty_path_argument(config_type, argv)
    if empty is not None:
        raise UserError(
            f"{prog}: {empty} is empty (an unset shell variable?); give a path, or . for"
            " the current directory"
        )
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return tyro.cli(
                config_type,
                args=argv,
                prog=prog,
                description=description,
                default=default,
                registry=_whole_numbers_registry(),
            )
    except SystemExit as exc:
        if not exc.code:  # --help
            sys.stderr.write(captured.getvalue())
            raise
        raise UserError(
            f"{tyro_error_line(captured.getvalue())} ({prog} --help lists the options)"
        ) from None


def parse_whole_number(text: str) -> int:
    """An integer option's value: ``1000000``, ``1_000_000`` or ``1e6`` (step and label counts
    are written that way in papers and scripts); ``2.5e5`` is 250000. A value that is not a
    whole number (``1e-3``, ``1.5``, ``abc``) raises ValueError naming it."""
    from decimal import Decimal, InvalidOperation

    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value.is_finite() and value.adjusted() >= 18:  # 1e999999999: a billion-digit int
        raise ValueError(f"{text!r} is out of range")
    if not value.is_finite() or value != value.to_integral_value():
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)


def whole_number_arg(text: str) -> int:
    """:func:`parse_whole_number` as an argparse ``type`` (the benchmark scripts' counts):
    argparse then says ``argument --steps: '1.5' is not a whole number``."""
    import argparse

    try:
        return parse_whole_number(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _whole_numbers_registry() -> ConstructorRegistry:
    """A tyro registry whose ``int`` options go through :func:`parse_whole_number`."""
    from tyro.constructors import (
        ConstructorRegistry,
        PrimitiveConstructorSpec,
        PrimitiveTypeInfo,
    )

    registry = ConstructorRegistry()

    @registry.primitive_rule
    def whole_numbers(info: PrimitiveTypeInfo) -> PrimitiveConstructorSpec | None:
        if info.type is not int:
            return None
        return PrimitiveConstructorSpec(
            nargs=1,
            metavar="INT",
            instance_from_str=lambda args: parse_whole_number(args[0]),
            is_instance=lambda x: isinstance(x, int) and not isinstance(x, bool),
            str_from_instance=lambda instance: [str(instance)],
        )

    return registry


def empty_path_argument(config_type: type, argv: list[str]) -> str | None:
    """The option (or ``DIR``) of ``config_type`` that ``argv`` gives an empty path, if any.

    ``Path("")`` is the current directory: ``--run-dir "$RUN"`` with ``RUN`` unset would
    train, export or write there instead of failing. A path option is a field typed ``Path``
    or named ``*_dir`` or ``output``; ``--flag ""`` and ``--flag=`` count, and an empty
    positional argument where the config has a positional path."""
    import dataclasses

    if not dataclasses.is_dataclass(config_type):
        return None
    flags: set[str] = set()
    positional = None
    for field in dataclasses.fields(config_type):
        kind = str(field.type)
        if "Path" in kind or field.name.endswith("_dir") or field.name == "output":
            if "Positional" in kind:
                positional = "DIR"
            else:
                flags.add("--" + field.name.replace("_", "-"))
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        if eq and not value and flag in flags:
            return flag
        if arg == "":
            previous = argv[i - 1] if i else ""
            if previous in flags:
                return previous
            if positional and not previous.startswith("-"):
                return positional
    return None


def tyro_error_line(screen: str) -> str:
    """The message of tyro's error screen, on one line, with its suggestion if any.

    The screen is a box whose sections are split by rules: the message comes first (its title
    sits in the top border, or, where rich draws without box characters, in a section of its
    own); an "Unrecognized options" screen lists the closest flags under "Perhaps you meant:".
    """
    boxed = "╭" in screen
    rows = []
    for line in screen.splitlines():
        row = line.strip()
        if not row.startswith(("╭", "╰")):
            rows.append(row.strip("│|").strip())
    sections: list[list[str]] = [[]]
    for row in rows:
        if row and set(row) <= set("─-+ "):  # a rule between sections
            sections.append([])
        elif row:
            sections[-1].append(row)
    sections = [section for section in sections if section][0 if boxed else 1 :]
    message = " ".join(sections[0]) if sections else "invalid arguments"
    # a boolean flag's row names both forms: "--early-termination, --no-early-termination"
    flags = [
        row.split()[0].rstrip(",")
        for row in rows
        if row[:3].startswith("--") and row[2:3].isalpha()
    ]
    if "Perhaps you meant:" in rows and flags:
        message += f"; did you mean {', '.join(dict.fromkeys(flags))}?"
    return message


if __name__ == "__main__":
    sys.exit(main())

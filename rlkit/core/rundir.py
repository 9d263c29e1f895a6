"""Run directories: where a job writes its config, logs, checkpoints and plots."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import itertools
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from rlkit.core.errors import UserError


def default_run_name(env_id: str, exp: str, seed: int) -> str:
    """``{env}__{exp}__{seed}__{unix time}``, with the env id made path-safe."""
    return f"{env_id.replace('/', '-')}__{exp}__{seed}__{int(time.time())}"


def prepare_run_dir(run_dir: str | Path, resume: bool) -> Path:
    """Create (or, on resume, check) a run directory.

    A fresh run refuses a directory that already holds a run, or anything else (a run whose
    config.json was lost still has labels and checkpoints), so nothing saved there is
    overwritten; ``--resume`` requires a run.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise UserError(f"--run-dir {path} is a file, not a directory; choose another --run-dir")
    has_run = (path / "config.json").is_file()
    if resume and not has_run:
        raise UserError(
            f"--resume: {path} holds no run (no config.json); drop --resume to start one"
        )
    if not resume and has_run:
        raise UserError(
            f"{path} already holds a run; pass --resume to continue it or choose another --run-dir"
        )
    if not resume and path.is_dir() and any(path.iterdir()):
        raise UserError(f"--run-dir {path} is not empty; a new run needs a new or empty directory")
    if resume:  # else it fails at its first save, or at its end, after all the work
        for name in RUN_FILES:
            if (path / name).is_dir():
                raise UserError(
                    f"{path / name} is a directory where the run writes a file: the run is"
                    " damaged; left as it is"
                )
        check_run_folders(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --run-dir {path}: {exc.strerror}") from None
    lock_run_dir(path)
    return path


#: Run directories this process trains in: ``resolved path -> an open descriptor of it``,
#: holding an exclusive ``flock`` (see :func:`lock_run_dir`).
_LOCKED: dict[str, int] = {}


def lock_run_dir(path: Path) -> None:
    """Claim ``path`` for this process until :func:`release_run_dirs` (or its exit, a kill -9
    included): a second trainer on the same run is refused in one line instead of
    interleaving its checkpoints, labels and logs with the first's.

    The lock is a ``flock`` on the directory itself, so nothing is written into the run (a
    refused ``--resume`` leaves it as it was). Readers (``prefs eval``, ``label serve``,
    ``label export``) do not take it: they may run beside the trainer. Taking it again in
    the same process is a no-op.
    """
    key = str(path.resolve())
    if key in _LOCKED:
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = _flock_holder(path)
        by = f" (PID {holder})" if holder is not None else ""
        raise UserError(
            f"{path} is in use: another rlkit process{by} is training this run; wait for it to"
            " end or stop it first"
        ) from None
    _LOCKED[key] = fd


def release_run_dirs() -> None:
    """Let go of every run directory this process claimed with :func:`lock_run_dir`."""
    while _LOCKED:
        os.close(_LOCKED.popitem()[1])  # closing the last descriptor releases the flock


def _flock_holder(path: Path) -> int | None:
    """The PID holding a ``flock`` on ``path`` (from ``/proc/locks``), where it can be read."""
    st = os.stat(path)
    inode = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode:
            return int(fields[4])
    return None


#: The folders a run writes in its directory (a preference run's; a VPN run's are a subset).
RUN_FOLDERS = ("checkpoints", "segments", "clips", "tb", "sb3")
#: Files a run writes at its top level, some only later (at its end, or when it resumes).
RUN_FILES = (
    "config.json",
    "metrics.csv",
    "progress.png",
    "summary.json",
    "provenance.jsonl",
    "model.pt",  # a VPN run's network, at its end
    "model_dqn.zip",
)


def check_run_folders(run_dir: Path, names: tuple[str, ...] = RUN_FOLDERS) -> None:
    """Refuse, in one line, a run directory where one of the folders ``names`` is a file."""
    for name in names:
        if (run_dir / name).exists() and not (run_dir / name).is_dir():
            raise UserError(
                f"{run_dir / name} is not a directory: the run is damaged; left as it is"
            )


def check_output_file(
    output: str | Path, run_dir: str | Path, flag: str = "--output", force: bool = False
) -> None:
    """Refuse, before any work, an output file that would replace something already in the
    run directory (its store, config or checkpoints; a new file there is fine), that already
    exists elsewhere (unless ``force``: ``--force`` replaces it), or that cannot be written
    (its folder is missing or read-only)."""
    output = Path(output)
    target, root = output.resolve(), Path(run_dir).resolve()
    # the run's own names, there or not: its store's SQLite companions (-wal, -shm, -journal)
    # appear and vanish as the store is used, its folders belong to the run, and some of its
    # files are written only at its end
    inside = target.relative_to(root).parts if root in target.parents else ()
    owned = bool(inside) and (
        inside[0].startswith("store.sqlite")
        or (len(inside) > 1 and inside[0] in RUN_FOLDERS)
        or (len(inside) == 1 and inside[0] in RUN_FILES)
    )
    if owned or (target.exists() and (target == root or root in target.parents)):
        raise UserError(
            f"{flag} {output} would overwrite a file of the run in {run_dir}; write elsewhere"
        )
    if target.is_dir():
        raise UserError(f"{flag} {output} is a directory; give a file name")
    if output.is_file() and not force:  # a device or a pipe (/dev/stdout) is written to as is
        raise UserError(f"{flag} {output} already exists; pass --force to replace it")
    if target.exists() and not target.is_file():
        if not os.access(target, os.W_OK):
            raise UserError(f"cannot write {flag} {output}: it is not writable")
        return
    if not takes_new_files(target.parent):
        raise UserError(f"cannot write {flag} {output}: its folder is missing or read-only")


def takes_new_files(folder: Path) -> bool:
    """Whether a file can be made in ``folder``: one is made and removed at once, since
    permission bits do not tell (root passes every access() check, yet /proc takes none)."""
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".rlkit-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


@contextlib.contextmanager
def atomic_output(output: str | Path, flag: str = "--output") -> Iterator[TextIO]:
    """A text stream that reaches ``output`` only once it is complete, through
    :func:`~rlkit.core.checkpoint.atomic_write_bytes`: an error half-way (or a kill) leaves
    whatever ``output`` held before as it was. A device or a pipe (``/dev/stdout``) is
    written to as it is."""
    from rlkit.core.checkpoint import atomic_write_bytes

    output = Path(output)
    buffer = io.StringIO(newline="")
    try:
        yield buffer
        if output.exists() and not output.is_file():
            with open(output, "w", newline="") as out:
                out.write(buffer.getvalue())
        else:
            atomic_write_bytes(output, buffer.getvalue().encode())
    except OSError as exc:
        raise UserError(f"cannot write {flag} {output}: {exc.strerror or exc}") from None


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


RESOLVED = "resolved"
"""The section of a run's ``config.json`` that holds what its settings left to the env
(None or ``auto``) came to: :func:`rlkit.loops.preference.resolved_settings` for a preference
run, :func:`agents.vpn.trainer.resolved_settings` for a VPN one. Derived, so loading drops it."""


def save_config(run_dir: Path, config: Any) -> None:
    """``run_dir/config.json``, written whole or not at all (a temporary file renamed)."""
    from rlkit.core.checkpoint import atomic_write_bytes

    text = json.dumps(_jsonable(config), indent=2) + "\n"
    atomic_write_bytes(Path(run_dir) / "config.json", text.encode())


def save_longer_steps(run_dir: Path, steps: int) -> None:
    """Record in ``config.json`` that a resumed run now goes on to ``steps`` (a longer
    ``--steps``), once its checkpoint has loaded: a later ``--resume`` goes on to it, and a
    shorter ``--steps`` is refused. Every other setting is kept as saved. A run directory
    without a config.json (a loop driven from Python) has nothing to record."""
    if not (Path(run_dir) / "config.json").is_file():
        return
    data = load_config(run_dir)
    if data.get("steps") != steps:
        save_config(run_dir, {**data, "steps": steps})


def load_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json`` as a dict.

    Raises:
        UserError: there is no config.json, or it is not a JSON object.
    """
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise UserError(f"{run_dir} holds no run (no config.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not text (not UTF-8): not a config rlkit wrote") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} holds a JSON {type(data).__name__}, not a config object")
    return data


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) config dataclass from :func:`save_config`'s JSON.

    Unknown keys are an error (a config from another version should not half-load).
    """
    import typing

    from rlkit.core.typecheck import describe, field_hints, fits

    hints = field_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise UserError(f"config has unknown fields {sorted(unknown)} for {cls.__name__}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if not fits(value, hint, from_json=True):
            raise UserError(
                f"config field {name!r} of {cls.__name__} is {value!r}, not {describe(hint)}"
            )
        candidates = [hint, *typing.get_args(hint)]
        sub = next((c for c in candidates if dataclasses.is_dataclass(c)), None)
        if sub is not None and isinstance(value, dict):
            value = dataclass_from_dict(sub, value)
        elif Path in candidates and isinstance(value, str):
            value = Path(value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def first_unused(path: Path, start: int = 2) -> Path:
    """``path`` if nothing is there, else the first free ``STEM-{start}.EXT``, ``STEM-{start+1}.EXT``, ...
    (so an earlier file is never replaced)."""
    candidates = (path.with_stem(f"{path.stem}-{i}") for i in itertools.count(start))
    return path if not path.exists() else next(p for p in candidates if not p.exists())


RESUME_FLAGS = frozenset({"--resume", "--run-dir", "--steps"})
"""The flags ``--resume`` lets change; every other setting comes from the run's config.json."""


def _lookup(config: Any, path: list[str]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def given_flags(argv: list[str]) -> set[str]:
    """The ``--flags`` in ``argv`` (``--flag=value`` counts as ``--flag``)."""
    return {a.split("=", 1)[0] for a in argv if a.startswith("--")}


def changed_settings(
    argv: list[str],
    given: Any,
    saved: Any,
    allowed: frozenset[str] = RESUME_FLAGS,
    show_new: bool = False,
) -> dict[str, str]:
    """The flags in ``argv``, other than those in ``allowed``, whose value in ``given`` (the
    config parsed from ``argv``) differs from ``saved``, in order, each mapped to how to name
    the change: ``--flag (saved: OLD)``, or with ``show_new`` ``--flag NEW (saved: OLD)``;
    nested settings are dotted flags (``--policy.learning-rate``), booleans may be negated
    (``--no-early-termination``). A flag that repeats the saved value is not a change."""
    changed: dict[str, str] = {}
    for flag in sorted(given_flags(argv) - allowed):
        path = flag[2:].replace("-", "_").split(".")
        try:
            if path[-1].startswith("no_") and not hasattr(_lookup(given, path[:-1]), path[-1]):
                path[-1] = path[-1][3:]
            new, old = _lookup(given, path), _lookup(saved, path)
        except AttributeError:
            changed[flag] = flag
            continue
        if _jsonable(new) != _jsonable(old):
            shown = f"{flag} {_jsonable(new)}" if show_new else flag
            changed[flag] = f"{shown} (saved: {_jsonable(old)})"
    return changed


def refuse_changes_on_resume(
    argv: list[str], given: Any, saved: Any, allowed: frozenset[str] = RESUME_FLAGS
) -> None:
    """Refuse, in one line, flags in ``argv`` that would change a resumed run's saved settings.

    ``--resume`` continues a run with the settings in its config.json, so a flag that changes
    one of them (other than those in ``allowed``, e.g. a longer ``--steps``) would be silently
    ignored; see :func:`changed_settings`.
    """
    changed = changed_settings(argv, given, saved, allowed)
    if changed:
        shown = allowed - {"--resume", "--run-dir"}
        allowed_flags = ", ".join(sorted(f for f in shown if not f.startswith("--no-")))
        raise UserError(
            "--resume continues a run with its saved settings; only "
            f"{allowed_flags} may change, not {', '.join(changed.values())}"
        )

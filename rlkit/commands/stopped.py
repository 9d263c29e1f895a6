"""The one line a run that stopped mid-way ends with: what it saved and how to go on.

Light on purpose (no torch, no Ray): the watch process that prints it for a run Ray ended
(:mod:`rlkit.commands.exit_watch`) has it imported before the run can end.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.errors import UserError
from rlkit.store import stored_label_count


def interrupted_line(run_dir: Path, what: str = "interrupted") -> str:
    """What an interrupted (or stopped, ``what``) run left, and how to go on."""
    labels = stored_label_count(run_dir)
    shown = shlex.quote(str(run_dir))  # a command to paste: quoted where it has spaces
    try:
        step = CheckpointManager(run_dir).latest().name
    except UserError:
        return (
            f"{what} before the first checkpoint; the {labels} labels stored so far are kept:"
            f" `rlkit prefs train --run-dir {shown} --resume` starts the run again from step 0"
            " with them"
        )
    return (
        f"{what}; checkpoint {step} and all {labels} stored labels are saved: "
        f"`rlkit prefs train --run-dir {shown} --resume` continues"
    )


def stopped_line(message: str, run_dir: Path, lost_address: str | None = None) -> str:
    """The one line for a run that ``message`` stopped mid-run: what it saved and how to go
    on. ``lost_address``: the run lost the Ray cluster it joined at this ``--ray-address``."""
    line = f"error: {message}; {interrupted_line(run_dir, 'stopped')}"
    if lost_address is not None:
        form = "ray://HOST:PORT" if lost_address.startswith("ray://") else "HOST:PORT"
        line += f" once the cluster is up again (a new head: add --ray-address {form})"
    return line

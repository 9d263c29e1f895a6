"""MuJoCo's warnings as Python warnings, without the one Gymnasium's own model files trigger.

MuJoCo's default warning handler prints to stdout and appends to ``MUJOCO_LOG.TXT`` in the
working directory. Gymnasium's HalfCheetah model sets its total mass with the compiler
attribute ``settotalmass``, which MuJoCo 4 (the pinned release) reports as deprecated each
time the model is compiled: every HalfCheetah env a run makes (its training envs, evaluation,
clip rendering) would print that line and leave a log file in the user's directory. The mass
is still set (the bodies weigh 14 in all), so that message is dropped; any other MuJoCo
warning (a simulation going unstable, say) becomes a ``RuntimeWarning``, shown once per
message.
"""

from __future__ import annotations

import warnings

#: Messages of the model files Gymnasium ships, not of anything the user can act on.
_KNOWN = ("compiler attribute 'settotalmass' is deprecated",)


def _warn(message: str) -> None:
    if not message.startswith(_KNOWN):
        warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)


def route_mujoco_warnings() -> None:
    """Install the handler, unless one is installed already (ours, or the user's own)."""
    import mujoco

    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_warn)

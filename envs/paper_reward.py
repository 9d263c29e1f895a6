"""The true reward of Christiano et al.'s (2017) MuJoCo tasks, on Gymnasium's v5 envs.

The paper's tasks changed Gym's rewards in two ways (Appendix A.1; its code, rl-teacher,
``rl_teacher/envs.py``): the torque (control) penalty is gone, since a person watching a clip
cannot see torques; and where the robot can fall (Hopper, Walker2d, Ant), episodes never end
early and a bonus for the torso's height takes the place of the termination and of the alive
bonus, so that a fallen robot earns less at every step, by how far it fell. Gymnasium's v5 envs
without early termination instead pay a healthy bonus of 1 per step that drops to 0 the moment
the torso leaves its healthy range: a step in the observations that a learned reward has to
find, against a slope in the paper's version.

Per step, with ``forward`` Gymnasium's ``info["reward_forward"]`` (forward velocity) and ``z``
the torso's height (``qpos``):

- Hopper: ``forward + z``
- Walker2d: ``forward + z - 1``
- Ant: ``forward + z - 1.2``
- HalfCheetah, Swimmer: ``forward``

Gymnasium's own reward stays in ``info["reward_gymnasium"]``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, SupportsFloat

import gymnasium as gym

from rlkit.core.errors import UserError


@dataclasses.dataclass(frozen=True)
class PaperTask:
    """How one env's paper reward is computed: ``forward + qpos[height_index] - offset``, or
    ``forward`` alone when ``height_index`` is None."""

    height_index: int | None
    offset: float = 0.0


PAPER_TASKS: dict[str, PaperTask] = {
    "Hopper": PaperTask(1, 0.0),
    "Walker2d": PaperTask(1, 1.0),
    "Ant": PaperTask(2, 1.2),
    "HalfCheetah": PaperTask(None),
    "Swimmer": PaperTask(None),
}


def paper_task(env_id: str) -> PaperTask:
    """The paper reward of ``env_id`` (a v5 id such as ``Walker2d-v5``); a one-line
    :class:`UserError` for any other env."""
    name, _, version = env_id.partition("-v")
    if name not in PAPER_TASKS or version != "5":
        known = ", ".join(f"{n}-v5" for n in PAPER_TASKS)
        raise UserError(f"--env-reward paper is defined for {known}; not for {env_id}")
    return PAPER_TASKS[name]


class PaperReward(gym.Wrapper):
    """Replaces the env's reward with the paper's (module docstring); goes directly around
    ``gym.make``'s env, with ``terminate_when_unhealthy=False`` where the env has it."""

    def __init__(self, env: gym.Env, task: PaperTask) -> None:
        super().__init__(env)
        self.task = task
        self._data = env.unwrapped.data  # type: ignore[attr-defined]  (MuJoCo's MjData)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """The env's step with the paper's reward; Gymnasium's goes to
        ``info["reward_gymnasium"]``."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["reward_gymnasium"] = reward
        paper = float(info["reward_forward"])
        if self.task.height_index is not None:
            paper += float(self._data.qpos[self.task.height_index]) - self.task.offset
        return obs, paper, terminated, truncated, info

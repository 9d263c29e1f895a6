"""Configuration of a preference-learning run; the ``rlkit prefs train`` CLI is generated from it."""

from __future__ import annotations

import dataclasses
import json
from difflib import get_close_matches
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from agents.presets import PolicyConfig
from rlkit.core.errors import ConfigError, UserError, check_settings, check_types
from rlkit.core.rundir import RESOLVED
from rlkit.rewards.teachers import TeacherConfig
from rlkit.rewards.trainer import TrainerConfig

if TYPE_CHECKING:
    from envs import EnvSpec

SAVED_BEFORE: dict[str, object] = {
    "reward_hidden": (64, 64),
    "reward_normalize_inputs": False,
    "env_reward": "gymnasium",
}
"""What runs saved before a setting existed used for it."""
SAVED_POLICY_BEFORE: dict[str, object] = {"normalize_obs": False}
"""The same for the policy's settings (``--policy.*``)."""


#: The fields of :class:`PrefsConfig` that are groups of settings (config dataclasses).
SETTINGS_GROUPS = ("teacher_model", "trainer", "policy")


@dataclasses.dataclass(frozen=True)
class PrefsConfig:
    """Reward learning from preferences (Christiano et al. 2017) with a policy trained on it."""

    env: str = "Hopper-v5"
    """Gymnasium id: a MuJoCo v5 task (TRPO) or an ALE Atari game such as ALE/Pong-v5 (A2C)."""
    steps: int = 600_000
    """Policy environment steps (over all envs), rounded up to whole rollouts. The default takes
    4-6 minutes on 2 cores for Hopper (README, Quickstart); the paper used 1,000,000 (MuJoCo)
    and 10,000,000 (Atari)."""
    labels: int = 700
    """Label budget: comparisons asked for over the whole run (the paper's 700 for MuJoCo)."""
    initial_labels: int | None = None
    """Labels asked for up front, on segments of the initial random policy, with the reward
    model pretrained on them before RL starts; default 25% of --labels (MuJoCo, the paper's),
    500 (Atari). With 700 labels, 70 did better on Walker2d, worse on HalfCheetah and about as
    well on Hopper (BENCHMARKS.md, "Fewer labels up front", "... on fresh seeds")."""
    label_decay: float | None = None
    """c in the label rate c / (T + c) after the initial labels, T the policy steps so far;
    default 2e6 (MuJoCo), 5e6 (Atari). Larger spreads the labels more evenly over the run."""
    seed: int = 0
    """Seeds the envs, the networks, the teacher and query sampling."""
    run_dir: Path | None = None
    """Where everything is written; default runs/{env}__prefs__{seed}__{time}."""
    resume: bool = False
    """Continue the run in --run-dir from its latest checkpoint (every stored label is kept)."""
    n_envs: int | None = None
    """Parallel environments; default 4 for MuJoCo, 8 for Atari."""
    segment_seconds: float = 1.5
    """MuJoCo segment length in simulated seconds (steps = seconds / env dt)."""
    atari_segment_steps: int = 25
    """Atari segment length in agent steps."""
    pool_size: int | None = None
    """Recent segments kept as query candidates; default 1000 (MuJoCo), 300 (Atari)."""
    ensemble_size: int = 3
    """Reward predictors in the ensemble (K)."""
    backbone: str = "auto"
    """Reward-model backbone from the rlkit.nn registry; auto: mlp for vectors, nature_cnn for pixels."""
    backbone_kwargs: str = ""
    """Backbone settings as a JSON object, e.g. '{"channels": [16, 16, 16], "features_dim": 64}'
    for a nature_cnn small enough to train on a CPU, or '{"hidden": [256, 256]}' for the mlp."""
    reward_hidden: tuple[int, ...] = (64,)
    """Hidden layers of the mlp reward model on the observation, before the head's hidden layer
    of 64 on those features and the action: two layers of 64 in all, the paper's network (runs
    saved before 2026-12-01 had (64, 64)). A "hidden" in --backbone-kwargs takes precedence."""
    dropout: float = 0.0
    """Dropout in each reward predictor's head."""
    reward_normalize_inputs: bool = True
    """Standardize the reward model's vector observations per dimension, with the mean and
    std of every labelled segment's steps, refreshed before each training round (on by
    default since 2026-12-02; pixels are never standardized; --no-reward-normalize-inputs
    turns it off)."""
    query_strategy: Literal["disagreement", "uniform", "entropy"] = "disagreement"
    """How pairs are chosen: ensemble disagreement (the paper's), uniform, or entropy."""
    oversample: int = 10
    """Candidate pairs scored per query asked (disagreement and entropy)."""
    teacher: Literal["synthetic", "human", "mixed"] = "synthetic"
    """Who answers: the synthetic teacher, people through the labeling UI, or both."""
    synthetic_share: float = 0.5
    """With --teacher mixed: the share of queries the synthetic teacher answers."""
    reward_scale: float | None = None
    """Std of the learned reward handed to the policy (over recent segments' steps); default 1 (MuJoCo), 0.05 (Atari)."""
    round_steps: int | None = None
    """Policy steps between reward-learning rounds; default whole rollouts adding up to at least 8192 steps
    (two TRPO updates; 205 A2C updates on Atari)."""
    policy_reset_at: float = 0.0
    """Re-initialise the policy and its critic once, when this fraction of --steps is done,
    keeping the reward model, labels and segment pool (0: never). A policy that learned on the
    early, rough reward can stay stuck where that reward led it (the primacy bias of Nikishin et
    al. 2022). On Hopper, 0.3 lifted a stuck seed from 0.25-0.48 to 0.76 of RL on the true
    reward but cost the others (BENCHMARKS.md), so it is off by default."""
    policy_reset_keep_hidden: bool = False
    """With --policy-reset-at: keep the trained feature extractor and hidden layers of the policy
    and critic; only the output layers and the action std start afresh."""
    checkpoint_every: int = 50_000
    """Policy steps between checkpoints (one is always written at the end)."""
    eval_episodes: int = 5
    """Episodes for the before/after evaluation on the true reward."""
    early_termination: bool = False
    """MuJoCo: end episodes when the robot falls (off, as in the paper: a fall shows in the reward)."""
    env_reward: Literal["gymnasium", "paper"] = "gymnasium"
    """MuJoCo: the true reward (teacher, evaluation, RL baseline). gymnasium: the env's own;
    paper: Christiano et al.'s tasks (rl-teacher's envs): forward progress, no torque penalty,
    and for Hopper, Walker2d and Ant the torso's height instead of a healthy bonus of 1 that
    drops to 0 on a fall (envs/paper_reward.py)."""
    torch_threads: int = 1
    """Torch intra-op threads. One is fastest for the small per-step forward passes here and
    does not fight the envs for cores; raise it for big CNNs on a machine with spare cores."""
    reward_learner: Literal["process", "thread"] = "process"
    """Where the reward model trains while the policy runs: a child process (default) or a
    thread of this one, whose Python competes with the policy's for the GIL (TRPO ran ~12%
    slower beside a busy one vs ~4%). Both train identically; mean-teacher training uses a
    thread."""
    ray_workers: int = 0
    """Step the envs on this many Ray worker actors (0: in this process)."""
    ray_env_processes: int = 1
    """With --ray-workers: each worker steps its envs in this many processes of its own and
    reserves as many CPUs (one message per process per env step, observations in shared
    memory): fewer, bigger workers on many-core nodes. 1: in the worker's process."""
    ray_call_timeout: float = 600.0
    """With --ray-workers: seconds a call to a worker (a step; with worker rollouts, a whole
    rollout) may take before the worker is taken for hung (an env that never returns, a
    stopped process, a frozen node), killed and re-created. Through --ray-compiled's graph a
    step times out after Ray's 10 s first; across nodes the calls are all there is."""
    ray_address: str | None = None
    """Ray cluster to use with --ray-workers: auto, HOST:PORT, or unset for a local instance."""
    ray_compiled: bool = False
    """With --ray-workers: step the workers through a compiled Ray graph (workers on this node
    only). Round trips are 3-6x cheaper when every process has a core of its own, but much
    slower when the cores are oversubscribed (the graph polls)."""
    ray_compress: Literal["auto", "on", "off"] = "auto"
    """With --ray-workers: compress the workers' results on their way here (Zstandard: a Pong
    worker's frames and clip frames shrink ~290x for ~2% of its CPU). auto: workers on another
    node than this process's (through Ray Client, every worker); on: all; off: none."""
    ray_worker_rollouts: bool = True
    """With --ray-workers: each worker runs a copy of the policy for a whole rollout (one call
    per worker per policy update; in the random-policy phase, one per segment's steps);
    --no-ray-worker-rollouts steps the envs from here instead, one round trip per env step."""
    teacher_model: TeacherConfig = dataclasses.field(default_factory=TeacherConfig)
    """The synthetic teacher's noise model."""
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    """The reward trainer."""
    policy: PolicyConfig = dataclasses.field(default_factory=PolicyConfig)
    """The RL algorithm."""

    def vec_envs(self, kind: str) -> int:
        """``n_envs``, or its default for ``kind`` (``"mujoco"`` or ``"atari"``)."""
        return self.n_envs or (8 if kind == "atari" else 4)

    def env_spec(self, training: bool = True, render_state: bool = False) -> EnvSpec:
        """The env these settings train on (``training=False``: for evaluation, whole Atari
        games instead of one life)."""
        from envs import EnvSpec

        return EnvSpec(
            self.env,
            training=training,
            render_state=render_state,
            terminate_when_unhealthy=None if self.early_termination else False,
            reward=self.env_reward,
        )

    def scored_on(self, env_reward: str) -> PrefsConfig:
        """These settings with ``env_reward`` as the true reward: to score a run's policy on
        another reward than it was taught with. ``paper`` runs episodes to the time limit, so
        an ``--early-termination`` run scored on it is too. Unsupported envs: ConfigError."""
        return dataclasses.replace(
            self,
            env_reward=env_reward,
            early_termination=self.early_termination and env_reward == "gymnasium",
        )

    def policy_reward_scale(self, kind: str) -> float:
        """``reward_scale``, or its default for ``kind`` (``"mujoco"`` or ``"atari"``)."""
        return self.reward_scale or (0.05 if kind == "atari" else 1.0)

    def segment_pool_size(self, kind: str) -> int:
        """``pool_size``, or its default for ``kind`` (``"mujoco"`` or ``"atari"``)."""
        return self.pool_size or (300 if kind == "atari" else 1000)

    @classmethod
    def from_saved(cls, data: dict) -> PrefsConfig:
        """A run's saved ``config.json``; settings added since it was written take the values
        that run used (SAVED_BEFORE), so its checkpoints still fit. Its ``resolved`` section
        (what the settings left to the env came to, for people to read) is not read back: a
        resumed run resolves them again from the settings, as it did before it was saved."""
        from rlkit.core.rundir import dataclass_from_dict

        data = {name: value for name, value in data.items() if name != RESOLVED}
        if "plan" in data and "labels" not in data:
            raise UserError(
                "the run's config.json is a VPN run's (rlkit vpn train), not a preference run's"
            )
        saved_by_all = ("env", "steps", "labels", "seed", *SETTINGS_GROUPS)
        missing = [name for name in saved_by_all if name not in data]
        if missing:  # every run saved these: the file was cut or edited
            raise UserError(f"the run's config.json lacks {', '.join(missing)}: it is incomplete")
        for name in SETTINGS_GROUPS:
            if name in data and not isinstance(data[name], dict):
                raise UserError(
                    f"the run's config.json holds {name} = {json.dumps(data[name])[:40]}, not a"
                    " group of settings: it is damaged"
                )
        from envs import check_env_id

        try:
            check_env_id(str(data["env"]))
        except UserError as exc:  # edited since the run began: no flag of this call is at fault
            raise UserError(f"the run's config.json names an {exc}") from None
        policy = {**SAVED_POLICY_BEFORE, **data.get("policy", {})}
        return dataclass_from_dict(cls, {**SAVED_BEFORE, **data, "policy": policy})

    def backbone_settings(self) -> dict:
        """``backbone_kwargs`` parsed (``{}`` when empty)."""
        return json.loads(self.backbone_kwargs) if self.backbone_kwargs.strip() else {}

    def __post_init__(self) -> None:
        check_types(self)
        try:
            settings = self.backbone_settings()
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--backbone-kwargs is not valid JSON ({exc.msg})") from None
        if not isinstance(settings, dict):
            raise ConfigError(
                f"--backbone-kwargs must be a JSON object, got {self.backbone_kwargs!r}"
            )
        from rlkit.nn import backbone_names

        names = backbone_names()
        if self.backbone != "auto" and self.backbone not in names:
            close = get_close_matches(self.backbone, names, n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"unknown --backbone {self.backbone!r}; {hint}known: auto, {', '.join(names)}"
            )
        checks = {
            "steps": self.steps > 0,
            "labels": self.labels >= 0,
            "seed": 0 <= self.seed < 2**32,
            "ensemble_size": self.ensemble_size >= 1,
            "segment_seconds": self.segment_seconds > 0,
            "atari_segment_steps": self.atari_segment_steps >= 1,
            "oversample": self.oversample >= 1,
            "checkpoint_every": self.checkpoint_every > 0,
            "eval_episodes": self.eval_episodes >= 0,
            "ray_workers": self.ray_workers >= 0,
            "ray_env_processes": self.ray_env_processes >= 1,
            "ray_call_timeout": self.ray_call_timeout > 0,
            "torch_threads": 1 <= self.torch_threads <= 1024,
            "synthetic_share": 0.0 <= self.synthetic_share <= 1.0,
            "dropout": 0.0 <= self.dropout < 1.0,
            "reward_hidden": len(self.reward_hidden) > 0 and min(self.reward_hidden) >= 1,
            "policy_reset_at": 0.0 <= self.policy_reset_at < 1.0,
            "initial_labels": self.initial_labels is None
            or 0 <= self.initial_labels <= self.labels,
            "label_decay": self.label_decay is None or self.label_decay > 0,
            "reward_scale": self.reward_scale is None or self.reward_scale > 0,
        }
        check_settings(self, checks)
        if self.env_reward == "paper":
            from envs.paper_reward import paper_task

            try:
                paper_task(self.env)
            except UserError as exc:
                raise ConfigError(str(exc)) from None
            if self.early_termination:
                raise ConfigError(
                    "--env-reward paper runs episodes to the time limit, as the paper's tasks "
                    "do: drop --early-termination"
                )
        if self.policy_reset_keep_hidden and self.policy_reset_at == 0:
            raise ConfigError("--policy-reset-keep-hidden needs --policy-reset-at above 0")
        for name in ("n_envs", "pool_size", "round_steps"):
            value = getattr(self, name)
            if value is not None and value < (2 if name == "pool_size" else 1):
                raise ConfigError(f"--{name.replace('_', '-')} has an invalid value {value!r}")

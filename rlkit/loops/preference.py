"""The preference-learning orchestrator: policy rollouts, segment pool, queries, teacher,
labels, reward training and policy training, in that cycle (Christiano et al. 2017, sec. 2.2).

Each round reads as a story (:meth:`PreferenceLoop.run_round`):

1. the policy trains for a round of steps on the current learned reward, while the
   :class:`SegmentRecorder` cuts its experience into segments for the pool;
2. the label schedule says how many queries should have been asked by now; the
   missing ones are chosen from the pool, their segments saved, and the queries stored;
3. the teacher is asked (a synthetic one answers at once, people whenever they do);
4. whatever labels the store holds that the trainer has not seen are ingested, and the
   ensemble trains on them; its output normalization is refreshed on recent segments.

Reward training runs in the background while the policy trains (as in the paper, where
the reward predictor trained asynchronously), in a child process by default or on a thread
(:mod:`rlkit.rewards.learner`): the trainer updates a *learner* ensemble while the env
wrapper reads an *actor* copy, and at each round boundary the loop waits for the learner,
copies it into the actor, and starts the next round of training. The policy thus sees a
reward that lags one round, deterministically, and the two cores of a small machine both
work.

The store is the only channel between queries and labels, so human labels that arrive
late (or after a restart) are used as soon as they appear, and nothing blocks on them.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import parse_env_id
from rich.console import Console
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.logger import Logger, make_output_format
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper

from agents.obs_norm import obs_norm_state
from agents.presets import (
    load_agent,
    make_agent,
    resolve_algo,
    resolve_policy,
    silent_logger,
)
from agents.worker_rollouts import RandomRolloutPolicy, rollout_source
from envs import env_dt, env_kind, make_vec_env
from envs.env_state import set_vec_env_state, vec_env_state
from rlkit.core.buffers import SegmentPool
from rlkit.core.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_write_bytes,
    pack,
    unpack,
)
from rlkit.core.errors import UserError
from rlkit.core.memory import check_fits_in_memory
from rlkit.core.metrics import MetricsLogger, read_metrics
from rlkit.core.progress import make_progress
from rlkit.core.rundir import first_unused, save_longer_steps
from rlkit.core.seeding import restore_rng, rng_state, seed_everything
from rlkit.core.stop import GracefulStop
from rlkit.core.types import Comparison, Segment, mu_for_choice
from rlkit.loops.evaluation import evaluate_policy_true
from rlkit.loops.preference_config import PrefsConfig
from rlkit.loops.segment_recorder import SegmentRecorder
from rlkit.rewards.ensemble import RewardEnsemble, build_ensemble, normalizable
from rlkit.rewards.learner import make_learner
from rlkit.rewards.queries import select_queries
from rlkit.rewards.rollout_reward import RolloutRewardCallback
from rlkit.rewards.schedule import LabelSchedule
from rlkit.rewards.teachers import QueryRequest, SyntheticTeacher, SyntheticTeacherAdapter
from rlkit.rewards.trainer import L2_MAX, MIN_STEPS_PIXELS, TrainerConfig
from rlkit.rewards.vec_wrapper import LearnedRewardVecEnv
from rlkit.store import Store


@dataclasses.dataclass
class RunSummary:
    """What a finished run reports."""

    run_dir: Path
    true_return_before: float
    true_return_after: float
    val_accuracy: float
    labels: int
    steps: int
    plot: Path
    wall_seconds: float


def write_summary(summary: RunSummary, cfg: PrefsConfig, reward_model: dict[str, float]) -> Path:
    """Write ``summary.json`` in the run directory (atomically) and return its path: the
    summary the run prints, and ``reward_model``, the final reward model's statistics on all
    the labels (trained once more after the last round, so in no row of ``metrics.csv``).
    NaN (nothing to measure) is written as null; ``wall_seconds`` is this invocation's."""
    import json

    def plain(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    doc = {
        "env": cfg.env, "seed": cfg.seed, "steps": summary.steps, "labels": summary.labels,
        "true_return_before": plain(summary.true_return_before),
        "true_return_after": plain(summary.true_return_after),
        "eval_episodes": cfg.eval_episodes,
        "reward_model": {
            ("l2_coefficient" if k == "losses/l2" else k.split("/", 1)[-1]): plain(v)
            for k, v in reward_model.items()
        },
        "wall_seconds": round(summary.wall_seconds, 1), "plot": summary.plot.name,
    }  # fmt: skip
    path = summary.run_dir / "summary.json"
    atomic_write_bytes(path, (json.dumps(doc, indent=2) + "\n").encode())
    return path


ROUND_STEPS = 8192
"""Default policy steps per round, rounded up to whole rollouts."""


def random_actions(space: gym.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random actions in one call (``space.sample()`` costs ~70 us each)."""
    if isinstance(space, gym.spaces.Box) and space.is_bounded():
        return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return space.start + rng.integers(0, space.n, size=n)
    return np.stack([space.sample() for _ in range(n)])


def segment_length(cfg: PrefsConfig, kind: str) -> int:
    """Env steps per segment: ``atari_segment_steps`` for Atari, else ``segment_seconds`` of
    simulated time (at the env's ``dt``, 0.05 s if it has none), at least 1."""
    if kind == "atari":
        return cfg.atari_segment_steps
    dt = env_dt(cfg.env) or 0.05
    return max(1, int(round(cfg.segment_seconds / dt)))


POLICY_HEADS = ("action_net.", "value_net.", "log_std")
"""State-dict prefixes of an SB3 actor-critic's output layers and action std."""


def check_segments_fit(cfg: PrefsConfig) -> int:
    """The run's segment length in steps, if a segment fits in one of the env's episodes
    (otherwise none would ever complete: a one-line :class:`UserError`)."""
    kind = env_kind(cfg.env)
    seg_len = segment_length(cfg, kind)
    limit = gym.spec(cfg.env).max_episode_steps
    if limit is not None and seg_len > limit:
        flag = (
            "--atari-segment-steps"
            if kind == "atari"
            else f"--segment-seconds {cfg.segment_seconds:g}"
        )
        raise UserError(
            f"{flag} makes segments of {seg_len} steps, longer than {cfg.env}'s episodes"
            f" ({limit} steps)"
        )
    return seg_len


def check_batch_memory(cfg: PrefsConfig, kind: str, venv: VecEnv) -> None:
    """A one-line UserError, at set-up, for a ``--trainer.batch-size`` whose training batch
    cannot fit in memory. The bound is low on purpose (each member's pairs of segments, as
    their observations and actions are stored, before any activation), so that it never
    refuses a batch that would fit."""
    pairs, members = cfg.trainer.batch_size, cfg.ensemble_size
    steps = segment_length(cfg, kind)
    obs, act = venv.observation_space, venv.action_space
    per_step = int(np.prod(obs.shape)) * obs.dtype.itemsize + int(np.prod(act.shape)) * 4
    check_fits_in_memory(
        members * pairs * 2 * steps * per_step,
        f"--trainer.batch-size {pairs:,} ({members} members x {pairs:,} pairs x 2 segments x"
        f" {steps} steps: a training batch's inputs alone)",
        "lower --trainer.batch-size",
    )


def resolved_backbone(cfg: PrefsConfig, kind: str) -> str:
    """The reward model's backbone: ``--backbone``, or for ``auto`` nature_cnn on Atari
    (``kind == "atari"``) and mlp otherwise."""
    if cfg.backbone != "auto":
        return cfg.backbone
    return "nature_cnn" if kind == "atari" else "mlp"


def reward_ensemble(cfg: PrefsConfig, kind: str, venv: VecEnv) -> RewardEnsemble:
    """The run's reward ensemble, untrained, for ``venv``'s spaces (``auto``: mlp or nature_cnn)."""
    backbone = resolved_backbone(cfg, kind)
    check_batch_memory(cfg, kind, venv)
    # --reward-normalize-inputs standardizes vector observations; pixels keep their scaling
    normalize = cfg.reward_normalize_inputs and normalizable(venv.observation_space)
    try:
        return build_ensemble(
            venv.observation_space, venv.action_space, cfg.ensemble_size, backbone,
            backbone_kwargs=cfg.backbone_settings(), hidden=cfg.reward_hidden,
            dropout=cfg.dropout, seed=cfg.seed, normalize_inputs=normalize,
        )  # fmt: skip
    except TypeError as exc:  # a setting the backbone does not take
        raise UserError(
            f"--backbone-kwargs {cfg.backbone_kwargs!r} for {backbone}: {exc}"
        ) from None


L2_MAX_BY_ENV = {"Walker2d": 3e-2}
"""The L2 cap for an env family (the id without ``ALE/`` and version) when
``--trainer.l2-max`` is left unset; others get :data:`rlkit.rewards.trainer.L2_MAX`. Walker2d's
was measured on twenty-eight seeds, eighteen of them fresh (BENCHMARKS.md, "Walker2d on its
own" and "Walker2d's default on more fresh seeds")."""


def trainer_config(config: TrainerConfig, kind: str, env_id: str) -> TrainerConfig:
    """``config`` with the env's defaults for what it leaves unset: fewer gradient steps per
    round for pixels, where a CNN step costs ~10x, and the L2 cap (:data:`L2_MAX_BY_ENV`)."""
    if config.min_steps is None and kind == "atari":
        config = dataclasses.replace(config, min_steps=MIN_STEPS_PIXELS)
    if config.l2_max is None:
        config = dataclasses.replace(
            config, l2_max=L2_MAX_BY_ENV.get(parse_env_id(env_id)[1], L2_MAX)
        )
    return config


def label_schedule(cfg: PrefsConfig, kind: str) -> LabelSchedule:
    """The run's label schedule: the paper's for ``kind``, with ``--initial-labels`` and
    ``--label-decay`` where set."""
    return LabelSchedule.for_kind(kind, cfg.labels, cfg.steps, cfg.initial_labels, cfg.label_decay)


def steps_per_round(cfg: PrefsConfig, kind: str) -> int:
    """Policy steps per round: ``--round-steps`` if set, else :data:`ROUND_STEPS` rounded up
    to whole rollouts (of the policy's steps per env per update, on every env)."""
    if cfg.round_steps:
        return cfg.round_steps
    rollout = resolve_policy(cfg.policy, kind).n_steps * cfg.vec_envs(kind)
    # About 8k steps: two TRPO updates. With one, reward training (>= min_steps gradient
    # steps) outlasted the round on 2 cores and the policy waited for it.
    return rollout * max(1, math.ceil(ROUND_STEPS / rollout))


RESOLVED_POLICY = (
    "algo", "gamma", "gae_lambda", "n_steps", "learning_rate", "ent_coef", "normalize_obs",
)  # fmt: skip
"""The policy's settings whose defaults depend on the env or the algorithm
(:func:`agents.presets.resolve_policy`)."""


def resolved_settings(cfg: PrefsConfig) -> dict[str, object]:
    """What the run uses for each setting whose default depends on the env or on other
    settings (left at None or ``auto``, or set), as JSON: the ``resolved`` section of the
    run's ``config.json``, for people to read. The run resolves them from ``cfg`` itself, with
    the same functions, so a resume is the same whether the section is there or not."""
    kind = env_kind(cfg.env)
    schedule = label_schedule(cfg, kind)
    trainer = trainer_config(cfg.trainer, kind, cfg.env)
    policy = resolve_policy(cfg.policy, kind)
    return {
        "backbone": resolved_backbone(cfg, kind),
        "n_envs": cfg.vec_envs(kind),
        "pool_size": cfg.segment_pool_size(kind),
        "initial_labels": schedule.initial_labels,
        "label_decay": schedule.decay,
        "reward_scale": cfg.policy_reward_scale(kind),
        "round_steps": steps_per_round(cfg, kind),
        "trainer": {
            "min_steps": trainer.step_floor,
            "l2_max": trainer.l2_cap,
        },
        "policy": {name: getattr(policy, name) for name in RESOLVED_POLICY},
    }


def sb3_logger(folder: Path) -> Logger:
    """SB3's CSV and TensorBoard logger into ``folder``. Each policy of a run (the first, one
    loaded by a resume, one made by a reset) gets its own ``progress.csv``,
    ``progress-1.csv``, ...: SB3 opens the file with mode ``w+``, which would truncate the
    earlier policy's log."""
    suffix = first_unused(folder / "progress.csv", start=1).stem.removeprefix("progress")
    return Logger(
        str(folder),
        [
            make_output_format("csv", str(folder), suffix),
            make_output_format("tensorboard", str(folder)),
        ],
    )


class PreferenceLoop:
    """Wires env, recorder, pool, ensemble, trainer, store, teacher and agent together.

    Args:
        cfg: the run's configuration.
        run_dir: an existing run directory (see :func:`rlkit.core.rundir.prepare_run_dir`).
        console: where progress and the summary go.
    """

    def __init__(self, cfg: PrefsConfig, run_dir: Path, console: Console | None = None) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        self.kind = env_kind(cfg.env)
        self.rng = seed_everything(cfg.seed)
        torch.set_num_threads(cfg.torch_threads)
        self.n_envs = cfg.vec_envs(self.kind)
        self.seg_len = check_segments_fit(cfg)
        self.scale = cfg.policy_reward_scale(self.kind)
        self.spec = cfg.env_spec(render_state=True)
        self.pool = SegmentPool(cfg.segment_pool_size(self.kind))
        venv = self._make_venv()
        self.recorder = SegmentRecorder(venv, self.seg_len, self.pool.add, env_id=cfg.env)
        try:
            self.ensemble: RewardEnsemble = reward_ensemble(cfg, self.kind, venv)
            # Opened once the envs and the ensemble are set up: a setting refused there (an
            # unreachable Ray cluster, a batch no memory holds) leaves no store behind.
            self.store = Store(self.run_dir)
        except BaseException:
            venv.close()
            raise
        self.pool.next_id = self.store.max_segment_id() + 1
        # The actor is what the policy's reward wrapper reads; the learner (self.ensemble)
        # trains in the background and is copied into the actor at round boundaries.
        self.actor: RewardEnsemble = copy.deepcopy(self.ensemble)
        # Both presets (TRPO, A2C) are on-policy: the learned reward is computed once per
        # rollout in one batched pass rather than once per env step (the same rewards).
        self.reward_env = LearnedRewardVecEnv(self.recorder, self.actor, self.scale, deferred=True)
        self.reward_callback = RolloutRewardCallback(self.reward_env)
        self._unlabeled: list[Segment] = []
        # The trainer, on a thread or in a child process (rlkit.rewards.learner); its
        # ensemble is self.ensemble, current after each finish().
        self.learner = make_learner(
            cfg.reward_learner, self.ensemble, trainer_config(cfg.trainer, self.kind, cfg.env),
            self.rng.spawn(1)[0],
            unlabeled=self.sample_unlabeled_steps, torch_threads=cfg.torch_threads,
        )  # fmt: skip
        share = {"synthetic": 1.0, "human": 0.0, "mixed": cfg.synthetic_share}[cfg.teacher]
        self.teacher = SyntheticTeacherAdapter(
            SyntheticTeacher(cfg.teacher_model, self.rng), share=share
        )
        self.schedule = label_schedule(cfg, self.kind)
        self.checkpoints = CheckpointManager(self.run_dir)
        self.metrics = MetricsLogger(self.run_dir)
        self.algo = resolve_algo(cfg.policy, self.kind)
        self.agent: BaseAlgorithm | None = None
        self.last_label_id = 0
        self.true_return_before = math.nan
        self.random_steps = 0
        self.last_checkpoint_step = 0
        self._finished_early: dict[str, float] = {}  # stats of training a save waited for
        self.last_query_score = math.nan  # the mean score of the pairs ask() chose last

    # -- construction -------------------------------------------------------------------
    def _make_venv(self) -> VecEnv:
        if self.cfg.ray_workers > 0:
            from rlkit.distributed import connect, make_ray_vec_env  # optional dependency

            connect(self.cfg.ray_address)
            venv = make_ray_vec_env(
                self.spec,
                self.n_envs,
                self.cfg.ray_workers,
                self.cfg.seed,
                compiled=self.cfg.ray_compiled,
                worker_rollouts=self.cfg.ray_worker_rollouts,
                compress={"auto": None, "on": True, "off": False}[self.cfg.ray_compress],
                env_processes=self.cfg.ray_env_processes,
                call_timeout_s=self.cfg.ray_call_timeout,
            )
        else:
            venv = make_vec_env(self.spec, self.n_envs, self.cfg.seed)
        return venv

    def worker_restarts(self) -> float:
        """How many Ray workers were re-created after dying so far (NaN without Ray)."""
        env: VecEnv = self.recorder
        while isinstance(env, VecEnvWrapper):
            env = env.venv
        restarts = getattr(env, "restarts", None)
        return math.nan if restarts is None else float(restarts)

    def _new_agent(self) -> BaseAlgorithm:
        agent = make_agent(self.cfg.policy, self.reward_env, self.kind, self.cfg.seed)
        agent.set_logger(sb3_logger(self.run_dir / "sb3"))
        return agent

    @property
    def steps_done(self) -> int:
        """Policy env steps taken so far (0 before the agent exists)."""
        return 0 if self.agent is None else int(self.agent.num_timesteps)

    @property
    def round_steps(self) -> int:
        """Policy steps per round (:func:`steps_per_round`)."""
        return steps_per_round(self.cfg, self.kind)

    # -- the phases -----------------------------------------------------------------------
    def collect_random_segments(self, n_segments: int) -> None:
        """Fill the pool from a uniformly random policy (for the initial labels)."""
        env = self.recorder
        env.reset()
        rng = np.random.default_rng(self.cfg.seed)
        limit = max(200_000, 50 * n_segments * self.seg_len)
        start, episodes0, lengths0 = env.total_steps, env.episodes_done, env.episode_steps_done
        # On Ray workers, one segment's steps per call, drawn there (agents.worker_rollouts).
        source = rollout_source(env)
        policy = RandomRolloutPolicy(env.action_space) if source is not None else None
        while len(self.pool) < n_segments and env.total_steps - start < limit:
            if source is not None:
                steps = source.rollout(policy, self.seg_len, None).actions
            else:
                steps = [random_actions(env.action_space, self.n_envs, rng)]
            for actions in steps:
                env.step(actions)
                self._check_random_episodes(env.episodes_done - episodes0, env, lengths0)
        self.random_steps += env.total_steps - start

    def _check_random_episodes(self, episodes: int, env: SegmentRecorder, lengths0: int) -> None:
        """Stop when the random policy's episodes are too short for any segment."""
        if len(self.pool) == 0 and episodes >= 100:
            mean = (env.episode_steps_done - lengths0) / episodes
            raise UserError(
                f"no segment of {self.seg_len} steps in {episodes} episodes of the random"
                f" policy (mean length {mean:.0f} steps): shorten --segment-seconds"
                + (" or drop --early-termination" if self.cfg.early_termination else "")
            )

    def ask(self, n: int) -> int:
        """Choose ``n`` new queries from the pool, persist them, and hand them to the teacher.

        A pair asked before (in either order, in an earlier round or run) is not asked again:
        its answer is known, or on its way."""
        if n <= 0 or len(self.pool) < 2:
            return 0
        pairs = select_queries(
            self.ensemble, self.pool, n, self.cfg.query_strategy, self.rng, self.cfg.oversample,
            exclude=self.store.asked_pairs(),
        )  # fmt: skip
        scored = self.cfg.query_strategy != "uniform" and pairs
        self.last_query_score = float(np.mean([c for _, _, c in pairs])) if scored else math.nan
        for a, b, _ in pairs:
            self.store.add_segment(self.pool[a])
            self.store.add_segment(self.pool[b])
        ids = self.store.add_queries(pairs)
        requests = [QueryRequest(q, a, b) for q, (a, b, _) in zip(ids, pairs, strict=True)]
        self.teacher.request(requests, self.pool, self.store)
        return len(requests)

    def _segment(self, segment_id: int) -> Segment:
        if segment_id in self.pool:
            return self.pool[segment_id]
        return self.store.load_segment(segment_id)

    def ingest_labels(self) -> int:
        """Add every stored label the trainer has not seen yet; "can't tell" is skipped."""
        added = 0
        for row in self.store.labels_after(self.last_label_id):
            self.last_label_id = row.id
            mu = mu_for_choice(row.choice)
            if mu is None:
                continue
            comparison = Comparison(row.segment_a, row.segment_b, mu)
            self.learner.add(comparison, self._segment(row.segment_a), self._segment(row.segment_b))
            added += 1
        return added

    def sample_unlabeled_steps(
        self, n: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random steps ``(obs, acts)`` from recent pool segments (for semi-supervision).

        Reads a snapshot taken when training was started, never the live pool, which the
        policy's rollouts change meanwhile on the main thread.
        """
        segs = self._unlabeled
        which = rng.integers(0, len(segs), size=n)
        steps = rng.integers(0, self.seg_len, size=n)
        obs = np.stack([segs[i].obs[t] for i, t in zip(which, steps, strict=True)])
        acts = np.stack([segs[i].acts[t] for i, t in zip(which, steps, strict=True)])
        return obs, acts

    def start_reward_training(self, epochs: float | None = None) -> None:
        """Train the learner ensemble in the background (see the module docstring)."""
        if self.cfg.trainer.mean_teacher_weight > 0:  # the only reader of the snapshot
            self._unlabeled = [self.pool[int(i)] for i in self.pool.ids()]
        self.learner.start(epochs)

    def finish_reward_training(self) -> dict[str, float]:
        """Wait for the learner, refresh its normalization, copy it into the actor."""
        stats = {**self._finished_early, **self.learner.finish()}
        self._finished_early = {}
        self.refresh_normalization()
        self.actor.load_state_dict(self.ensemble.state_dict())
        return stats

    def refresh_normalization(self, max_segments: int = 64) -> None:
        """Set the ensemble's output normalization from the steps of up to ``max_segments`` pool
        segments, drawn at random; nothing while the pool is empty."""
        ids = self.pool.ids()
        if len(ids) == 0:
            return
        pick = self.rng.choice(ids, size=min(max_segments, len(ids)), replace=False)
        obs = torch.as_tensor(np.concatenate([self.pool[int(i)].obs for i in pick]))
        acts = torch.as_tensor(np.concatenate([self.pool[int(i)].acts for i in pick]))
        self.ensemble.update_normalization(obs, acts)

    def answer_pending_synthetic(self) -> None:
        """After a crash between storing a query and its synthetic label: answer it now."""
        if self.cfg.teacher != "synthetic":
            return
        pending = self.store.unanswered_queries()
        if pending:
            segs = {s: self._segment(s) for _, a, b in pending for s in (a, b)}
            self.teacher.request([QueryRequest(*p) for p in pending], segs, self.store)

    def start(self) -> None:
        """A new run: random segments, the initial labels, reward pretraining.

        Also a run started again after it stopped before its first checkpoint (``--resume``):
        the queries and labels it stored are kept, so only the initial queries it had not yet
        asked are asked, and every stored label is trained on (their segments are in the store;
        the pool's ids start after them).
        """
        self.agent = self._new_agent()
        n0 = self.schedule.target(0)
        t0 = time.perf_counter()
        self.collect_random_segments(min(self.pool.capacity, max(2 * n0, 20)))
        t1 = time.perf_counter()
        self.answer_pending_synthetic()
        self.ask(n0 - self.store.count_selected_queries())
        if self.ingest_labels():
            # One thread, like the rounds: two were 1.4x faster alone on 2 cores but 2x slower
            # with a second run beside it (BENCHMARKS.md, overhead).
            self.start_reward_training(self.cfg.trainer.pretrain_epochs)
        stats = self.finish_reward_training()
        stats["time/random_segments_seconds"] = t1 - t0
        stats["time/initial_labels_and_pretrain_seconds"] = time.perf_counter() - t1
        self.metrics.log_dict(0, stats)
        self.true_return_before = evaluate_policy_true(
            self.agent, self.cfg, self.n_envs, self.cfg.eval_episodes
        )
        if not math.isnan(self.true_return_before):  # NaN: evaluation switched off
            self.metrics.log(0, **{"charts/true_return_eval": self.true_return_before})
        # SB3 must reset the envs itself at the first learn().
        self.agent._last_obs = None  # noqa: SLF001

    def reset_policy(self) -> None:
        """A freshly initialised policy and critic (the preset's, same seed) that carries on
        from the current step count; the reward model, labels and pool are kept. With
        ``policy_reset_keep_hidden`` every trained weight but the output layers
        (``action_net``, ``value_net``) and the action std is copied over. Observation
        normalizer statistics (``--policy.normalize-obs``) are always kept: they describe the
        env, not what the policy learned."""
        assert self.agent is not None
        done = self.steps_done
        old = self.agent.policy.state_dict()
        self.agent.logger.close()
        self.agent = self._new_agent()
        if self.cfg.policy_reset_keep_hidden:
            kept = {k: v for k, v in old.items() if not k.startswith(POLICY_HEADS)}
        else:
            kept = obs_norm_state(old)
        self.agent.policy.load_state_dict(kept, strict=False)
        self.agent.num_timesteps = done
        self.agent._last_obs = None  # noqa: SLF001  (SB3 resets the envs at the next learn())
        self.metrics.log(done, **{"charts/policy_reset": 1.0})
        what = "output layers" if self.cfg.policy_reset_keep_hidden else "policy"
        self.console.log(f"{what} re-initialised at step {done:,} (--policy-reset-at)")

    def run_round(self) -> dict[str, float]:
        """One round: policy steps, then the finished reward training, new queries, the next
        reward training (if new labels came) and the policy reset (if due); returns the
        round's metrics, logged at the round's last step."""
        assert self.agent is not None
        before = self.steps_done
        t0 = time.perf_counter()
        # The last round stops at --steps (rounded up to whole rollouts, as SB3 trains).
        steps = min(self.round_steps, max(1, self.cfg.steps - before))
        self.agent.learn(
            steps, callback=self.reward_callback, reset_num_timesteps=False,
            progress_bar=False,
        )  # fmt: skip
        policy_seconds = time.perf_counter() - t0
        step = self.steps_done
        stats = self.finish_reward_training()
        wait_seconds = time.perf_counter() - t0 - policy_seconds
        self.last_query_score = math.nan
        asked = self.ask(self.schedule.target(step) - self.store.count_selected_queries())
        if self.ingest_labels():
            self.start_reward_training()
        episodes = [ep["r"] for ep in self.agent.ep_info_buffer]
        stats.update({
            "charts/true_return": float(np.mean(episodes)) if episodes else math.nan,
            "charts/learned_reward": self.reward_callback.last_mean,
            # the policy's own measure of the last 100 episodes, beside their true return
            "charts/learned_return": self.reward_callback.mean_episode_return,
            "charts/labels": float(self.store.count_labels()),
            "charts/queries_asked": float(asked),
            "charts/labels_target": float(self.schedule.target(step)),
            # the asked pairs' mean score: disagreement's variance across members (entropy's)
            "charts/query_score": self.last_query_score,
            "charts/pool_size": float(len(self.pool)),
            "time/policy_seconds": policy_seconds,
            "time/reward_wait_seconds": wait_seconds,
            "charts/ray_worker_restarts": self.worker_restarts(),
        })  # fmt: skip
        # Env steps per wall-clock second over the whole round (policy, reward model, queries).
        stats["time/steps_per_second"] = (step - before) / (time.perf_counter() - t0)
        self.metrics.log_dict(step, {k: v for k, v in stats.items() if not math.isnan(v)})
        reset_step = round(self.cfg.policy_reset_at * self.cfg.steps)
        if self.cfg.policy_reset_at > 0 and before < reset_step <= step:
            self.reset_policy()
        return stats

    # -- checkpoints ----------------------------------------------------------------------
    def save(self, whole: bool = False) -> Path:
        """Checkpoint at a round boundary. Waits for any reward training in flight, but leaves
        its result for the next :meth:`finish_reward_training` to take, as it would have
        without the checkpoint: the policy's reward stays one round behind and the run's
        generator is not drawn from, so how often a run is checkpointed changes nothing it
        learns.

        ``whole`` (a stop's checkpoint) also saves the segment pool and the envs mid-episode,
        compressed, so that the resumed run is the run that went on (:meth:`restore`); the
        regular checkpoints leave them out (Hopper's pool alone takes 0.8 s to pack and write:
        BENCHMARKS.md, "A stop's checkpoint")."""
        self._finished_early.update(self.learner.finish())
        return self._write_checkpoint(whole)

    def _write_checkpoint(self, whole: bool = False) -> Path:
        """Checkpoint as things stand (no reward training in flight)."""
        assert self.agent is not None
        envs = vec_env_state(self.reward_env) if whole else None
        state = {
            "step": self.steps_done,
            "ensemble": self.ensemble.state_dict(),
            "trainer": self.learner.state_dict(),
            "rng": rng_state(self.rng),
            "torch_rng": torch.random.get_rng_state(),
            # SB3 draws its minibatches from NumPy's global generator
            "numpy_global_rng": np.random.get_state(),
            "last_label_id": self.last_label_id,
            "pool_next_id": self.pool.next_id,
            "true_return_before": self.true_return_before,
            "random_steps": self.random_steps,
            # What a resume needs to go on as the run would have (see restore()): the reward
            # the policy sees (a round behind the learner), the pending training's metrics,
            # the segment pool, and the envs where they are (on Ray workers too).
            "actor": self.actor.state_dict(),
            "finished_early": dict(self._finished_early),
            "pool": pack(self.pool.state_dict()) if whole else None,
            "envs": pack(envs) if envs is not None else None,
            "learned_returns": self.reward_callback.state_dict(),
        }
        path = self.checkpoints.save(
            self.steps_done, state, {"policy.zip": lambda p: self.agent.save(str(p))}
        )
        self.last_checkpoint_step = self.steps_done
        return path

    def restore(self, checkpoint: tuple[Path, dict] | None = None) -> None:
        """Continue from the latest checkpoint; labels stored after it are ingested too.
        ``checkpoint``: its directory and ``state.pt`` where the caller has loaded them
        already (``rlkit prefs train`` checks them before it writes anything), so that a
        large checkpoint is not read and unpickled twice.

        A run stopped by Ctrl-C or SIGTERM (whose checkpoint is ``whole``, see :meth:`save`)
        goes on exactly as if it had not stopped: the same queries, labels, reward model and
        policy, given the same labels. The reward model, the policy's reward (a round behind
        it), the training whose result the next round takes, the segment pool, the envs
        mid-episode (on Ray workers too) and every generator come back as they were. Not with
        Atari's sticky actions (``EnvSpec.sticky_actions``, not a ``prefs`` setting), whose
        emulator does not keep the action it repeats, nor when a Ray worker had died just
        before the stop, or the envs do not fit the saved ones: those start new episodes.

        From a regular checkpoint (after a crash) the envs start new episodes and the pool
        starts empty; from one older than 2026-12-05, the reward model is also retrained at
        once."""
        path, state = checkpoint or self.checkpoints.load_latest()
        exact = state.get("envs") is not None and self._restore_envs(unpack(state["envs"]))
        try:
            self.learner.load_ensemble(state["ensemble"])
            # SB3 keeps the observation it was saved at where the envs came back as they were
            self.agent = load_agent(
                self.algo, str(path / "policy.zip"), env=self.reward_env, force_reset=not exact
            )
        except (RuntimeError, ValueError, KeyError) as exc:  # e.g. config.json edited since
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            first = next((line for line in lines if "mismatch" in line), lines[0] if lines else "")
            first = first[:200] or repr(exc)
            raise CheckpointError(
                f"checkpoint {path} does not fit the run's config.json ({first}); left as it is"
            ) from None
        # A finished run resumed (to evaluate it, or take labels people gave since) trains no
        # policy: no new, empty progress-N.csv for it.
        finished = self.steps_done >= self.cfg.steps
        self.agent.set_logger(silent_logger() if finished else sb3_logger(self.run_dir / "sb3"))
        self.pool.next_id = max(self.pool.next_id, int(state["pool_next_id"]))
        # Re-add the labels the checkpoint had seen, in order, then restore their splits.
        checkpoint_label_id = int(state["last_label_id"])
        for row in self.store.labels_after(0):
            if row.id > checkpoint_label_id:
                break
            self.last_label_id = row.id
            mu = mu_for_choice(row.choice)
            if mu is not None:
                comp = Comparison(row.segment_a, row.segment_b, mu)
                self.learner.add(comp, self._segment(row.segment_a), self._segment(row.segment_b))
        self.learner.load_state_dict(state["trainer"])
        restored = restore_rng(state["rng"])
        self.rng.bit_generator.state = restored.bit_generator.state
        torch.random.set_rng_state(state["torch_rng"])
        if "numpy_global_rng" in state:
            np.random.set_state(state["numpy_global_rng"])
        self.true_return_before = float(state["true_return_before"])
        self.random_steps = int(state["random_steps"])
        self.last_checkpoint_step = int(state["step"])
        older = "actor" not in state  # a checkpoint from before 2026-12-05
        if not older:
            self.actor.load_state_dict(state["actor"])
            self._finished_early = dict(state["finished_early"])
            if state["pool"] is not None:
                self.pool.load_state_dict(unpack(state["pool"]))
        if "learned_returns" in state:  # since 2026-12-07
            self.reward_callback.load_state_dict(state["learned_returns"], envs_kept=exact)
        # Labels that came after the checkpoint (people's, or a crash's) train at once; the
        # next round takes the result, as it takes the pending one otherwise.
        self.answer_pending_synthetic()
        if self.ingest_labels():
            self.start_reward_training()
        if older:  # without the policy's reward it saw, it sees the newest
            self.finish_reward_training()

    def _restore_envs(self, envs: dict) -> bool:
        """Put the envs back as a stop saved them; says so and returns False (the envs then
        start new episodes) if they do not fit."""
        try:
            set_vec_env_state(self.reward_env, envs)
        except ValueError as exc:
            self.console.print(f"the envs start new episodes: {exc}", soft_wrap=True)
            return False
        return True

    # -- the whole run --------------------------------------------------------------------
    def run(
        self,
        resume: bool = False,
        stop: GracefulStop | None = None,
        on_begin: Callable[[], object] | None = None,
        checkpoint: tuple[Path, dict] | None = None,
    ) -> RunSummary:
        """The whole run (or the rest of it, with ``resume``, from ``checkpoint`` where the
        caller has loaded the latest one already: see :meth:`restore`).

        With ``stop``, a stop asked for by a signal is honoured at the next checkpoint that
        comes anyway (the one right after the start, the one at the end) or at the end of the
        round it arrives in, which is then checkpointed: the run raises
        :class:`~rlkit.core.stop.StopRequested` there, and ``--resume`` continues from it.
        ``on_begin`` is called once the checkpoint has loaded (a resume) or before the run
        starts: what a run records of each invocation goes there, not written for one that a
        damaged or unfitting checkpoint refuses.
        """
        t_start = time.perf_counter()
        stop = stop or GracefulStop()  # never entered: never requested
        if resume and self.checkpoints.any():
            self.restore(checkpoint)
            save_longer_steps(self.run_dir, self.cfg.steps)
            if on_begin is not None:
                on_begin()
        else:
            if on_begin is not None:
                on_begin()
            if resume:
                self.console.print(
                    f"no checkpoint yet: the run starts again from step 0 with the"
                    f" {self.store.count_labels()} labels it stored",
                    soft_wrap=True,
                )
            self.start()
            # Step 0 is saved at once: a run stopped from here on resumes with its pretrained
            # reward model (the initial labels may be hours of a person's time).
            self.save(whole=stop.requested is not None)
        stop.check(self.last_checkpoint_step)
        assert self.agent is not None
        with make_progress(self.console) as progress:
            task = progress.add_task(
                "prefs", total=self.cfg.steps, completed=self.steps_done, status=""
            )
            while self.steps_done < self.cfg.steps:
                stats = self.run_round()
                due = self.steps_done - self.last_checkpoint_step >= self.cfg.checkpoint_every
                if due or stop.requested is not None:
                    self.save(whole=stop.requested is not None)
                stop.check(self.steps_done)
                acc = stats.get("charts/reward_val_accuracy", math.nan)
                status = (
                    f"true return {stats['charts/true_return']:.1f}  labels "
                    f"{int(stats['charts/labels'])}/{self.cfg.labels}  val acc "
                    + ("-" if math.isnan(acc) else f"{acc:.2f}")
                )
                progress.update(task, completed=min(self.steps_done, self.cfg.steps), status=status)
        # Labels that people gave during the last round are used too, before the final save.
        self.finish_reward_training()
        if self.ingest_labels():
            self.start_reward_training()
            self.finish_reward_training()
        self.save(whole=stop.requested is not None)
        stop.check(self.steps_done)  # resuming it evaluates and summarizes the finished run
        stop.release()  # all is saved: Ctrl-C in the evaluation stops at once
        after = evaluate_policy_true(self.agent, self.cfg, self.n_envs, self.cfg.eval_episodes)
        if not math.isnan(after) and not self._evaluated_at(self.steps_done):
            self.metrics.log(self.steps_done, **{"charts/true_return_eval": after})
        final = self.learner.evaluate() if len(self.learner) else {}
        from rlkit.loops.plots import plot_run

        title = f"{self.cfg.env}, seed {self.cfg.seed}, {self.store.count_labels()} labels"
        plot = plot_run(self.run_dir, title=title)
        self.metrics.close()
        summary = RunSummary(
            run_dir=self.run_dir, true_return_before=self.true_return_before,
            true_return_after=after,
            val_accuracy=final.get("charts/reward_val_accuracy", math.nan),
            labels=self.store.count_labels(), steps=self.steps_done, plot=plot,
            wall_seconds=time.perf_counter() - t_start,
        )  # fmt: skip
        write_summary(summary, self.cfg, final)
        return summary

    def _evaluated_at(self, step: int) -> bool:
        """Whether the run's log has a final evaluation at ``step`` already (a finished run
        resumed evaluates again for its summary, but logs the step once)."""
        rows = read_metrics(self.run_dir).get("charts/true_return_eval", [])
        return any(at == step for at, _ in rows)

    def close(self) -> None:
        """Stop the reward learner, close the envs and the store, and close the run's and the
        policy's log files (``metrics.csv``, ``sb3/progress.csv``, TensorBoard), however the
        run ended (one stopped by Ctrl-C or an error could lose its last TensorBoard rows)."""
        self.metrics.close()
        if self.agent is not None:
            self.agent.logger.close()
        self.learner.close()
        self.reward_env.close()
        self.store.close()

"""Training the reward ensemble on comparisons (Christiano et al. 2017, sec. 2.2.3).

- Bagging: each member trains on its own bootstrap resample of the labels. Labels arrive
  one by one, so resampling is online (Oza and Russell 2001): each label gets a Poisson(1)
  count per member, and member k draws minibatches in proportion to its counts.
- A fraction 1/e of the labels is held out for validation (decided once per label).
- L2 regularization whose coefficient adapts so that validation loss stays between 1.1x and
  1.5x the training loss.
- Labels answered "can't tell" are stored but never reach the trainer.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from rlkit.core.errors import ConfigError, UserError, check_settings, check_types
from rlkit.core.types import Comparison, Segment
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.preference import preference_loss, preference_probs
from rlkit.rewards.regularizers import (
    MeanTeacherConsistency,
    UnlabeledSampler,
    cross_lipschitz_preference,
)

MIN_STEPS = 30
"""Gradient steps per training round when ``TrainerConfig.min_steps`` is left unset (the
preference loop sets 10 for pixel observations)."""
MIN_STEPS_PIXELS = 10

L2_MAX = 1e-2
"""Cap on the L2 coefficient when ``TrainerConfig.l2_max`` is left unset (the preference
loop sets 3e-2 for Walker2d, ``rlkit.loops.preference.L2_MAX_BY_ENV``)."""

EVAL_CHUNK = 64
"""Comparisons per forward pass when evaluating. Activations stay ~9 MB (K=3, 188-step
segments, 64 units): above glibc's 32 MB mmap threshold every op's output would be fresh
pages, and evaluation ran ~1.8x slower at 256."""


@dataclasses.dataclass(frozen=True)
class TrainerConfig:
    """The reward trainer."""

    lr: float = 3e-4
    """Adam learning rate."""
    batch_size: int = 64
    """Comparisons per member per gradient step."""
    holdout: float = 1 / math.e
    """Fraction of labels held out for validation (the paper's 1/e)."""
    l2_init: float = 1e-4
    """Initial L2 coefficient (on the sum of squared parameters of each member)."""
    l2_low: float = 1.1
    """Lower bound on validation loss / training loss: below it, L2 is weakened."""
    l2_high: float = 1.5
    """Upper bound on validation loss / training loss: above it, L2 is strengthened."""
    l2_factor: float = 1.3
    """Multiplicative L2 adjustment per epoch."""
    l2_max: float | None = None
    """Upper bound on the L2 coefficient; unset: 1e-2 (:data:`L2_MAX`), 3e-2 on Walker2d.
    With few labels every model overfits, and an unbounded coefficient would flatten the
    reward to a constant. In practice the bound binds: in the Hopper quickstart (600k steps,
    700 labels, 2026-12-06) validation loss is 0.8-1.1x training loss on the random policy's
    labels (the coefficient shrinks, to ~6e-6), then 1.7-1.8x once the policy's segments come
    in, and the coefficient reaches the cap by ~60k steps and stays there (a fixed L2 equal
    to the cap for the rest of the run).
    1e-3, 3e-2 and 0.1 were measured against 1e-2 (BENCHMARKS.md, "The L2 cap"): 3e-2 lifts
    Walker2d and Hopper and costs HalfCheetah, where some seeds settle into a slow gait.
    ``rlkit prefs train`` saves the cap it resolves in the run's ``config.json``."""
    l2_min: float = 1e-7
    """Lower bound on the L2 coefficient."""
    random_response: float = 0.1
    """Probability of a uniformly random answer in the preference model."""
    epochs: float = 1.0
    """Passes over the training labels in each round (rounds are frequent: every ~8k steps)."""
    pretrain_epochs: float = 50.0
    """Passes over the initial labels before RL starts."""
    min_steps: int | None = None
    """Lower bound on gradient steps per training round; default 30 for vector observations,
    10 for pixels (a CNN step costs ~10x). 30 steps of 64 pairs fit in an ~8k-step round on
    a second core; Hopper's policies did better than with 10 (six seeds at 1M steps: mean
    ratio 0.78 vs 0.62-0.66, BENCHMARKS.md). rl-teacher trains one minibatch every 100
    agent steps, ~80 per round."""
    input_stats_segments: int | None = None
    """With an ensemble that normalizes its inputs (--reward-normalize-inputs): take their mean
    and std again before each round only until they come from at least this many labelled
    segments, then keep them (default None: before every round). With 100, a synthetic
    teacher's run keeps the statistics of its initial labels' random-policy segments (163-198
    in the MuJoCo benchmark's runs), so the input scaling stops moving under the policy; at
    1M steps that was on par with retaking them on Hopper and far worse on HalfCheetah
    (BENCHMARKS.md)."""
    rebalance_initial: bool = False
    """Once more labels have come from the policy's segments than were asked up front, draw
    each up-front label (the random policy's segments) with weight ``n_initial / n_later``, so
    their share of the minibatches falls as ``n_i^2 / (n_i^2 + n_l^2)`` (0.5 when the later
    labels catch up, 0.1 at a MuJoCo run's end with 175 + 525) instead of
    ``n_i / (n_i + n_l)`` (0.25). The label schedule is untouched. Off by default (the paper's
    uniform bootstrap): at 1M steps it did not lift Walker2d (BENCHMARKS.md, "Up-front labels
    weighed down later")."""
    cross_lipschitz: float = 0.0
    """Weight of the cross-Lipschitz penalty on the preference classifier (0: off)."""
    mean_teacher_weight: float = 0.0
    """Weight of the mean-teacher consistency loss on unlabeled pool segments (0: off)."""
    mean_teacher_decay: float = 0.99
    """EMA decay of the mean teacher."""
    mean_teacher_rampup: int = 1000
    """Gradient steps over which the consistency weight ramps up (sigmoid)."""

    def __post_init__(self) -> None:
        check_types(self, "--trainer.")
        # Limits against the cap apply once it is known: unset, it depends on the env (the
        # preference loop's trainer_config sets it; RewardTrainer falls back to L2_MAX).
        cap = math.inf if self.l2_max is None else self.l2_max
        checks = {
            "lr": self.lr > 0,
            "batch_size": self.batch_size >= 1,
            "holdout": 0.0 <= self.holdout < 1.0,
            "l2_max": self.l2_max is None or self.l2_max >= 0,
            "l2_init": self.l2_min <= self.l2_init,
            "l2_low": 1.0 <= self.l2_low < self.l2_high,
            "l2_factor": self.l2_factor >= 1.0,  # 1: a fixed L2 coefficient
            "l2_min": 0.0 <= self.l2_min <= cap,
            "random_response": 0.0 <= self.random_response < 1.0,
            "epochs": self.epochs >= 0,
            "pretrain_epochs": self.pretrain_epochs >= 0,
            "min_steps": self.min_steps is None or self.min_steps >= 0,
            "input_stats_segments": self.input_stats_segments is None
            or self.input_stats_segments >= 1,
            "cross_lipschitz": self.cross_lipschitz >= 0,
            "mean_teacher_weight": self.mean_teacher_weight >= 0,
            "mean_teacher_decay": 0.0 <= self.mean_teacher_decay < 1.0,
            "mean_teacher_rampup": self.mean_teacher_rampup >= 0,
        }
        check_settings(self, checks, "--trainer.")
        if self.l2_init > cap:
            raise ConfigError(
                f"--trainer.l2-init {self.l2_init!r} is above the L2 cap {cap!r} "
                "(--trainer.l2-max; unset, the env's default)"
            )

    @property
    def l2_cap(self) -> float:
        """``l2_max``, or :data:`L2_MAX` when it is left unset."""
        return L2_MAX if self.l2_max is None else self.l2_max

    @property
    def step_floor(self) -> int:
        """``min_steps``, or :data:`MIN_STEPS` when it is left unset."""
        return MIN_STEPS if self.min_steps is None else self.min_steps


class RewardTrainingDiverged(UserError):
    """The ensemble's loss became nan or inf (a far too high learning rate): the run stops
    with one line (exit code 1) instead of storing nan scores."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


class _SegmentCache:
    """Segment arrays stacked into tensors, ``(S, L, *shape)``, grown by doubling."""

    def __init__(self) -> None:
        self.row: dict[int, int] = {}
        self.obs: torch.Tensor | None = None
        self.acts: torch.Tensor | None = None
        self.size = 0

    @staticmethod
    def _tensors(seg: Segment) -> tuple[torch.Tensor, torch.Tensor]:
        """``seg``'s obs ``(L, *obs_shape)`` and acts ``(L, *act_shape)`` as tensors."""
        obs = torch.as_tensor(np.asarray(seg.obs))
        acts = torch.as_tensor(np.asarray(seg.acts))
        # MuJoCo observations arrive as float64; the networks compute in float32, so convert
        # once here rather than on every minibatch. Pixels stay uint8 (4x smaller).
        if obs.is_floating_point():
            obs = obs.float()
        if acts.is_floating_point():
            acts = acts.float()
        return obs, acts

    def add(self, *segs: Segment) -> None:
        """Cache the segments not cached yet, all or none: every shape is checked (against
        the cached segments, or the first of ``segs``) before anything is stored."""
        new = [(seg.id, *self._tensors(seg)) for seg in segs if seg.id not in self.row]
        if not new:
            return
        if self.obs is None:
            obs_shape, acts_shape = new[0][1].shape, new[0][2].shape
        else:
            obs_shape, acts_shape = self.obs.shape[1:], self.acts.shape[1:]
        for seg_id, obs, acts in new:
            if obs.shape != obs_shape:
                raise ValueError(
                    f"segment {seg_id} has shape {tuple(obs.shape)}, expected"
                    f" {tuple(obs_shape)} (obs of the segments before it)"
                )
            if acts.shape != acts_shape:
                raise ValueError(
                    f"segment {seg_id} has acts of shape {tuple(acts.shape)}, expected"
                    f" {tuple(acts_shape)} (acts of the segments before it)"
                )
        if self.obs is None:
            self.obs = torch.empty((16, *obs_shape), dtype=new[0][1].dtype)
            self.acts = torch.empty((16, *acts_shape), dtype=new[0][2].dtype)
        for seg_id, obs, acts in new:
            if self.size == len(self.obs):
                self.obs = torch.cat([self.obs, torch.empty_like(self.obs)])
                self.acts = torch.cat([self.acts, torch.empty_like(self.acts)])
            self.obs[self.size] = obs
            self.acts[self.size] = acts
            self.row[seg_id] = self.size
            self.size += 1


def preference_backward_in_parts(
    ensemble: RewardEnsemble,
    obs: torch.Tensor,
    acts: torch.Tensor,
    rows_a: torch.Tensor,
    rows_b: torch.Tensor,
    mu: torch.Tensor,
    random_response: float,
    pairs: int,
) -> torch.Tensor:
    """Backward of each member's mean preference loss over its minibatch, ``pairs`` pairs at
    a time (:meth:`RewardEnsemble.pairs_per_pass`): the gradients one backward of the whole
    would give, accumulated in ``.grad``.

    ``obs`` ``(S, L, *obs_shape)`` and ``acts`` ``(S, L, *act_shape)`` hold the segments;
    ``rows_a``, ``rows_b`` ``(K, B)`` are the rows of member k's pairs, ``mu`` ``(K, B)``
    their labels. A part's segments a and b go through the members in one pass, gathered
    straight from ``obs``. Returns the loss ``(K,)``, detached.
    """
    k, n = rows_a.shape
    total = torch.zeros(k)
    for i in range(0, n, pairs):
        rows = torch.cat([rows_a[:, i : i + pairs], rows_b[:, i : i + pairs]], dim=1)
        returns = ensemble.segment_returns(obs[rows], acts[rows], per_member=True)
        m = rows.shape[1] // 2
        part = preference_loss(
            returns[:, :m], returns[:, m:], mu[:, i : i + pairs], random_response
        )
        part = part.sum(1) / n
        part.sum().backward()
        total += part.detach()
    return total


def initial_weights(n_labels: int, n_initial: int) -> np.ndarray:
    """Sampling weight per label ``(n_labels,)`` under ``rebalance_initial``: the first
    ``n_initial`` labels weigh ``min(1, n_initial / n_later)``, the later ones 1."""
    out = np.ones(n_labels)
    n_later = n_labels - n_initial
    if n_later > n_initial > 0:
        out[:n_initial] = n_initial / n_later
    return out


class RewardTrainer:
    """Trains a :class:`RewardEnsemble` on a growing set of comparisons.

    Args:
        ensemble: the ensemble to train (in place).
        config: trainer settings.
        rng: randomness for validation splits, bootstrap counts and minibatches.
        extra_loss: optional ``f(ensemble, obs_a, acts_a, obs_b, acts_b) -> scalar`` added to
            each step's loss (a custom regularizer).
        unlabeled: ``sampler(n, rng) -> (obs, acts)`` of unlabeled steps, needed when
            ``config.mean_teacher_weight > 0``.
    """

    def __init__(
        self,
        ensemble: RewardEnsemble,
        config: TrainerConfig,
        rng: np.random.Generator,
        extra_loss: Callable[..., torch.Tensor] | None = None,
        unlabeled: UnlabeledSampler | None = None,
    ) -> None:
        if rng is None:
            raise ValueError("RewardTrainer needs an explicit rng (np.random.Generator)")
        self.ensemble = ensemble
        # An unset cap is L2_MAX here; replacing it checks l2_init and l2_min against it.
        self.config = dataclasses.replace(config, l2_max=config.l2_cap)
        self.rng = rng
        self.extra_loss = extra_loss
        self.l2 = config.l2_init
        self.optimizer = torch.optim.Adam(ensemble.parameters(), lr=config.lr)
        self.cache = _SegmentCache()
        self.seg_a: list[int] = []
        self.seg_b: list[int] = []
        self.mu_a: list[float] = []
        self.is_val: list[bool] = []
        self.counts = np.zeros((0, ensemble.n_members), dtype=np.int64)
        self.steps = 0
        self.input_stats_from = 0  # labelled segments the input statistics were taken from
        self.n_initial: int | None = None  # labels at the first training (the up-front ones)
        self.mean_teacher: MeanTeacherConsistency | None = None
        if config.mean_teacher_weight > 0:
            if unlabeled is None:
                raise ValueError("mean-teacher training needs an unlabeled sampler")
            self.mean_teacher = MeanTeacherConsistency(
                ensemble, unlabeled, config.mean_teacher_weight, config.mean_teacher_decay,
                config.mean_teacher_rampup,
            )  # fmt: skip

    def __len__(self) -> int:
        return len(self.mu_a)

    # -- data ---------------------------------------------------------------------------
    def add(self, comparison: Comparison, seg_a: Segment | None, seg_b: Segment | None) -> None:
        """Add one labelled comparison (its segments are cached as tensors). A segment added
        before, with an earlier comparison, may be passed as None.

        Segments carry the ids the comparison names (``seg_a.id == comparison.segment_a``),
        with obs ``(L, *obs_shape)`` and acts ``(L, *act_shape)`` shaped like those added
        before. Everything is checked first: a ValueError leaves the trainer as it was.
        """
        for name, seg_id, seg in (
            ("segment_a", comparison.segment_a, seg_a),
            ("segment_b", comparison.segment_b, seg_b),
        ):
            if seg is None and seg_id not in self.cache.row:
                raise ValueError(
                    f"comparison.{name}={seg_id} was never given to this trainer: pass its"
                    f" Segment (seg_{name[-1]}) with the first comparison that uses it"
                )
            if seg is not None and seg.id != seg_id:
                raise ValueError(
                    f"segment given for comparison.{name}={seg_id} has id {seg.id}; give"
                    " segments their pool ids (SegmentPool.add sets them)"
                )
        self.cache.add(*(seg for seg in (seg_a, seg_b) if seg is not None))
        self.seg_a.append(self.cache.row[comparison.segment_a])
        self.seg_b.append(self.cache.row[comparison.segment_b])
        self.mu_a.append(comparison.mu[0])
        self.is_val.append(bool(self.rng.random() < self.config.holdout))
        counts = self.rng.poisson(1.0, size=(1, self.ensemble.n_members))
        self.counts = np.concatenate([self.counts, counts])

    def _split(self, val: bool) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.is_val, dtype=bool) == val)

    def _batch(
        self, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Gather ``idx`` (``(K, B)`` label indices) into per-member segment tensors: obs_a
        ``(K, B, L, *obs_shape)``, acts_a ``(K, B, L, *act_shape)``, obs_b, acts_b alike, and
        mu ``(K, B)``."""
        a, b, mu = self._pairs(idx)
        c = self.cache
        return c.obs[a], c.acts[a], c.obs[b], c.acts[b], mu

    def _pairs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Labels ``idx``'s cache rows of segments a and b, and mu, each like ``idx``."""
        mu = torch.as_tensor(self.mu_a, dtype=torch.float32)[idx]
        return torch.as_tensor(self.seg_a)[idx], torch.as_tensor(self.seg_b)[idx], mu

    # -- training -----------------------------------------------------------------------
    def train(self, epochs: float | None = None) -> dict[str, float]:
        """Train for ``epochs`` passes over the training labels; return metrics.

        L2 adapts after every pass. An ensemble that normalizes its inputs first takes their
        mean and std from every labelled segment, until they are kept
        (``input_stats_segments``). Returns ``losses/reward_train``, ``losses/reward_val``,
        ``charts/reward_val_accuracy`` (NaN where there is no validation data), ``losses/l2``.
        """
        cfg = self.config
        train_idx = self._split(val=False)
        if len(train_idx) == 0:
            return {}
        epochs = cfg.epochs if epochs is None else epochs
        steps_per_epoch = max(1, math.ceil(len(train_idx) / cfg.batch_size))
        total = max(cfg.step_floor, math.ceil(epochs * steps_per_epoch))
        k = self.ensemble.n_members
        if self.n_initial is None:
            self.n_initial = len(self)
        weights = self.counts[train_idx].T.astype(np.float64)  # (K, N_train)
        # A member whose bootstrap drew no label so far falls back to uniform weights.
        weights[weights.sum(1) == 0] = 1.0
        if cfg.rebalance_initial:
            weights *= initial_weights(len(self), self.n_initial)[train_idx]
        probs = weights / weights.sum(1, keepdims=True)
        if self.ensemble.normalize_inputs and not self.input_stats_kept:
            # Every labelled segment's steps, validation ones included (no labels used).
            self.ensemble.set_input_normalization(self.cache.obs[: self.cache.size])
            self.input_stats_from = self.cache.size
        self.ensemble.train()
        chunk = self.ensemble.pairs_per_pass(self.cache.obs.shape[1])  # pairs per pass
        epoch_losses: list[float] = []
        for step in range(total):
            idx = np.stack(
                [self.rng.choice(train_idx, size=cfg.batch_size, p=probs[m]) for m in range(k)]
            )
            idx = torch.as_tensor(idx)
            self.optimizer.zero_grad(set_to_none=True)
            if chunk is None or chunk >= cfg.batch_size:
                obs_a, acts_a, obs_b, acts_b, mu = self._batch(idx)
                ret_a = self.ensemble.segment_returns(obs_a, acts_a, per_member=True)
                ret_b = self.ensemble.segment_returns(obs_b, acts_b, per_member=True)
                data_loss = preference_loss(ret_a, ret_b, mu, cfg.random_response).mean(1)
                loss = data_loss.sum()
            else:  # the data loss's gradients are in .grad already, taken in parts
                rows_a, rows_b, mu = self._pairs(idx)
                data_loss = preference_backward_in_parts(
                    self.ensemble, self.cache.obs, self.cache.acts, rows_a, rows_b, mu,
                    cfg.random_response, chunk,
                )  # fmt: skip
                loss = torch.zeros(())
                if cfg.cross_lipschitz > 0 or self.extra_loss is not None:
                    obs_a, acts_a, obs_b, acts_b, mu = self._batch(idx)
            epoch_losses.append(float(data_loss.detach().mean()))  # data_loss: (K,)
            if not math.isfinite(epoch_losses[-1]):
                raise RewardTrainingDiverged(
                    f"the reward model's loss became {epoch_losses[-1]} at training step"
                    f" {self.steps:,}: its learning rate --trainer.lr {cfg.lr:g} is too high"
                )
            loss = loss + self.l2 * self.ensemble.parameter_l2().sum()
            if cfg.cross_lipschitz > 0:
                penalty = cross_lipschitz_preference(self.ensemble, obs_a, acts_a, obs_b, acts_b)
                loss = loss + cfg.cross_lipschitz * penalty
            if self.mean_teacher is not None:
                loss = loss + self.mean_teacher.loss(self.steps, self.rng)
            if self.extra_loss is not None:
                loss = loss + self.extra_loss(self.ensemble, obs_a, acts_a, obs_b, acts_b)
            loss.backward()
            self.optimizer.step()
            if self.mean_teacher is not None:
                self.mean_teacher.update()
            self.steps += 1
            if step == total - 1:
                # The round's metrics; their validation loss also adapts L2 (one pass, not two).
                metrics = self.evaluate()
                self._adapt_l2(float(np.mean(epoch_losses)), metrics["losses/reward_val"])
                return {**metrics, "losses/l2": self.l2}
            if (step + 1) % steps_per_epoch == 0:
                self._adapt_l2(float(np.mean(epoch_losses)))
                epoch_losses.clear()
        return self.evaluate()

    @property
    def input_stats_kept(self) -> bool:
        """Whether the ensemble's input statistics are final (``input_stats_segments``)."""
        enough = self.config.input_stats_segments
        return enough is not None and self.input_stats_from >= enough

    @torch.no_grad()
    def _losses(self, idx: np.ndarray) -> tuple[float, float]:
        """Mean member loss and ensemble accuracy (on non-"equal" labels) over labels ``idx``."""
        if len(idx) == 0:
            return math.nan, math.nan
        losses, correct, decided = [], 0, 0
        returns = self.ensemble.segment_returns  # in eval mode; ``training`` left alone
        for chunk in np.array_split(idx, max(1, math.ceil(len(idx) / EVAL_CHUNK))):
            i = torch.as_tensor(chunk)
            a, b = torch.as_tensor(self.seg_a)[i], torch.as_tensor(self.seg_b)[i]
            mu = torch.as_tensor(self.mu_a, dtype=torch.float32)[i]
            ret_a = returns(self.cache.obs[a], self.cache.acts[a], train=False)
            ret_b = returns(self.cache.obs[b], self.cache.acts[b], train=False)
            losses.append(preference_loss(ret_a, ret_b, mu, self.config.random_response).mean(0))
            p = preference_probs(ret_a, ret_b, self.config.random_response).mean(0)
            mask = mu != 0.5
            correct += int(((p > 0.5) == (mu > 0.5))[mask].sum())
            decided += int(mask.sum())
        loss = float(torch.cat(losses).mean())
        return loss, (correct / decided if decided else math.nan)

    def _adapt_l2(self, train_loss: float, val_loss: float | None = None) -> None:
        """Keep validation loss within [l2_low, l2_high] x training loss.

        ``train_loss`` is the mean minibatch loss of the epoch just finished (on each
        member's bootstrap sample), which spares a full pass over the training labels;
        ``val_loss`` is computed here unless given (NaN: no validation labels).
        """
        if val_loss is None:
            val_loss, _ = self._losses(self._split(val=True))
        if math.isnan(val_loss):
            return
        ratio = val_loss / max(train_loss, 1e-8)
        if ratio > self.config.l2_high:
            self.l2 *= self.config.l2_factor
        elif ratio < self.config.l2_low:
            self.l2 /= self.config.l2_factor
        self.l2 = min(max(self.l2, self.config.l2_min), self.config.l2_cap)

    def evaluate(self) -> dict[str, float]:
        """Losses and accuracies on the training and validation labels (NaN where there are
        none), the current L2 weight and the label count; trains nothing."""
        train_loss, train_acc = self._losses(self._split(val=False))
        val_loss, val_acc = self._losses(self._split(val=True))
        return {
            "losses/reward_train": train_loss,
            "losses/reward_val": val_loss,
            "charts/reward_train_accuracy": train_acc,
            "charts/reward_val_accuracy": val_acc,
            "losses/l2": self.l2,
            "charts/labels_trained": float(len(self)),
        }

    # -- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Per-label split and bootstrap counts, in label order, plus optimizer state, the
        generator's state and the mean teacher's weights."""
        state = {
            "l2": self.l2,
            "is_val": list(self.is_val),
            "counts": self.counts.copy(),
            "optimizer": self.optimizer.state_dict(),
            "steps": self.steps,
            "input_stats_from": self.input_stats_from,
            "n_initial": self.n_initial,
            "rng": copy.deepcopy(self.rng.bit_generator.state),
        }
        if self.mean_teacher is not None:
            ema = self.mean_teacher.teacher
            state["mean_teacher"] = {
                "teacher": {k: v.clone() for k, v in ema.teacher.state_dict().items()},
                "num_updates": ema.num_updates,
            }
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore after the same labels were re-added in the same order (see the loop's resume)."""
        n = min(len(state["is_val"]), len(self))
        self.is_val[:n] = state["is_val"][:n]
        self.counts[:n] = state["counts"][:n]
        self.l2 = float(state["l2"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
        self.input_stats_from = int(state.get("input_stats_from", 0))
        n_initial = state.get("n_initial")
        self.n_initial = None if n_initial is None else int(n_initial)
        if "rng" in state:  # checkpoints since 2026-12-05
            self.rng.bit_generator.state = copy.deepcopy(state["rng"])
        if self.mean_teacher is not None and "mean_teacher" in state:
            ema = self.mean_teacher.teacher
            ema.teacher.load_state_dict(state["mean_teacher"]["teacher"])
            ema.num_updates = int(state["mean_teacher"]["num_updates"])

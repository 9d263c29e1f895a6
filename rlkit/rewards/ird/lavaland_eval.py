"""The Lavaland experiment: infer ``w*`` from the proxy on a training map, plan on test maps.

For each condition (``onehot``: the agent sees terrain; ``latent``: it sees noisy vectors and
classifies them with :class:`OpenSetGaussianClassifier`, whose "novel" class takes lava's
feature slot) the steps are:

1. features of one lava-free training map, and ``phi~(w~)``, the proxy-optimal counts there;
   (the latent classifier learns from ``classifier_maps`` labelled lava-free maps);
2. the IRD posterior (Sample-Z or MaxEnt-Z, MCMC or importance sampling);
3. on every test map (with its lava patch, and the same map without it) each planner's path
   (risk-averse planners see the samples in units of their reward spread over the training
   cells, unless ``normalize_scale=False``), scored under the *true* terrain and reward: did
   it enter lava, and its regret (optimal true return minus its true return over the horizon).

All conditions see the same training and test maps (their streams are seeded separately).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

from envs.lavaland import GridMDP, tabular_mdp
from envs.lavaland_maps import (
    DEFAULT_SIZE,
    LAVA,
    N_TERRAIN,
    PROXY_WEIGHTS,
    TRUE_WEIGHTS,
    LatentTerrain,
    LavalandMap,
    add_lava,
    generate_map,
    onehot_features,
)
from rlkit.rewards.ird.classifier import OpenSetGaussianClassifier
from rlkit.rewards.ird.planners import PLANNERS, plan_all
from rlkit.rewards.ird.posterior import (
    GaussianPrior,
    Posterior,
    maxent_z,
    sample_posterior,
    sample_z,
)
from rlkit.rewards.ird.value_iteration import value_iteration

Condition = Literal["onehot", "latent"]
CONDITIONS: tuple[str, ...] = ("onehot", "latent")


@dataclasses.dataclass(frozen=True)
class LavalandEvalSettings:
    """Settings of one Lavaland evaluation (see the module doc).

    Attributes:
        size: map side in cells.
        n_maps: number of random test maps.
        n_samples: posterior samples of ``w*``.
        n_proxy: proxy rewards drawn for Sample-Z.
        beta: designer rationality in the observation model.
        prior_std: standard deviation of the isotropic Gaussian prior over weights.
        normalizer: ``"sample"`` (Sample-Z) or ``"maxent"`` (MaxEnt-Z).
        sampler: ``"mcmc"`` or ``"importance"`` (then resampled to ``n_samples``).
        alpha: CVaR level.
        planners: planners to run (from :data:`PLANNERS`).
        conditions: conditions to run (from :data:`CONDITIONS`).
        latent: the latent condition's observation model.
        n_iters: fictitious-play iterations per risk-averse plan.
        n_candidates: posterior samples whose optimal paths are candidate plans.
        n_examples: test maps whose paths are kept for plotting.
        classifier_maps: lava-free maps (the training map first) whose labelled
            observations train the latent condition's classifier.
        normalize_scale: put each posterior sample in units of its reward spread over the
            training map's cells before risk-averse planning (see
            :func:`rlkit.rewards.ird.planners.normalize_scale`).
    """

    size: int = DEFAULT_SIZE
    n_maps: int = 100
    n_samples: int = 1000
    n_proxy: int = 1000
    beta: float = 3.0
    prior_std: float = 1.0
    normalizer: Literal["sample", "maxent"] = "sample"
    sampler: Literal["mcmc", "importance"] = "mcmc"
    alpha: float = 0.1
    planners: tuple[str, ...] = PLANNERS
    conditions: tuple[str, ...] = CONDITIONS
    latent: LatentTerrain = LatentTerrain()
    n_iters: int = 20
    n_candidates: int = 64
    n_examples: int = 3
    classifier_maps: int = 10
    normalize_scale: bool = True


@dataclasses.dataclass(frozen=True)
class EvalRow:
    """One planner under one condition, averaged over the test maps.

    Attributes:
        planner: planner name.
        condition: ``"onehot"`` or ``"latent"``.
        lava_rate: fraction of test maps on which its path enters lava.
        regret: mean true-reward regret on the test maps (with lava).
        regret_lava_free: mean regret on the same maps without their lava.
        n_maps: number of test maps.
    """

    planner: str
    condition: str
    lava_rate: float
    regret: float
    regret_lava_free: float
    n_maps: int


@dataclasses.dataclass(frozen=True)
class Example:
    """Paths on one test map, for plotting: ``paths[condition][planner]`` is ``(T + 1,)``."""

    lavaland_map: LavalandMap
    paths: dict[str, dict[str, np.ndarray]]


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """Rows per (condition, planner), posteriors per condition, example paths, timings (s)."""

    rows: list[EvalRow]
    posteriors: dict[str, Posterior]
    examples: list[Example]
    inference_seconds: dict[str, float]


class LatentView:
    """The latent condition's agent: observes noisy vectors, classifies them into features."""

    def __init__(
        self, latent: LatentTerrain, train_maps: list[LavalandMap], rng: np.random.Generator
    ) -> None:
        self.latent = latent
        obs = np.concatenate(
            [latent.observe(m.terrain, rng).reshape(-1, latent.dim) for m in train_maps]
        )
        labels = np.concatenate([m.terrain.reshape(-1) for m in train_maps])
        # Labels exist for the terrains training shows; lava is not among them.
        self.classifier = OpenSetGaussianClassifier.fit(obs, labels, n_classes=N_TERRAIN - 1)

    def features(self, lmap: LavalandMap, rng: np.random.Generator) -> np.ndarray:
        """``[p(dirt), p(grass), p(target), p(novel), 1]`` per cell, shape ``(S, 5)``."""
        obs = self.latent.observe(lmap.terrain, rng).reshape(-1, self.latent.dim)
        probs = self.classifier.predict_proba(obs)
        return np.concatenate([probs, np.ones((len(probs), 1))], axis=1)


def infer_posterior(
    train_mdp: GridMDP, settings: LavalandEvalSettings, rng: np.random.Generator
) -> tuple[Posterior, np.ndarray]:
    """The IRD posterior (resampled to equal weights) and ``phi~(w~)`` on ``train_mdp``."""
    prior = GaussianPrior.isotropic(train_mdp.features.shape[1], settings.prior_std)
    proxy_counts = value_iteration(train_mdp, PROXY_WEIGHTS).feature_counts[0]
    if settings.normalizer == "sample":
        normalizer = sample_z(train_mdp, prior, settings.n_proxy, settings.beta, rng)
    elif settings.normalizer == "maxent":
        normalizer = maxent_z(train_mdp, settings.beta)
    else:
        raise ValueError(f"normalizer must be 'sample' or 'maxent', got {settings.normalizer!r}")
    post = sample_posterior(
        proxy_counts, normalizer, prior, settings.n_samples, rng, method=settings.sampler
    )
    if settings.sampler == "importance":
        post = post.resample(settings.n_samples, rng)
    return post, proxy_counts


def run_lavaland_eval(
    settings: LavalandEvalSettings, seed: int, on_map: Callable[[], None] | None = None
) -> EvalResult:
    """Run the experiment; ``on_map`` is called after each (condition, test map)."""
    unknown = sorted(set(settings.conditions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; choose from {', '.join(CONDITIONS)}")
    maps_rng = np.random.default_rng([seed, 0])
    train = generate_map(maps_rng, settings.size)
    tests = []
    for _ in range(settings.n_maps):
        base = generate_map(maps_rng, settings.size)
        tests.append((add_lava(base, maps_rng), base))

    rows: list[EvalRow] = []
    posteriors: dict[str, Posterior] = {}
    timings: dict[str, float] = {}
    examples = [Example(lava, {}) for lava, _ in tests[: settings.n_examples]]
    for condition in settings.conditions:
        rng = np.random.default_rng([seed, 1 + CONDITIONS.index(condition)])
        view = None
        if condition == "latent":
            extra = [generate_map(rng, settings.size) for _ in range(settings.classifier_maps - 1)]
            view = LatentView(settings.latent, [train, *extra], rng)

        def agent_features(
            lmap: LavalandMap, view: LatentView | None = view, rng: np.random.Generator = rng
        ) -> np.ndarray:
            return onehot_features(lmap.terrain) if view is None else view.features(lmap, rng)

        start = time.perf_counter()
        train_mdp = tabular_mdp(train, agent_features(train))
        post, proxy_counts = infer_posterior(train_mdp, settings, rng)
        reference = train_mdp.features if settings.normalize_scale else None
        timings[condition] = time.perf_counter() - start
        posteriors[condition] = post

        lava_hits = {p: 0 for p in settings.planners}
        regrets = {p: [0.0, 0.0] for p in settings.planners}
        for mi, (lava_map, base_map) in enumerate(tests):
            for vi, lmap in enumerate((lava_map, base_map)):
                true_mdp = tabular_mdp(lmap)
                best = float(value_iteration(true_mdp, TRUE_WEIGHTS).values[0])
                plans = plan_all(
                    tabular_mdp(lmap, agent_features(lmap)),
                    post.samples,
                    PROXY_WEIGHTS,
                    proxy_counts,
                    rng,
                    planners=settings.planners,
                    alpha=settings.alpha,
                    n_iters=settings.n_iters,
                    n_candidates=settings.n_candidates,
                    scale_reference=reference,
                )
                for name, plan in plans.items():
                    counts = true_mdp.features[plan.path[1:]].sum(axis=0)
                    regrets[name][vi] += best - float(TRUE_WEIGHTS @ counts)
                    if vi == 0:
                        lava_hits[name] += int(counts[LAVA] > 0)
                if vi == 0 and mi < len(examples):
                    examples[mi].paths[condition] = {k: p.path for k, p in plans.items()}
            if on_map is not None:
                on_map()
        n = max(settings.n_maps, 1)
        rows += [
            EvalRow(p, condition, lava_hits[p] / n, regrets[p][0] / n, regrets[p][1] / n, n)
            for p in settings.planners
        ]
    return EvalResult(rows, posteriors, examples, timings)

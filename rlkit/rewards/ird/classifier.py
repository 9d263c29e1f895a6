"""An open-set Gaussian classifier: noisy observations -> soft terrain features.

In Lavaland's latent condition the agent sees each cell only as a noisy vector and must learn
which terrain it is from labelled training cells. Training maps hold no lava, so the
classifier knows three classes; a plain softmax would map lava's unfamiliar observations
confidently onto one of them, hiding the new terrain. Instead the class-conditional
Gaussians (shared isotropic variance) compete with a broad "novel" component centred on the
training data (variance ``novelty_scale`` times the data's total variance, prior
``novelty_prior``): observations far from every known class land there. The agent's features
for a cell are the posterior class probabilities ``[p(class_1..K | o), p(novel | o)]``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class OpenSetGaussianClassifier:
    """Known classes as isotropic Gaussians plus a broad novelty component.

    Attributes:
        means: class means, shape ``(K, D)``.
        var: shared per-coordinate variance of the classes (MLE).
        log_priors: log prior of each known class then of "novel", shape ``(K + 1,)``.
        novelty_mean: centre of the novelty component, shape ``(D,)``.
        novelty_var: its per-coordinate variance.
    """

    means: np.ndarray
    var: float
    log_priors: np.ndarray
    novelty_mean: np.ndarray
    novelty_var: float

    @classmethod
    def fit(
        cls,
        obs: np.ndarray,
        labels: np.ndarray,
        n_classes: int,
        novelty_scale: float = 4.0,
        novelty_prior: float = 0.02,
    ) -> OpenSetGaussianClassifier:
        """Fit on labelled observations ``obs`` (``(n, D)``) with ``labels`` in ``[0, n_classes)``.

        Known classes share the prior ``1 - novelty_prior`` equally; a class absent from the
        data gets prior 0 (it can never be predicted).
        """
        obs = np.asarray(obs, dtype=np.float64)
        counts = np.bincount(labels, minlength=n_classes).astype(float)
        if counts.sum() == 0 or labels.max() >= n_classes:
            raise ValueError("need at least one labelled observation with labels < n_classes")
        means = np.zeros((n_classes, obs.shape[1]))
        present = counts > 0
        np.add.at(means, labels, obs)
        means[present] /= counts[present, None]
        resid = obs - means[labels]
        var = max(float(np.mean(resid**2)), 1e-6)
        centre = obs.mean(axis=0)
        total_var = max(float(np.mean((obs - centre) ** 2)), var)
        # Uniform over the classes seen, not their frequencies: the target is one cell a map
        # but must never be mistaken for grass.
        priors = np.append((1.0 - novelty_prior) * present / present.sum(), novelty_prior)
        with np.errstate(divide="ignore"):
            log_priors = np.log(priors)
        return cls(means, var, log_priors, centre, novelty_scale * total_var)

    def predict_proba(self, obs: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, K + 1)`` for observations ``(n, D)``; the last is "novel"."""
        obs = np.asarray(obs, dtype=np.float64)
        d = obs.shape[1]
        sq = ((obs[:, None, :] - self.means[None]) ** 2).sum(axis=2)
        known = -0.5 * sq / self.var - 0.5 * d * np.log(self.var)
        novel = -0.5 * ((obs - self.novelty_mean) ** 2).sum(axis=1) / self.novelty_var
        novel = novel - 0.5 * d * np.log(self.novelty_var)
        logits = np.concatenate([known, novel[:, None]], axis=1) + self.log_priors
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

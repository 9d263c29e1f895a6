"""How often each labeler agrees with the current reward model and with the true reward.

- With the reward model: on every left/right label, whether the run's latest reward
  ensemble (from its newest checkpoint) predicts a higher return for the segment the
  labeler chose. The model is reloaded whenever the trainer writes a new checkpoint;
  before the first checkpoint there is no model and the figure is left empty.
- With the synthetic teacher: on gold queries (pairs whose true returns differ clearly),
  whether the labeler gave the rational teacher's answer (the higher true return wins).
  "Can't tell" is counted apart and not held against anyone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rlkit.store import Store

if TYPE_CHECKING:
    from rlkit.rewards.ensemble import RewardEnsemble


@dataclasses.dataclass
class Agreement:
    """Agreement counts for one labeler."""

    agree: int = 0
    total: int = 0

    @property
    def rate(self) -> float | None:
        """``agree / total``, or None before the first answer."""
        return self.agree / self.total if self.total else None


def rational_choice(return_a: float, return_b: float) -> str:
    """The rational synthetic teacher's answer (rlkit.rewards.teachers, noise "rational")."""
    if return_a == return_b:
        return "equal"
    return "left" if return_a > return_b else "right"


def gold_agreement(store: Store) -> dict[str, Agreement]:
    """Per labeler: people's answers on gold queries that match the rational teacher's."""
    rows = store.conn.execute(
        "SELECT l.labeler, l.choice, sa.true_return, sb.true_return FROM labels l"
        " JOIN queries q ON q.id = l.query_id JOIN segments sa ON sa.id = q.segment_a"
        " JOIN segments sb ON sb.id = q.segment_b"
        " WHERE q.gold = 1 AND l.source = 'human' AND l.choice != 'skip'"
    ).fetchall()
    out: dict[str, Agreement] = {}
    for labeler, choice, ra, rb in rows:
        a = out.setdefault(labeler, Agreement())
        a.total += 1
        a.agree += int(choice == rational_choice(ra, rb))
    return out


class ModelJudge:
    """The run's latest reward ensemble, rebuilt from ``config.json`` and the newest checkpoint.

    Args:
        run_dir: the run directory.
    """

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.checkpoint: str | None = None
        self.ensemble = None
        self._returns: dict[int, float] = {}

    def refresh(self) -> bool:
        """Load the newest checkpoint's ensemble if it changed; False when there is none."""
        from rlkit.core.checkpoint import CheckpointError, CheckpointManager

        manager = CheckpointManager(self.run_dir)
        try:
            name = manager.latest().name
        except CheckpointError:
            return self.ensemble is not None
        if name == self.checkpoint:
            return True
        try:
            _, state = manager.load_latest()
            ensemble = self._build()
            ensemble.load_state_dict(state["ensemble"])
        except (CheckpointError, KeyError, RuntimeError, ValueError):
            return self.ensemble is not None  # a checkpoint being replaced; keep the last model
        ensemble.eval()
        self.ensemble, self.checkpoint, self._returns = ensemble, name, {}
        return True

    def _build(self) -> RewardEnsemble:
        """The run's ensemble, untrained, built as its trainer builds it (backbone settings too)."""
        from envs import EnvSpec, env_kind, make_vec_env
        from rlkit.core.rundir import load_config
        from rlkit.loops.preference import reward_ensemble
        from rlkit.loops.preference_config import PrefsConfig

        cfg = PrefsConfig.from_saved(load_config(self.run_dir))
        venv = make_vec_env(EnvSpec(cfg.env), 1, cfg.seed)
        try:
            return reward_ensemble(cfg, env_kind(cfg.env), venv)
        finally:
            venv.close()

    def predicted_return(self, store: Store, segment_id: int) -> float:
        """The ensemble's return for a stored segment: mean over members of normalized rewards."""
        import torch

        if segment_id not in self._returns:
            seg = store.load_segment(segment_id)
            with torch.no_grad():
                r = self.ensemble.reward(torch.as_tensor(seg.obs), torch.as_tensor(seg.acts))
            self._returns[segment_id] = float(r.sum())
        return self._returns[segment_id]

    def agreement(self, store: Store) -> dict[str, Agreement]:
        """Per labeler: left/right labels whose chosen segment the model ranks higher."""
        if not self.refresh():
            return {}
        rows = store.conn.execute(
            "SELECT l.labeler, l.choice, q.segment_a, q.segment_b FROM labels l"
            " JOIN queries q ON q.id = l.query_id"
            " WHERE l.source = 'human' AND l.choice IN ('left', 'right')"
        ).fetchall()
        out: dict[str, Agreement] = {}
        for labeler, choice, a, b in rows:
            ra, rb = self.predicted_return(store, a), self.predicted_return(store, b)
            agg = out.setdefault(labeler, Agreement())
            agg.total += 1
            agg.agree += int(choice == rational_choice(ra, rb))
        return out


def held_out_agreement(judge: ModelJudge, store: Store, pairs: np.ndarray) -> float:
    """Share of ``(N, 2)`` segment-id pairs the model orders like their true returns (ties out)."""
    agree = total = 0
    for a, b in pairs:
        ta, tb = (store.load_segment(int(s)).true_return for s in (a, b))
        if ta == tb:
            continue
        total += 1
        pa, pb = judge.predicted_return(store, int(a)), judge.predicted_return(store, int(b))
        agree += int((pa > pb) == (ta > tb))
    return agree / total if total else float("nan")

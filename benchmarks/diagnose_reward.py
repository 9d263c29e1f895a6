"""What does a learned reward prefer? A preference run's ensemble judged on two policies' own segments.

The held-out accuracy measures the reward model on the pairs that were asked about. This asks
what it thinks of behaviour it may never have been asked about: it rolls out the run's policy
and another policy (for example TRPO on the true reward, saved by ``bench_prefs.py --keep``)
on the true env (no early termination), cuts both into the run's segments, and reports:

- per policy: the true return, the learned reward per step (normalized, as the policy sees it),
  and the correlation of the learned per-step reward with the true one and with each reward
  term the env reports in ``info`` (``reward_forward``, ``reward_survive``, ...);
- across policies: the share of (run segment, other segment) pairs where the ensemble prefers
  the other policy's segment, next to the share where the true reward does, and the rank
  correlation between predicted and true segment returns over all segments.

If the ensemble ranks the better policy's segments above the run's, the learned reward is
right about it and the policy failed to find it (optimization); if it ranks them below, the
learned reward is wrong off the queried distribution. (Used on MuJoCo runs so far.)

Where the env reports reward terms, each policy's row also fits the learned per-step reward, by
least squares with an intercept, to those terms (``fit_terms``: one coefficient per
term and the R^2). The true reward is the terms' sum, so a right reward has equal
coefficients and an R^2 near 1; a term whose coefficient stands apart is over- or under-weighted.

``--ensemble-at CHECKPOINT`` judges with the ensemble of an earlier checkpoint of the run (a
directory name under ``RUN/checkpoints``, e.g. ``step_0000000000``: the reward pretrained on the
up-front labels, before RL), still on the latest policy's rollouts: how right the reward was
early about the behaviour the run ended in. ``--retrain`` then trains on that ensemble.

``--retrain STEPS`` also trains a fresh policy (the run's preset and seed) for ``STEPS`` steps on
the run's final learned reward, frozen, and reports its true return (``retrain_true_return``):
if that matches RL on the true reward, the final reward is good enough and what held the run
back is the path there (a reward that changes while the policy learns).

    .venv/bin/python benchmarks/bench_prefs.py --envs Hopper-v5 --seeds 1 --keep /tmp/keep
    .venv/bin/python benchmarks/diagnose_reward.py /tmp/keep/Hopper-v5_seed1/run \\
        --other /tmp/keep/Hopper-v5_seed1/true_reward_agent.zip
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from agents.presets import make_agent
from envs import EnvSpec, env_kind, make_vec_env
from rlkit.core.checkpoint import CheckpointManager, load_checkpoint
from rlkit.core.errors import UserError
from rlkit.core.rundir import load_config
from rlkit.core.seeding import seed_everything
from rlkit.loops.evaluation import eval_spec, evaluate_policy_true, load_policy
from rlkit.loops.preference import reward_ensemble, segment_length
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.rollout_reward import RolloutRewardCallback
from rlkit.rewards.vec_wrapper import LearnedRewardVecEnv


def rollout(agent: object, spec: EnvSpec, episodes: int, seed: int, deterministic: bool) -> dict:
    """``episodes`` whole episodes of one env: obs ``(T, *obs)``, acts ``(T, *act)``, rewards ``(T,)``,
    episode ids ``(T,)`` and each ``info`` reward term ``(T,)``."""
    venv = make_vec_env(spec, 1, seed)
    obs = venv.reset()
    out: dict[str, list] = {"obs": [], "acts": [], "true": [], "episode": []}
    terms: dict[str, list] = {}
    episode = 0
    while episode < episodes:
        act, _ = agent.predict(obs, deterministic=deterministic)
        out["obs"].append(obs[0])
        out["acts"].append(act[0])
        obs, rew, done, infos = venv.step(act)
        out["true"].append(float(rew[0]))
        out["episode"].append(episode)
        for key, value in infos[0].items():
            if key.startswith("reward_") and np.isscalar(value):
                terms.setdefault(key, []).append(float(value))
        episode += int(done[0])
    venv.close()
    result = {k: np.asarray(v) for k, v in out.items()}
    result["terms"] = {k: np.asarray(v) for k, v in terms.items() if len(v) == len(out["true"])}
    return result


def segments(data: dict, seg_len: int) -> np.ndarray:
    """Start indices of non-overlapping ``seg_len`` windows inside single episodes."""
    starts = []
    for ep in np.unique(data["episode"]):
        idx = np.flatnonzero(data["episode"] == ep)
        starts += list(range(idx[0], idx[-1] + 2 - seg_len, seg_len))
    return np.asarray(starts, dtype=np.int64)


def rank_corr(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected for continuous returns)."""
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def corr(x: np.ndarray, y: np.ndarray) -> float | None:
    return None if np.std(x) == 0 or np.std(y) == 0 else round(float(np.corrcoef(x, y)[0, 1]), 3)


def judge(ensemble: RewardEnsemble, data: dict, seg_len: int) -> dict:
    """Per-step learned reward and per-segment predicted/true returns of one rollout."""
    obs = torch.as_tensor(data["obs"], dtype=torch.float32)
    continuous = np.issubdtype(data["acts"].dtype, np.floating)
    acts = torch.as_tensor(data["acts"], dtype=torch.float32 if continuous else torch.int64)
    with torch.no_grad():
        learned = ensemble.reward(obs, acts).numpy()
        # Continuous actions: the same states with zero actions, to see the actions' weight.
        still = ensemble.reward(obs, torch.zeros_like(acts)).numpy() if continuous else None
    starts = segments(data, seg_len)
    window = starts[:, None] + np.arange(seg_len)
    return {
        "learned": learned,
        "learned_zero_action": still,
        "seg_pred": learned[window].sum(1),
        "seg_true": data["true"][window].sum(1),
    }


class CurveCallback(BaseCallback):
    """Mean true return of the last 100 training episodes, every ``every`` steps."""

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.curve: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        done = self.model.num_timesteps
        due = not self.curve or done - self.curve[-1][0] >= self.every
        if due and self.model.ep_info_buffer:
            mean = float(np.mean([ep["r"] for ep in self.model.ep_info_buffer]))
            self.curve.append((int(done), round(mean, 1)))


def retrain(
    cfg: PrefsConfig, kind: str, ensemble: RewardEnsemble, steps: int
) -> tuple[float, list[tuple[int, float]]]:
    """A fresh policy trained for ``steps`` on the frozen learned reward: its true return
    (deterministic evaluation) and its training curve ``[(step, mean true return)]``."""
    n_envs = cfg.vec_envs(kind)
    seed_everything(cfg.seed)
    venv = make_vec_env(cfg.env_spec(), n_envs, cfg.seed)  # as in training
    reward_env = LearnedRewardVecEnv(venv, ensemble, cfg.policy_reward_scale(kind), deferred=True)
    agent = make_agent(cfg.policy, reward_env, kind, cfg.seed)
    curve = CurveCallback(max(steps // 20, 1))
    agent.learn(steps, callback=[RolloutRewardCallback(reward_env), curve])
    return evaluate_policy_true(agent, cfg, n_envs, 5), curve.curve


def fit_terms(learned: np.ndarray, terms: dict[str, np.ndarray]) -> dict | None:
    """Least squares of the learned per-step reward ``(T,)`` on the env's reward terms (each
    ``(T,)``) plus an intercept: ``{"coef": {term: c}, "intercept": c0, "r2": R^2}`` (R^2 None for a
    constant learned reward); None without terms."""
    if not terms:
        return None
    names = sorted(terms)
    x = np.stack([terms[k] for k in names] + [np.ones_like(learned)], axis=1)
    coef, *_ = np.linalg.lstsq(x, learned, rcond=None)
    resid = learned - x @ coef
    spread = float(((learned - learned.mean()) ** 2).sum())
    r2 = round(1.0 - float((resid**2).sum()) / spread, 3) if spread > 0 else None
    weights = {k: round(float(c), 3) for k, c in zip(names, coef[:-1], strict=True)}
    return {"coef": weights, "intercept": round(float(coef[-1]), 3), "r2": r2}


def ensemble_state(run_dir: Path, name: str | None, latest: tuple[Path, dict]) -> tuple[str, dict]:
    """The name and state of the checkpoint whose ensemble is judged: ``name`` under
    ``run_dir/checkpoints``, or the latest (``latest``: its path and state, already loaded).
    A missing one is a one-line UserError."""
    if name is None:
        return latest[0].name, latest[1]
    checkpoints = CheckpointManager(run_dir)
    path = checkpoints.named(name)
    if path is None:
        have = [p.name for p in checkpoints.complete()]
        raise UserError(
            f"--ensemble-at {name}: no such checkpoint in {run_dir} (has: {', '.join(have) or 'none'})"
        )
    return name, load_checkpoint(path / "state.pt")


def compare(judged: dict[str, dict]) -> dict[str, float]:
    """How often the ensemble (and the truth) prefers the other policy's segment to the run's,
    and the rank correlation of predicted and true returns over all segments."""
    pred = np.concatenate([j["seg_pred"] for j in judged.values()])
    true = np.concatenate([j["seg_true"] for j in judged.values()])
    out = {"segment_rank_corr": round(rank_corr(pred, true), 3)}
    if "other" in judged:
        run, other = judged["run"], judged["other"]
        for key, name in (("seg_pred", "pred"), ("seg_true", "true")):
            prefers = other[key][None, :] > run[key][:, None]
            out[f"{name}_prefers_other"] = round(float(prefers.mean()), 3)
    return out


def main() -> None:
    """The command line; a missing run, config, checkpoint or policy: one line, exit 2."""
    try:
        diagnose()
    except UserError as exc:
        print(f"diagnose_reward: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def diagnose() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a preference run (config.json, checkpoints/)")
    p.add_argument("--other", type=Path, help="another policy's SB3 zip to compare with")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: mean)")
    p.add_argument("--seed", type=int, default=20_000)
    p.add_argument(
        "--retrain", type=int, default=0, help="steps of a fresh policy on the frozen reward"
    )
    p.add_argument(
        "--ensemble-at",
        metavar="CHECKPOINT",
        help="judge with this checkpoint's ensemble (e.g. step_0000000000), on the latest policy",
    )
    args = p.parse_args()
    if args.other is not None and not args.other.is_file():
        raise UserError(f"--other {args.other}: no such policy file")
    torch.set_num_threads(1)
    cfg = PrefsConfig.from_saved(load_config(args.run_dir))
    kind = env_kind(cfg.env)
    path, state = CheckpointManager(args.run_dir).load_latest()
    policies = {"run": load_policy(cfg, path / "policy.zip")}
    if args.other is not None:
        policies["other"] = load_policy(cfg, args.other)
    spec = eval_spec(cfg)
    probe = make_vec_env(spec, 1, 0)
    ensemble = reward_ensemble(cfg, kind, probe)
    probe.close()
    judged_at, judged_state = ensemble_state(args.run_dir, args.ensemble_at, (path, state))
    ensemble.load_state_dict(judged_state["ensemble"])
    ensemble.eval()
    seg_len = segment_length(cfg, kind)
    row: dict = {"bench": "diagnose_reward", "env": cfg.env, "seed": cfg.seed, "checkpoint": path.name,
                 "ensemble_at": judged_at,
                 "seg_len": seg_len, "episodes": args.episodes}  # fmt: skip
    judged = {}
    for name, agent in policies.items():
        data = rollout(agent, spec, args.episodes, args.seed, not args.stochastic)
        j = judge(ensemble, data, seg_len)
        judged[name] = j
        row[name] = {
            "true_return": round(float(data["true"].sum() / args.episodes), 1),
            "learned_reward_per_step": round(float(j["learned"].mean()), 3),
            **(
                {
                    "learned_reward_per_step_zero_action": round(
                        float(j["learned_zero_action"].mean()), 3
                    )
                }
                if j["learned_zero_action"] is not None
                else {}
            ),
            **(
                {"action_std": [round(float(x), 3) for x in agent.policy.log_std.detach().exp()]}
                if hasattr(agent.policy, "log_std")
                else {}
            ),
            "corr_learned_true": corr(j["learned"], data["true"]),
            **{f"corr_learned_{k}": corr(j["learned"], v) for k, v in data["terms"].items()},
            **{f"mean_{k}": round(float(v.mean()), 3) for k, v in data["terms"].items()},
            "fit_terms": fit_terms(j["learned"], data["terms"]),
            "segments": len(j["seg_pred"]),
        }
    row.update(compare(judged))
    if args.retrain > 0:
        row["retrain_steps"] = args.retrain
        ret, curve = retrain(cfg, kind, ensemble, args.retrain)
        row["retrain_true_return"] = round(ret, 1)
        row["retrain_curve"] = curve
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

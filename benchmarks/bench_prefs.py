"""Preference learning vs RL on the true reward: label efficiency and wall-clock overhead.

For each env and seed, side by side in one process:
  1. ``rlkit prefs`` with a synthetic (rational) teacher and ``--labels`` labels,
  2. the same TRPO preset trained on the true reward for the same number of steps,
then both policies are evaluated on the true reward (deterministic, ``--eval-episodes``).
Prints one JSON line per (env, seed) with the returns, their ratio (learned / true), and
the wall-clock ratio (preference run / plain TRPO). Evaluation is excluded from both times.
Besides the deterministic evaluation (``--eval-episodes``), each line has the same episodes
with actions sampled as in training (``*_stochastic``: the paper's curves are the returns of
the stochastic training policy) and the mean true return of the last 100 training episodes of
each run (``train_return_*``, equal frames): the usual Atari measure, where a deterministic
policy may never press FIRE to serve again.
On Atari the true-reward baseline gets sign-clipped rewards, as A2C is usually run.
``--baseline-from`` reuses the true-reward side of earlier lines of this script (same env, seed
and steps) for runs that change only the preference side; each line records the TRPO setup it
ran with (``true_reward_setup``), its library versions (``versions``) and the CPU (``cpu``, with
any variable that picks MKL's or oneDNN's kernels),
and a reused line must match this run's in all three: TRPO's floating point differs from one
CPU model to another, and 1M steps turn that into other returns (HalfCheetah seed 19: 3150.9
on 2026-12-05's VM, whose CPU went unrecorded, 1776.9 twice on an Intel Xeon VM on 2026-12-07,
same code and library versions).
``--true-reward-only`` runs the true-reward side alone (``"bench": "true_reward_baseline"``
lines, which ``--baseline-from`` and ``summarize_prefs.py --baseline-from`` take): for
learned-reward lines whose baseline ran elsewhere.

    .venv/bin/python benchmarks/bench_prefs.py --envs Hopper-v5 --steps 1000000 --labels 700 --seeds 0 \
        --jsonl benchmarks/results/prefs_hopper.jsonl
    .venv/bin/python benchmarks/bench_prefs.py --envs ALE/Breakout-v5 --steps 250000 --labels 700 \
        --eval-episodes 0 --prefs-args "--backbone-kwargs '{\"channels\": [16, 16, 16]}' ..."
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from summarize_prefs import BASELINE_KEYS, baseline_lines, read_lines

from agents.presets import make_agent
from envs import env_kind, make_vec_env
from rlkit.cli import run_tyro, whole_number_arg
from rlkit.core.allocator import keep_freed_memory
from rlkit.core.errors import UserError
from rlkit.core.provenance import cpu_model
from rlkit.core.rundir import first_unused, save_config
from rlkit.core.seeding import seed_everything
from rlkit.loops.evaluation import evaluate_policy_true
from rlkit.loops.preference import PreferenceLoop, trainer_config
from rlkit.loops.preference_config import PrefsConfig


class SignReward(VecEnvWrapper):
    """Rewards clipped to their sign (A2C's usual Atari setting); episode stats stay unclipped."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)

    def reset(self) -> np.ndarray:
        return self.venv.reset()

    def step_wait(self):
        obs, rews, dones, infos = self.venv.step_wait()
        return obs, np.sign(rews), dones, infos


def train_return(agent: object) -> float:
    """Mean true return of the last (up to) 100 training episodes (SB3's Monitor stats)."""
    episodes = [ep["r"] for ep in agent.ep_info_buffer]
    return float(np.mean(episodes)) if episodes else float("nan")


def run_true_reward(
    cfg: PrefsConfig, n_envs: int, logger: Logger | None = None
) -> tuple[object, float]:
    """TRPO (the preset) trained on ``cfg``'s true reward, and its training wall time; with
    ``logger``, SB3 logs its training there (silent otherwise)."""
    seed_everything(cfg.seed)
    kind = env_kind(cfg.env)
    venv = make_vec_env(cfg.env_spec(), n_envs, cfg.seed)
    if kind == "atari":
        venv = SignReward(venv)
    agent = make_agent(cfg.policy, venv, kind, cfg.seed)
    if logger is not None:
        agent.set_logger(logger)
    t0 = time.perf_counter()
    agent.learn(cfg.steps)
    return agent, time.perf_counter() - t0


def rounded(x: float | None, digits: int) -> float | None:
    """``round`` that passes None through (a field older result lines lack)."""
    return None if x is None else round(x, digits)


def load_baselines(paths: list[Path]) -> dict[tuple[str, int, int], dict]:
    """(env, seed, steps) -> the true-reward fields and wall time of the last matching line."""
    found: dict[tuple[str, int, int], dict] = {}
    for path in paths:
        for key, row in baseline_lines(read_lines([path])).items():
            # lines older than the stochastic evaluation (or the cpu record) lack its field
            found[key] = {
                k: row.get(k)
                for k in (*BASELINE_KEYS, "wall_trpo_s", "true_reward_setup", "versions", "cpu")
            }
            found[key]["baseline_from"] = str(path)
    return found


def true_reward_setup(cfg: PrefsConfig, n_envs: int) -> dict:
    """What the true-reward (TRPO) side ran with, as JSON values: the policy preset, the
    number of envs, early termination and the true reward (the preference-side flags do not
    change it)."""
    setup = {
        "policy": dataclasses.asdict(cfg.policy),
        "n_envs": n_envs,
        "early_termination": cfg.early_termination,
        "env_reward": cfg.env_reward,
    }
    return json.loads(json.dumps(setup))


#: What lines written before a setup field was recorded ran with.
SETUP_BEFORE = {"env_reward": "gymnasium"}


def flatten(setup: dict) -> dict:
    """A setup with its policy preset's fields lifted to the top level (and the fields older
    lines lack, at the values they ran with)."""
    top = {k: v for k, v in setup.items() if k != "policy"}
    return {**setup.get("policy", {}), **SETUP_BEFORE, **top}


def mismatch(recorded: dict | str, current: dict | str) -> str | None:
    """The fields where a reused baseline's record (setup, versions or CPU) differs from this
    run's, or None."""
    if not isinstance(current, dict):
        return None if recorded == current else f"{recorded!r} there, {current!r} here"
    was, now = flatten(recorded), flatten(current)
    diff = [f"{k} {was.get(k)!r} there, {v!r} here" for k, v in now.items() if was.get(k) != v]
    return "; ".join(diff) or None


def library_versions() -> dict[str, str | None]:
    """The versions of the libraries a line's numbers depend on (simulator, RL, tensors): two
    set-ups with different ones need not reproduce each other's returns."""
    names = ("mujoco", "gymnasium", "ale-py", "torch", "numpy", "stable-baselines3", "sb3-contrib")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def true_reward_side(
    cfg: PrefsConfig, n_envs: int, episodes: int, keep: Path | None
) -> tuple[float, float, float, float]:
    """Train and evaluate TRPO on ``cfg``'s true reward: its mean-action and sampled-action
    returns over ``episodes``, its last training episodes' return, and its training wall time.
    With ``keep``, the agent is saved there as ``true_reward_agent.zip``."""
    agent, wall = run_true_reward(cfg, n_envs)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        agent.save(keep / "true_reward_agent.zip")
    ret = evaluate_policy_true(agent, cfg, n_envs, episodes)
    sto = evaluate_policy_true(agent, cfg, n_envs, episodes, deterministic=False)
    return ret, sto, train_return(agent), wall


def true_reward_line(
    cfg: PrefsConfig,
    n_envs: int,
    episodes: int,
    setup: dict,
    versions: dict,
    cpu: str,
    keep: Path | None = None,
) -> dict:
    """``--true-reward-only``: the true-reward side of ``cfg``'s env and seed alone, as a
    whole comparison runs it (:func:`true_reward_side`); its line."""
    ret, sto, train, wall = true_reward_side(cfg, n_envs, episodes, keep)
    return {
        "bench": "true_reward_baseline", "env": cfg.env, "seed": cfg.seed, "steps": cfg.steps,
        "true_reward_setup": setup, "versions": versions, "cpu": cpu,
        "return_true_reward": round(ret, 1), "return_true_reward_stochastic": round(sto, 1),
        "train_return_true_reward": round(train, 1), "wall_trpo_s": round(wall, 1),
    }  # fmt: skip


def parse_prefs_flags(p: argparse.ArgumentParser, option: str, flags: str) -> PrefsConfig:
    """``flags`` (one string of `rlkit prefs train` flags) as a config; one that rlkit does
    not know, or an invalid value, is ``p``'s one-line error naming ``option``."""
    try:
        return run_tyro(PrefsConfig, shlex.split(flags), prog=f"bench_prefs {option}")
    except UserError as exc:
        p.error(f"{option}: {exc}")


def joined_prefs_args(argv: list[str]) -> list[str]:
    """``argv`` with ``--prefs-args VALUE`` as ``--prefs-args=VALUE`` (and
    ``--true-reward-args``'s the same way): argparse takes a lone
    ``--flag`` after an option for another option, not for its value."""
    out, rest = [], iter(argv)
    for arg in rest:
        value = next(rest, None) if arg in ("--prefs-args", "--true-reward-args") else None
        out.append(arg if value is None else f"{arg}={value}")
    return out


def emit(line: dict, jsonl: Path | None) -> None:
    """Print one result line to stdout and, with ``--jsonl``, append it to that file."""
    text = json.dumps(line)
    print(text, flush=True)
    if jsonl is not None:
        with jsonl.open("a") as f:
            f.write(text + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--envs", nargs="+", default=["Hopper-v5"])
    p.add_argument("--steps", type=whole_number_arg, default=1_000_000)
    p.add_argument("--labels", type=whole_number_arg, default=700)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results"),
        help="the folder for each run's PNG plot (the lines go to stdout, and to --jsonl)",
    )
    p.add_argument(
        "--jsonl",
        type=Path,
        default=None,
        metavar="FILE",
        help="also append each result line to FILE (created if missing; nothing in it is "
        "overwritten), as it is printed",
    )
    p.add_argument(
        "--prefs-args",
        default="",
        help="more `rlkit prefs train` flags, one string",
    )
    p.add_argument(
        "--true-reward-args",
        default="",
        help="`rlkit prefs train` flags for the true-reward (TRPO) side only, one string, "
        "applied after --prefs-args: e.g. --prefs-args '--policy.ent-coef 0.003' "
        "--true-reward-args '--policy.ent-coef 0' gives the learned-reward policy the paper's "
        "entropy bonus and leaves the baseline as it is",
    )
    p.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="keep each preference run directory and the true-reward agent under this folder "
        "(KEEP/ENV_seedS/run, KEEP/ENV_seedS/true_reward_agent.zip; with --true-reward-only, "
        "the agent alone), e.g. for benchmarks/diagnose_reward.py",
    )
    p.add_argument(
        "--malloc",
        choices=["tuned", "glibc"],
        default="tuned",
        help="tuned: as the rlkit command runs (rlkit.core.allocator); glibc: its defaults",
    )
    p.add_argument(
        "--baseline-from",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSONL",
        help="take the true-reward (TRPO) side of each (env, seed, steps) from earlier result "
        "lines of this script instead of training it again (the last matching line wins; the "
        "preset is deterministic per seed on one CPU model): for runs that change only the "
        "preference side. A line that records another TRPO setup (policy preset, envs, early "
        "termination) than this run's, other library versions or another CPU model is refused; "
        "older lines without the record are used with a warning",
    )
    p.add_argument(
        "--true-reward-only",
        action="store_true",
        help="run only the true-reward (TRPO) side of each env and seed: one "
        "true_reward_baseline line each, for --baseline-from here or in summarize_prefs.py",
    )
    args = p.parse_args(joined_prefs_args(sys.argv[1:]))
    if args.out.suffix == ".jsonl":
        p.error(
            f"--out {args.out}: --out is the folder for the plots; --jsonl FILE takes the lines"
        )
    if args.jsonl is not None:
        try:  # now, not after an hour of training
            args.jsonl.open("a").close()
        except OSError as exc:
            p.error(f"--jsonl: {exc}")
    if args.true_reward_only and args.baseline_from:
        p.error("--true-reward-only runs the true-reward side that --baseline-from would reuse")
    try:
        baselines = load_baselines(args.baseline_from) if args.baseline_from else None
    except (OSError, ValueError, KeyError) as exc:  # unreadable, not JSON, or not this script's
        p.error(f"--baseline-from: {exc}")
    if baselines is not None:
        missing = [
            f"{env} seed {seed}"
            for env in args.envs
            for seed in args.seeds
            if (env, seed, args.steps) not in baselines
        ]
        if missing:
            p.error(
                f"no true-reward line at {args.steps} steps in --baseline-from for {', '.join(missing)}"
            )
    base = parse_prefs_flags(p, "--prefs-args", args.prefs_args)
    # the true-reward side: the same flags, then its own (the later of two values wins)
    base_true = parse_prefs_flags(
        p, "--true-reward-args", f"{args.prefs_args} {args.true_reward_args}"
    )
    if dataclasses.replace(base_true, policy=base.policy) != base:
        p.error("--true-reward-args: only --policy.* flags (the rest is the same on both sides)")
    versions = library_versions()
    cpu = cpu_model()
    # the true-reward side's setup depends on the env's kind only through its number of envs
    setups = {
        env: true_reward_setup(base_true, base_true.vec_envs(env_kind(env))) for env in args.envs
    }
    if baselines is not None:
        for env in args.envs:
            for seed in args.seeds:
                row = baselines[(env, seed, args.steps)]
                checks = (
                    ("true_reward_setup", "another TRPO setup", setups[env]),
                    ("versions", "other library versions", versions),
                    ("cpu", "another CPU model", cpu),
                )
                for field, what, current in checks:
                    if row[field] is None:
                        print(
                            f"bench_prefs: the true-reward line for {env} seed {seed} predates "
                            f"its {field} record: not checked against this run's",
                            file=sys.stderr,
                        )
                    elif diff := mismatch(row[field], current):
                        p.error(
                            f"--baseline-from: the true-reward line for {env} seed {seed} "
                            f"ran with {what} ({diff})"
                        )
    if args.malloc == "tuned":
        keep_freed_memory()
    args.out.mkdir(parents=True, exist_ok=True)
    quiet = Console(quiet=True)
    for env in args.envs:
        for seed in args.seeds:
            cfg = dataclasses.replace(
                base,
                env=env,
                steps=args.steps,
                labels=args.labels,
                seed=seed,
                eval_episodes=0,
                checkpoint_every=10**9,
            )
            cfg_true = dataclasses.replace(cfg, policy=base_true.policy)
            kind = env_kind(env)
            n_envs = cfg.vec_envs(kind)
            keep = args.keep / f"{env.replace('/', '-')}_seed{seed}" if args.keep else None
            if args.true_reward_only:
                line = true_reward_line(
                    cfg_true, n_envs, args.eval_episodes, setups[env], versions, cpu, keep
                )
                emit(line, args.jsonl)
                continue
            with tempfile.TemporaryDirectory() as tmp:
                run_dir = (keep or Path(tmp)) / "run"
                run_dir.mkdir(parents=True)
                if keep is not None:
                    save_config(run_dir, dataclasses.replace(cfg, run_dir=run_dir))
                loop = PreferenceLoop(dataclasses.replace(cfg, run_dir=run_dir), run_dir, quiet)
                t0 = time.perf_counter()
                summary = loop.run()
                prefs_wall = time.perf_counter() - t0
                learned = evaluate_policy_true(loop.agent, cfg, n_envs, args.eval_episodes)
                learned_sto = evaluate_policy_true(
                    loop.agent, cfg, n_envs, args.eval_episodes, deterministic=False
                )
                learned_train = train_return(loop.agent)
                acc = summary.val_accuracy
                plot = first_unused(args.out / f"prefs_{env.replace('/', '-')}_seed{seed}.png")
                plot.write_bytes(summary.plot.read_bytes())
                loop.close()
            if baselines is not None:
                base_row = baselines[(env, seed, args.steps)]
                true_ret, true_sto, true_train = (base_row[k] for k in BASELINE_KEYS)
                true_wall = base_row["wall_trpo_s"]
            else:
                true_ret, true_sto, true_train, true_wall = true_reward_side(
                    cfg_true, n_envs, args.eval_episodes, keep
                )
            row = {
                "bench": "prefs_vs_true_reward",
                "env": env,
                "seed": seed,
                "steps": args.steps,
                "malloc": args.malloc,
                "labels": summary.labels,
                # the variant: a line says which flags its learned-reward run had
                "prefs_args": args.prefs_args,
                # and the L2 cap its reward trainer had (per env when --trainer.l2-max is unset)
                "l2_max": trainer_config(cfg.trainer, kind, env).l2_max,
                # what the true-reward side ran with, checked when --baseline-from reuses it
                # (None: reused from a line that predates the field)
                "true_reward_setup": base_row["true_reward_setup"]
                if baselines is not None
                else setups[env],
                "versions": versions,
                "cpu": cpu,
                "return_learned": round(learned, 1),
                "return_true_reward": round(true_ret, 1),
                "ratio": round(learned / true_ret, 3) if true_ret else None,
                "return_learned_stochastic": round(learned_sto, 1),
                "return_true_reward_stochastic": rounded(true_sto, 1),
                "ratio_stochastic": round(learned_sto / true_sto, 3) if true_sto else None,
                "train_return_learned": round(learned_train, 1),
                "train_return_true_reward": rounded(true_train, 1),
                "train_ratio": round(learned_train / true_train, 3) if true_train else None,
                "reward_val_accuracy": round(acc, 3),
                "wall_prefs_s": round(prefs_wall, 1),
                "wall_trpo_s": rounded(true_wall, 1),
                # None where the true-reward side was not run here (its wall-clock is from
                # another time)
                "overhead": None if baselines is not None else round(prefs_wall / true_wall, 3),
            }
            if baselines is not None:
                row["baseline_from"] = base_row["baseline_from"]
            emit({k: None if v != v else v for k, v in row.items()}, args.jsonl)


if __name__ == "__main__":
    main()

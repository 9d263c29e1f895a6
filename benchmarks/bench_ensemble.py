"""One reward-ensemble training step with K members: batched (rlkit) vs a Python loop over members.

Both do the same work: K members, each on its own minibatch of segment pairs, the
preference loss, backward and one Adam step. "batched" is the step as the reward trainer
takes it: for stacked MLP members in parts of ``RewardEnsemble.pairs_per_pass`` pairs, each
part gathered from the segment store and its loss backward at once
(``rlkit.rewards.trainer.preference_backward_in_parts``); "one_pass" puts the whole
minibatch, gathered beforehand as the loop's is, through one forward and backward. Timed side
by side, interleaved, median of repeats, with the same ensemble through ``torch.func.vmap``
as a further path where the backbone has a stacked one (MLP, Nature CNN). Prints one JSON
line per setting.

The MLP members are the network ``rlkit prefs`` trains by default: ``--reward-hidden`` layers
on the observation (default :class:`PrefsConfig`'s, one of 64), then the head's 64 on those
features and the action: the paper's two layers of 64. Input normalization
(``--reward-normalize-inputs``, on by default) is left out: an elementwise op on the 11 or 17
input columns that both paths would take alike. ``--reward-hidden 64 64`` gives the
three-layer network that was the default before 2026-12-01 (and that this benchmark built
until 2026-12-07).

    .venv/bin/python benchmarks/bench_ensemble.py [--members 5] [--repeats 30] [--settings mujoco_mlp]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import gymnasium as gym
import numpy as np
import torch

from rlkit.core.allocator import keep_freed_memory
from rlkit.loops.preference_config import PrefsConfig
from rlkit.rewards.ensemble import RewardEnsemble, RewardNet, build_ensemble
from rlkit.rewards.preference import preference_loss
from rlkit.rewards.trainer import preference_backward_in_parts

SETTINGS = {
    # Hopper-v5: 11-d observations, 3-d actions, 1.5 s segments = 187 steps, 64 pairs.
    "mujoco_mlp": dict(obs=gym.spaces.Box(-9, 9, (11,), np.float32),
                       act=gym.spaces.Box(-1, 1, (3,), np.float32), length=187, pairs=64,
                       backbone="mlp"),
    # HalfCheetah-v5: 17-d observations, 6-d actions, 1.5 s = 30 steps, 16 pairs: small batches.
    "mujoco_mlp_small": dict(obs=gym.spaces.Box(-9, 9, (17,), np.float32),
                             act=gym.spaces.Box(-1, 1, (6,), np.float32), length=30, pairs=16,
                             backbone="mlp"),
    # HalfCheetah-v5 at the trainer's minibatch (64 pairs): 64 x 30 steps per member.
    "halfcheetah_mlp": dict(obs=gym.spaces.Box(-9, 9, (17,), np.float32),
                            act=gym.spaces.Box(-1, 1, (6,), np.float32), length=30, pairs=64,
                            backbone="mlp"),
    # Atari: 84x84x4 frames, 25-step segments, 8 pairs.
    "atari_cnn": dict(obs=gym.spaces.Box(0, 255, (84, 84, 4), np.uint8),
                      act=gym.spaces.Discrete(6), length=25, pairs=8, backbone="nature_cnn"),
}  # fmt: skip


def batch(s: dict, k: int, gen: torch.Generator):
    def seg():
        shape = (k, s["pairs"], s["length"], *s["obs"].shape)
        if s["obs"].dtype == np.uint8:
            obs = torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)
        else:
            obs = torch.randn(shape, generator=gen)
        if isinstance(s["act"], gym.spaces.Discrete):
            acts = torch.randint(0, s["act"].n, (k, s["pairs"], s["length"]), generator=gen)
        else:
            acts = torch.randn((k, s["pairs"], s["length"], *s["act"].shape), generator=gen)
        return obs, acts

    (oa, aa), (ob, ab) = seg(), seg()
    mu = torch.randint(0, 2, (k, s["pairs"]), generator=gen).float()
    return oa, aa, ob, ab, mu


def as_store(data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``batch``'s segments as the trainer holds them: obs ``(S, L, ...)``, acts alike, and
    the rows of member k's segments a and b ``(K, P)`` each."""
    oa, aa, ob, ab, _ = data
    k, p = oa.shape[:2]
    obs = torch.cat([oa, ob]).reshape(2 * k * p, *oa.shape[2:])
    acts = torch.cat([aa, ab]).reshape(2 * k * p, *aa.shape[2:])
    rows = torch.arange(2 * k * p).reshape(2, k, p)
    return obs, acts, rows[0], rows[1]


def step_trainer(ens: RewardEnsemble, opt, data, store) -> None:
    """The reward trainer's step: in parts where ``pairs_per_pass`` says so."""
    obs, acts, rows_a, rows_b = store
    pairs = ens.pairs_per_pass(obs.shape[1])
    if pairs is None or pairs >= rows_a.shape[1]:
        step_batched(ens, opt, data)
        return
    opt.zero_grad()
    preference_backward_in_parts(ens, obs, acts, rows_a, rows_b, data[4], 0.1, pairs)
    opt.step()


def step_batched(ens: RewardEnsemble, opt, data) -> None:
    """One forward and backward of the whole minibatch (gathered beforehand)."""
    oa, aa, ob, ab, mu = data
    ra = ens.segment_returns(oa, aa, per_member=True)
    rb = ens.segment_returns(ob, ab, per_member=True)
    loss = preference_loss(ra, rb, mu).mean(1).sum()
    opt.zero_grad()
    loss.backward()
    opt.step()


@contextmanager
def through_vmap(ens: RewardEnsemble, vmapped: bool = True) -> Iterator[None]:
    """The ensemble evaluated through ``torch.func.vmap`` instead of its stacked path."""
    fast, ens._fast = ens._fast, ens._fast and not vmapped
    try:
        yield
    finally:
        ens._fast = fast


def step_vmap(ens: RewardEnsemble, opt, data) -> None:
    with through_vmap(ens):
        step_batched(ens, opt, data)


@torch.no_grad()
def score_batched(ens: RewardEnsemble, data, vmapped: bool = False) -> None:
    """Query scoring: every member's return of the same 64 segments (eval mode)."""
    with through_vmap(ens, vmapped):
        ens.segment_returns(data[0][0], data[1][0], train=False)


@torch.no_grad()
def score_loop(members: list[RewardNet], data) -> None:
    obs, acts = data[0][0], data[1][0]
    n, length = obs.shape[:2]
    for m in members:
        m.eval()
        m(obs.reshape(n * length, *obs.shape[2:]), acts.reshape(n * length, *acts.shape[2:]))
        m.train()


def step_loop(members: list[RewardNet], opt, data) -> None:
    oa, aa, ob, ab, mu = data
    loss = 0.0
    for k, m in enumerate(members):
        n, length = oa.shape[1:3]
        ra = m(oa[k].reshape(n * length, *oa.shape[3:]), aa[k].reshape(n * length, *aa.shape[3:]))
        rb = m(ob[k].reshape(n * length, *ob.shape[3:]), ab[k].reshape(n * length, *ab.shape[3:]))
        loss = (
            loss
            + preference_loss(
                ra.reshape(n, length).sum(1), rb.reshape(n, length).sum(1), mu[k]
            ).mean()
        )
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--malloc",
        choices=["tuned", "glibc"],
        default="tuned",
        help="tuned: as the rlkit command runs (rlkit.core.allocator); glibc: its defaults",
    )
    p.add_argument("--no-vmap", action="store_true", help="skip timing the vmap path")
    p.add_argument(
        "--reward-hidden",
        type=int,
        nargs="+",
        default=list(PrefsConfig.reward_hidden),
        help="the MLP members' layers on the observation, as `rlkit prefs --reward-hidden`",
    )
    p.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    args = p.parse_args()
    if args.malloc == "tuned":
        keep_freed_memory()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.settings:
        s = SETTINGS[name]
        k = args.members
        ens = build_ensemble(
            s["obs"], s["act"], k, s["backbone"], hidden=args.reward_hidden, seed=0
        )
        members = [ens.member(i) for i in range(k)]
        opt_b = torch.optim.Adam(ens.parameters(), lr=1e-4)
        opt_l = torch.optim.Adam([q for m in members for q in m.parameters()], lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        data = batch(s, k, gen)
        repeats = args.repeats if SETTINGS[name]["backbone"] == "mlp" else max(5, args.repeats // 3)
        fast = ens._fast
        paths = {"batched": partial(step_trainer, ens, opt_b, data, as_store(data)),
                 "loop": partial(step_loop, members, opt_l, data),
                 "one_pass": partial(step_batched, ens, opt_b, data)}  # fmt: skip
        if fast and not args.no_vmap:
            paths["vmap"] = partial(step_vmap, ens, opt_b, data)
        report(name, "ensemble_train_step", paths, repeats, k, fast, args)
        # Query scoring reads the pool in chunks of 64 segments (rlkit.rewards.queries).
        pool = batch({**s, "pairs": 64}, 1, gen)
        scoring = {"batched": partial(score_batched, ens, pool),
                   "loop": partial(score_loop, members, pool)}  # fmt: skip
        if fast and not args.no_vmap:
            scoring["vmap"] = partial(score_batched, ens, pool, vmapped=True)
        report(name, "ensemble_query_scoring", scoring, repeats, k, fast, args)


def report(name: str, bench: str, paths: dict, repeats: int, k: int, fast: bool, args) -> None:
    """Time each path interleaved (so load changes hit them alike); print one JSON line."""
    times: dict[str, list[float]] = {p: [] for p in paths}
    for step in paths.values():  # warm-up
        step()
        step()
    for _ in range(repeats):
        for path, step in paths.items():
            t0 = time.perf_counter()
            step()
            times[path].append(time.perf_counter() - t0)
    ms = {p: statistics.median(t) * 1e3 for p, t in times.items()}
    print(json.dumps({
        "bench": bench, "setting": name, "members": k,
        "path": ("grouped-conv" if SETTINGS[name]["backbone"] == "nature_cnn" else "stacked-matmul")
        if fast else "vmap",
        "batched_ms": round(ms["batched"], 2), "loop_ms": round(ms["loop"], 2),
        "speedup": round(ms["loop"] / ms["batched"], 2),
        **({"vmap_ms": round(ms["vmap"], 2), "speedup_vs_vmap": round(ms["vmap"] / ms["batched"], 2)}
           if "vmap" in ms else {}),
        **({"one_pass_ms": round(ms["one_pass"], 2),
            "one_pass_speedup": round(ms["loop"] / ms["one_pass"], 2)} if "one_pass" in ms else {}),
        **({"reward_hidden": args.reward_hidden} if SETTINGS[name]["backbone"] == "mlp" else {}),
        "repeats": repeats, "threads": torch.get_num_threads(), "malloc": args.malloc,
        "date": time.strftime("%Y-%m-%d"),
    }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()

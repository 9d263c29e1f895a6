"""Held-out preference accuracy of reward models by backbone, and mean-teacher semi-supervision.

One fixed set of segments per task, from a uniformly random policy (seeded), labelled by a
rational synthetic teacher from the true reward (ties dropped). Segments are split into a
training pool and a disjoint test pool; training comparisons pair training segments, the
fixed test set pairs test segments. Each backbone gets a reward ensemble (``build_ensemble``)
at about equal parameter count, trained by ``RewardTrainer`` (default config: bagging, 1/e
validation split, adaptive L2); the score is the ensemble's accuracy on the test comparisons.

Parts (run one at a time, each a few minutes on 2 CPU cores):

* ``mujoco``: HalfCheetah-v5 (17-d observations), backbones mlp, mlp+batch_renorm, selu_mlp,
  revnet, vq (EMA); relation does not apply to flat vectors.
* ``atari``: Pong (84x84 frames stacked 4 deep, as the agent sees them; 25-step segments),
  backbones nature_cnn, nature_cnn+batch_renorm, revnet, relation, vq, each ~34-35k parameters
  per member; ~17 min for 3 seeds.
* ``mean_teacher``: HalfCheetah mlp at a small label budget, with and without a mean-teacher
  consistency loss on all unlabelled training segments.

    nice -n 10 .venv/bin/python benchmarks/bench_nn_reward_backbones.py --part mujoco

Prints one JSON line and writes ``benchmarks/results/nn_reward_<part>.json``. ``--backbones``
(labels as in the results: ``vq``, ``nature_cnn+batch_renorm``, ...) runs only those settings and
merges their rows into the existing results file, replacing the rows of the same label and
keeping all others. vq rows also report the codebook's use: codes used on the test segments'
frames (of ``num_codes``), their perplexity, and dead-code restarts during training.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from envs.factory import EnvSpec, make_env
from rlkit.core.types import Comparison, Segment
from rlkit.nn.mean_teacher import EMATeacher, sigmoid_rampup
from rlkit.rewards.ensemble import RewardEnsemble, build_ensemble
from rlkit.rewards.preference import preference_probs
from rlkit.rewards.trainer import RewardTrainer, TrainerConfig

RESULTS = Path(__file__).parent / "results"


class FrameStacker:
    """The last ``k`` frames on the channel (last) axis, zeros before the first: what
    ``make_vec_env``'s ``VecFrameStack`` gives the agent (``k = 1`` passes frames through)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.stack: np.ndarray | None = None

    def reset(self, frame: np.ndarray) -> np.ndarray:
        self.stack = np.zeros((*frame.shape[:-1], frame.shape[-1] * self.k), frame.dtype)
        return self.step(frame)

    def step(self, frame: np.ndarray) -> np.ndarray:
        c = frame.shape[-1]
        self.stack = np.roll(self.stack, -c, axis=-1)
        self.stack[..., -c:] = frame
        return self.stack.copy()

    def space(self, space: gym.spaces.Box) -> gym.spaces.Box:
        if self.k == 1:
            return space
        shape = (*space.shape[:-1], space.shape[-1] * self.k)
        return gym.spaces.Box(0, 255, shape, dtype=space.dtype)


def collect_segments(
    env_id: str, n_segments: int, length: int, seed: int, frame_stack: int = 1
) -> tuple[list[Segment], gym.Space, gym.Space]:
    """``n_segments`` consecutive non-overlapping segments of a random policy; Atari frames
    stacked ``frame_stack`` deep (channels last)."""
    env = make_env(EnvSpec(env_id), seed=seed)()
    env.action_space.seed(seed)
    stacker = FrameStacker(frame_stack)
    obs, _ = env.reset(seed=seed)
    obs = stacker.reset(obs) if frame_stack > 1 else obs
    segments: list[Segment] = []
    buf_o, buf_a, buf_r = [], [], []
    while len(segments) < n_segments:
        act = env.action_space.sample()
        nxt, rew, term, trunc, _ = env.step(act)
        buf_o.append(obs)
        buf_a.append(act)
        buf_r.append(rew)
        obs = stacker.step(nxt) if frame_stack > 1 else nxt
        if term or trunc:
            obs, _ = env.reset()
            obs = stacker.reset(obs) if frame_stack > 1 else obs
            buf_o, buf_a, buf_r = [], [], []
        if len(buf_a) == length:
            segments.append(
                Segment(
                    np.asarray(buf_o),
                    np.asarray(buf_a),
                    np.asarray(buf_r, dtype=np.float64),
                    id=len(segments),
                )  # fmt: skip
            )
            buf_o, buf_a, buf_r = [], [], []
    obs_space = stacker.space(env.observation_space) if frame_stack > 1 else env.observation_space
    spaces = obs_space, env.action_space
    env.close()
    return segments, *spaces


def rational_pairs(
    segments: list[Segment], ids: np.ndarray, n: int, rng: np.random.Generator
) -> list[Comparison]:
    """``n`` comparisons of distinct segments from ``ids`` with different true returns."""
    out: list[Comparison] = []
    while len(out) < n:
        a, b = rng.choice(ids, size=2, replace=False)
        ra, rb = segments[a].true_return, segments[b].true_return
        if ra != rb:
            out.append(Comparison(int(a), int(b), (1.0, 0.0) if ra > rb else (0.0, 1.0)))
    return out


@torch.no_grad()
def accuracy(ensemble: RewardEnsemble, segments: list[Segment], test: list[Comparison]) -> float:
    """Share of test comparisons where the ensemble's mean preference probability agrees."""
    ensemble.eval()
    correct = 0
    for start in range(0, len(test), 64):
        chunk = test[start : start + 64]

        def stack(ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            obs = torch.as_tensor(np.stack([segments[i].obs for i in ids]))
            return obs, torch.as_tensor(np.stack([segments[i].acts for i in ids]))

        ret_a = ensemble.segment_returns(*stack([c.segment_a for c in chunk]))
        ret_b = ensemble.segment_returns(*stack([c.segment_b for c in chunk]))
        p = preference_probs(ret_a, ret_b).mean(0)
        mu = torch.tensor([c.mu[0] for c in chunk])
        correct += int(((p > 0.5) == (mu > 0.5)).sum())
    return correct / len(test)


def member_params(ensemble: RewardEnsemble) -> int:
    return sum(p[0].numel() for p in ensemble.params)


def label(backbone: str, kwargs: dict) -> str:
    """A setting's name in the results: the backbone, ``+norm`` when it has one."""
    return backbone + (f"+{kwargs['norm']}" if "norm" in kwargs else "")


@torch.no_grad()
def vq_code_usage(
    ensemble: RewardEnsemble, segments: list[Segment], test: list[Comparison]
) -> dict:
    """Per-member mean of the codes used on every frame of the test segments, their perplexity,
    and the dead-code restarts during training (a vq backbone's collapse diagnostic)."""
    ids = sorted({c.segment_a for c in test} | {c.segment_b for c in test})
    obs = np.concatenate([segments[i].obs for i in ids])
    used, perplexity, restarts = [], [], []
    for k in range(ensemble.n_members):
        backbone = ensemble.member(k).eval().backbone
        quantizer = backbone.quantizer
        restarts.append(quantizer.code_stats()["restarts"])
        quantizer.reset_usage()
        for start in range(0, len(obs), 1000):
            backbone(torch.as_tensor(obs[start : start + 1000]))
        stats = quantizer.code_stats()
        used.append(quantizer.num_codes - stats["dead_codes"])
        perplexity.append(stats["perplexity"])
    return {
        "vq_num_codes": quantizer.num_codes,
        "vq_test_codes_used": round(float(np.mean(used)), 1),
        "vq_test_perplexity": round(float(np.mean(perplexity)), 1),
        "vq_train_restarts": round(float(np.mean(restarts)), 1),
    }


def consistency(
    teacher: EMATeacher,
    segments: list[Segment],
    pool: np.ndarray,
    rng: np.random.Generator,
    noise: float,
    weight: float,
    rampup_steps: int,
):
    """A trainer ``extra_loss``: mean-teacher consistency on unlabelled segments from ``pool``.

    Both networks see the same steps with independent Gaussian input noise (``noise`` times the
    per-dimension std of the pool); the teacher is updated from the student once per step.
    """
    obs_all = torch.as_tensor(np.stack([segments[i].obs for i in pool]), dtype=torch.float32)
    acts_all = torch.as_tensor(np.stack([segments[i].acts for i in pool]), dtype=torch.float32)
    obs_all, acts_all = obs_all.flatten(0, 1), acts_all.flatten(0, 1)
    scale = noise * obs_all.std(0)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    step = [0]

    def extra_loss(ensemble: RewardEnsemble, *_batch) -> torch.Tensor:
        teacher.update()
        idx = torch.as_tensor(rng.choice(len(obs_all), size=256, replace=False))
        obs, acts = obs_all[idx], acts_all[idx]
        noisy = [obs + scale * torch.randn(obs.shape, generator=gen) for _ in range(2)]
        student_out = ensemble.member_rewards(noisy[0], acts)
        with torch.no_grad():
            teacher_out = teacher.teacher.member_rewards(noisy[1], acts)
        step[0] += 1
        w = weight * sigmoid_rampup(step[0], rampup_steps)
        # Per member, mean over steps; summed over members like the trainer's preference loss.
        return w * (student_out - teacher_out).pow(2).mean(1).sum()

    return extra_loss


def train_and_score(
    backbone: str,
    kwargs: dict,
    data: dict,
    n_labels: int,
    seed: int,
    epochs: float,
    members: int,
    batch_size: int,
    mean_teacher: dict | None = None,
) -> dict:
    segments, train_ids, test = data["segments"], data["train_ids"], data["test"]
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    ensemble = build_ensemble(data["obs_space"], data["act_space"], n_members=members,
                              backbone=backbone, backbone_kwargs=kwargs, seed=seed)  # fmt: skip
    extra = None
    if mean_teacher is not None:
        teacher = EMATeacher(ensemble, decay=mean_teacher["decay"])
        extra = consistency(teacher, segments, train_ids, rng, mean_teacher["noise"],
                            mean_teacher["weight"], mean_teacher["rampup_steps"])  # fmt: skip
    config = TrainerConfig(batch_size=batch_size, min_steps=0)
    trainer = RewardTrainer(ensemble, config, rng, extra_loss=extra)
    for comp in rational_pairs(segments, train_ids, n_labels, rng):
        trainer.add(comp, segments[comp.segment_a], segments[comp.segment_b])
    start = time.perf_counter()
    trainer.train(epochs=epochs)
    score = {"student": accuracy(ensemble, segments, test)}
    if mean_teacher is not None:
        score["teacher"] = accuracy(teacher.teacher, segments, test)
    return {
        "backbone": backbone,
        "kwargs": kwargs,
        "seed": seed,
        "labels": n_labels,
        "params_per_member": member_params(ensemble),
        "train_s": round(time.perf_counter() - start, 1),
        "test_accuracy": round(score["student"], 4),
        **({"teacher_test_accuracy": round(score["teacher"], 4)} if "teacher" in score else {}),
        **(vq_code_usage(ensemble, segments, test) if backbone == "vq" else {}),
    }


def dataset(
    env_id: str, n_segments: int, length: int, n_test: int, seed: int, frame_stack: int = 1
) -> dict:
    segments, obs_space, act_space = collect_segments(env_id, n_segments, length, seed, frame_stack)
    rng = np.random.default_rng(seed + 1)
    ids = rng.permutation(len(segments))
    test_ids, train_ids = ids[: len(ids) // 4], ids[len(ids) // 4 :]
    returns = np.array([s.true_return for s in segments])
    values, counts = np.unique(returns, return_counts=True)
    return {
        "segments": segments,
        "obs_space": obs_space,
        "act_space": act_space,
        "train_ids": train_ids,
        "test": rational_pairs(segments, test_ids, n_test, rng),
        "info": {
            "env": env_id,
            "segments": n_segments,
            "length": length,
            "test_pairs": n_test,
            "obs_shape": list(obs_space.shape),
            "train_segments": len(train_ids),
            "test_segments": len(test_ids),
            "nonzero_return_share": float(np.mean(returns != 0)),
            **(
                {"return_counts": {str(v): int(n) for v, n in zip(values, counts, strict=True)}}
                if len(values) <= 20
                else {}
            ),  # fmt: skip
        },
    }


def summarize(rows: list[dict]) -> list[dict]:
    """Mean and sample sd of test accuracy (and mean train seconds) per backbone setting."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(label(row["backbone"], row["kwargs"]), []).append(row)
    out = []
    for name, group in groups.items():
        acc = np.array([r["test_accuracy"] for r in group])
        out.append({
            "backbone": name,
            "params_per_member": group[0]["params_per_member"],
            "seeds": len(group),
            "test_accuracy_mean": round(float(acc.mean()), 4),
            "test_accuracy_sd": round(float(acc.std(ddof=1)), 4) if len(acc) > 1 else None,
            "train_s_mean": round(float(np.mean([r["train_s"] for r in group])), 1),
        })  # fmt: skip
    return out


MUJOCO_BACKBONES = [
    ("mlp", {"hidden": (64, 64)}),
    ("mlp", {"hidden": (64, 64), "norm": "batch_renorm",
             "norm_kwargs": {"warmup_steps": 50, "r_max_steps": 200, "d_max_steps": 100}}),
    ("selu_mlp", {"hidden": (64, 64)}),
    ("revnet", {"width": 64, "n_blocks": 2, "inner": 16}),
    ("vq", {"ema": True, "n_latents": 4, "code_dim": 16, "num_codes": 64,
            "encoder_kwargs": {"hidden": (64,)}}),
]  # fmt: skip

# About 34-35k parameters per member (reward head included), small enough for a 2-core CPU.
# All image backbones but relation start with the Nature-CNN front (8x8/4, 4x4/2); relation's
# stem ends in a 5x5 map (25 objects, 625 pairs) so that its pair sum stays cheap.
ATARI_BACKBONES = [
    ("nature_cnn", {"channels": (8, 16, 16), "features_dim": 32}),
    ("nature_cnn", {"channels": (8, 16, 16), "features_dim": 32, "norm": "batch_renorm",
                    "norm_kwargs": {"warmup_steps": 50, "r_max_steps": 200, "d_max_steps": 100}}),
    ("revnet", {"stem_channels": 8, "channels": 16, "n_blocks": 2, "features_dim": 18}),
    ("relation", {"stem": ((8, 8, 4, 0), (16, 4, 2, 0), (16, 3, 2, 1)), "g_hidden": (32, 32),
                  "f_hidden": (224, 64)}),
    ("vq", {"ema": True, "n_latents": 4, "code_dim": 8,
            "encoder_kwargs": {"channels": (8, 16, 16), "features_dim": 32}}),
]  # fmt: skip
# Pong: 25 agent steps per segment (the paper's Atari length), 4 stacked frames as the agent sees.
ATARI_DATA = {"env_id": "ALE/Pong-v5", "n_segments": 1600, "length": 25, "n_test": 600,
              "seed": 0, "frame_stack": 4}  # fmt: skip
# 800 labels: about 505 to train on, 295 for the validation that steers the L2 coefficient.
# Batch 4 gives ~500 gradient steps in 4 epochs (batch 8, half the steps: near chance).
ATARI_TRAIN = {"n_labels": 800, "epochs": 4, "members": 1, "batch_size": 4}


def merge_rows(old: list[dict], new: list[dict], selected: set[str]) -> list[dict]:
    """``old`` with the rows of the ``selected`` labels replaced by ``new``'s (in their place,
    or appended when ``old`` had none); every other row kept as it was."""

    def key(row: dict) -> str:
        return label(row["backbone"], row["kwargs"])

    out: list[dict] = []
    placed: set[str] = set()
    for row in old:
        name = key(row)
        if name not in selected:
            out.append(row)
        elif name not in placed:
            out += [r for r in new if key(r) == name]
            placed.add(name)
    return out + [r for r in new if key(r) not in placed]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["mujoco", "atari", "mean_teacher"], required=True)
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per setting")
    parser.add_argument("--backbones", nargs="+", metavar="LABEL",
                        help="run only these settings (mujoco, atari) and merge their rows into "
                             "the existing results file")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(1)
    settings = {"mujoco": MUJOCO_BACKBONES, "atari": ATARI_BACKBONES}.get(args.part, [])
    if args.backbones is not None:
        if args.part == "mean_teacher":
            parser.error("--backbones applies to --part mujoco and atari")
        known = [label(name, kwargs) for name, kwargs in settings]
        unknown = sorted(set(args.backbones) - set(known))
        if unknown:
            parser.error(f"unknown backbone labels {unknown}; choose from {known}")
        settings = [(n, kw) for n, kw in settings if label(n, kw) in args.backbones]
    rows = []
    if args.part == "mujoco":
        data = dataset("HalfCheetah-v5", n_segments=1200, length=25, n_test=1000, seed=0)
        for name, kwargs in settings:
            for seed in range(args.seeds):
                rows.append(train_and_score(name, kwargs, data, n_labels=500, seed=seed,
                                            epochs=30, members=3, batch_size=64))  # fmt: skip
    elif args.part == "atari":
        data = dataset(**ATARI_DATA)
        for name, kwargs in settings:
            for seed in range(args.seeds):
                rows.append(train_and_score(name, kwargs, data, seed=seed, **ATARI_TRAIN))
    else:
        data = dataset("HalfCheetah-v5", n_segments=1200, length=25, n_test=1000, seed=0)
        mt = {"decay": 0.99, "noise": 0.1, "weight": 1.0, "rampup_steps": 200}
        for labels in (25, 50):
            for seed in range(args.seeds):
                kw = {"hidden": (64, 64)}
                common = {"n_labels": labels, "seed": seed, "epochs": 200, "members": 3,
                          "batch_size": 16}  # fmt: skip
                rows.append({"mean_teacher": False, **train_and_score("mlp", kw, data, **common)})
                rows.append({"mean_teacher": True, **mt,
                             **train_and_score("mlp", kw, data, mean_teacher=mt, **common)})  # fmt: skip
    path = RESULTS / f"nn_reward_{args.part}.json"
    if args.backbones is not None and path.exists():
        previous = json.loads(path.read_text())
        info = json.loads(json.dumps(data["info"]))
        # Older files may lack some of the keys; those they have must agree.
        if any(info.get(k, v) != v for k, v in previous["data"].items()):
            raise SystemExit(f"{path} was made from other data; rerun the whole part")
        rows = merge_rows(previous["rows"], rows, set(args.backbones))
    result = {"benchmark": f"nn_reward_{args.part}", "data": data["info"], "rows": rows}
    if args.part == "atari":
        result["summary"] = summarize(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(result))


if __name__ == "__main__":
    main()

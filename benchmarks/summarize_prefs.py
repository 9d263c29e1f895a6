"""Summarize bench_prefs.py result lines: per env, the learned / true-reward ratio over seeds.

The ratio of sums (mean learned-reward return over mean TRPO return on the same seeds, the
number BENCHMARKS.md reports), the median of the per-seed ratios, the same ratio for the
sampled-action evaluation and for the last 100 training episodes, and the ratio's spread over
seeds by bootstrap (seeds drawn with replacement, ``--draws`` times, seeded): its standard
deviation and 90% interval; each side's 10th, 50th and 90th percentile return over seeds, and
the share of seeds where each side ends under half of TRPO's median return (a failed run). One
JSON line per env; a note on stderr where an env's lines were
recorded with different library versions (their sums mix set-ups).

Lines are those of ``bench_prefs.py`` (``"bench": "prefs_vs_true_reward"``) with the given
``--steps`` and whose ``prefs_args`` is one of ``--variant`` (default: the default as it ships,
``""``; pass the flags a line ran with to select a variant, several to pool lines of runs that
had the same settings under different flags). For each (env, seed) the last line read wins.
``--l2-max`` keeps only the lines whose reward trainer ran with that L2 cap: Walker2d's
default cap became 3e-2 on 2026-12-04, so its lines with ``""`` before and after differ (lines
record their cap since; older ones ran with their ``--trainer.l2-max``, else 1e-2).

    .venv/bin/python benchmarks/summarize_prefs.py benchmarks/results/prefs_1m_*.jsonl \
        --variant "" "--policy.normalize-obs --reward-normalize-inputs"

With ``--against PREFS_ARGS`` each env's line also compares the variant with those lines on the
seeds both ran (``paired``): each one's ratio of sums there, the difference, its bootstrap 90%
interval (the same seeds drawn for both), and on how many of those seeds the variant's
learned-reward return is the higher.

    .venv/bin/python benchmarks/summarize_prefs.py VARIANT.jsonl DEFAULT.jsonl \
        --variant "--initial-labels 70" --against ""

It also compares the two over each one's every seed (``unpaired``): both ratios of sums, the
difference, and its bootstrap 90% interval with each side's seeds drawn on their own. With
``--against-from JSONL`` the ``--against`` lines (default ``""``) come from these files instead:
another code version's runs with the same flags, say. The ``--against`` lines keep their own
true-reward side: ``--baseline-from`` (below) re-bases the ``--variant`` lines only, so to set
two code versions against the same TRPO runs, summarize each with ``--baseline-from``.

    .venv/bin/python benchmarks/summarize_prefs.py CURRENT.jsonl --against-from OLDER.jsonl

``--baseline-from JSONL`` gives every selected line the true-reward side of these files' line
for its env, seed and steps (a whole comparison's or ``bench_prefs.py --true-reward-only``'s;
the last one read wins) in place of its own: for learned-reward lines whose true-reward side
was reused from a run on another CPU model, where TRPO's returns differ. A line without one,
or whose TRPO setup, library versions or CPU differ from it, is refused.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from rlkit.cli import whole_number_arg

PAIRS = {
    "ratio": ("return_learned", "return_true_reward"),
    "ratio_stochastic": ("return_learned_stochastic", "return_true_reward_stochastic"),
    "train_ratio": ("train_return_learned", "train_return_true_reward"),
}


def l2_cap(row: dict) -> float:
    """The reward trainer's L2 cap a line ran with: recorded since 2026-12-04 (``l2_max``);
    an older line ran with its prefs_args' ``--trainer.l2-max``, else 1e-2, every env's cap
    until Walker2d's became 3e-2."""
    if row.get("l2_max") is not None:
        return float(row["l2_max"])
    args = shlex.split(row.get("prefs_args", ""))
    for flag, value in zip(args, [*args[1:], None], strict=False):  # value: the next token
        if flag == "--trainer.l2-max" and value is not None:
            return float(value)
        if flag.startswith("--trainer.l2-max="):
            return float(flag.split("=", 1)[1])
    return 1e-2


def select(
    rows: Iterable[dict], steps: int, variants: set[str], l2_max: float | None = None
) -> dict[str, dict[int, dict]]:
    """env -> seed -> the last matching line (with ``l2_max``: of those with that cap)."""
    found: dict[str, dict[int, dict]] = {}
    for row in rows:
        if (
            row.get("bench") == "prefs_vs_true_reward"
            and row.get("steps") == steps
            and row.get("prefs_args", "") in variants
            and row.get("return_true_reward")
            and (l2_max is None or math.isclose(l2_cap(row), l2_max))
        ):
            found.setdefault(row["env"], {})[row["seed"]] = row
    return found


def ratio_of_sums(rows: list[dict], learned: str, true: str) -> float | None:
    """sum(learned) / sum(true) over the lines that have both fields (older lines may lack
    the sampled-action ones), None if none does."""
    both = [r for r in rows if r.get(learned) is not None and r.get(true) is not None]
    total = sum(r[true] for r in both)
    return sum(r[learned] for r in both) / total if both and total else None


def bootstrap(learned: np.ndarray, true: np.ndarray, draws: int, seed: int) -> np.ndarray:
    """The ratio of sums over ``draws`` resamples of the seeds (with replacement).

    learned, true: (n_seeds,) returns. Returns (draws,) ratios."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(learned), size=(draws, len(learned)))
    return learned[idx].sum(axis=1) / true[idx].sum(axis=1)


def returns(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(n_rows,) learned-reward and (n_rows,) TRPO true returns of the lines."""
    learned = np.array([r["return_learned"] for r in rows], dtype=float)
    return learned, np.array([r["return_true_reward"] for r in rows], dtype=float)


def summarize(by_seed: dict[int, dict], draws: int, seed: int) -> dict:
    """One env's summary (see the module docstring)."""
    seeds = sorted(by_seed)
    rows = [by_seed[s] for s in seeds]
    learned, true = returns(rows)
    out: dict = {
        "env": rows[0]["env"],
        "steps": rows[0]["steps"],
        "seeds": seeds,
        "n": len(seeds),
        "mean_learned": round(float(learned.mean()), 1),
        "mean_true_reward": round(float(true.mean()), 1),
        "l2_max": sorted({l2_cap(r) for r in rows}),
    }
    for name, (a, b) in PAIRS.items():
        value = ratio_of_sums(rows, a, b)
        out[name] = None if value is None else round(value, 3)
    per_seed = learned / true
    out["median_seed_ratio"] = round(statistics.median(per_seed), 3)
    out["seeds_at_or_over_0.9"] = int((per_seed >= 0.9).sum())
    # How the two sides' returns spread over seeds, and how often a run fails outright
    # (under half of TRPO's median return on these seeds), each side on its own.
    out["quantiles_10_50_90"] = {
        name: [round(float(q), 1) for q in np.quantile(x, [0.1, 0.5, 0.9])]
        for name, x in (("learned", learned), ("true_reward", true))
    }
    cut = 0.5 * float(np.median(true))
    out["share_under_half_true_median"] = {
        name: round(float((x < cut).mean()), 3)
        for name, x in (("learned", learned), ("true_reward", true))
    }
    boot = bootstrap(learned, true, draws, seed)
    out["bootstrap_sd"] = round(float(boot.std()), 3)
    out["bootstrap_90"] = [round(float(q), 3) for q in np.quantile(boot, [0.05, 0.95])]
    return out


def difference(
    a: np.ndarray, ta: np.ndarray, b: np.ndarray, tb: np.ndarray, diff: np.ndarray
) -> dict:
    """Two sets of lines' ratios of sums (learned ``a`` over TRPO ``ta``, ``b`` over ``tb``,
    returns per seed), their difference, and its 90% interval from the bootstrap differences
    ``diff`` ``(draws,)``."""
    ratio, ratio_against = float(a.sum() / ta.sum()), float(b.sum() / tb.sum())
    return {
        "ratio": round(ratio, 3),
        "ratio_against": round(ratio_against, 3),
        "difference": round(ratio - ratio_against, 3),
        "difference_90": [round(float(q), 3) for q in np.quantile(diff, [0.05, 0.95])],
    }


def paired(
    variant: dict[int, dict], against: dict[int, dict], draws: int, seed: int
) -> dict | None:
    """The variant against other lines on the seeds both have (see the module docstring);
    None if they share none. The bootstrap draws the same seeds for both sides."""
    seeds = sorted(set(variant) & set(against))
    if not seeds:
        return None
    a, ta = returns([variant[s] for s in seeds])
    b, tb = returns([against[s] for s in seeds])
    # one seed for both: bootstrap() draws the same seeds for both sides
    diff = bootstrap(a, ta, draws, seed) - bootstrap(b, tb, draws, seed)
    return {
        "seeds": seeds,
        **difference(a, ta, b, tb, diff),
        "variant_higher": int((a > b).sum()),
    }


def unpaired(
    variant: dict[int, dict], against: dict[int, dict], draws: int, seed: int
) -> dict | None:
    """The variant against other lines over each one's every seed (see the module docstring);
    None if either has none. Each side's seeds are drawn on their own."""
    if not variant or not against:
        return None
    a, ta = returns([variant[s] for s in sorted(variant)])
    b, tb = returns([against[s] for s in sorted(against)])
    # independent draws: the two sides' seeds are not pairs here
    diff = bootstrap(a, ta, draws, seed) - bootstrap(b, tb, draws, seed + 1)
    return {"n": len(variant), "n_against": len(against), **difference(a, ta, b, tb, diff)}


def versions_seen(by_seed: dict[int, dict]) -> list[str]:
    """The distinct library-version records of an env's lines ("unrecorded" for older ones)."""
    seen = {json.dumps(r.get("versions"), sort_keys=True) for r in by_seed.values()}
    return sorted("unrecorded" if v == "null" else v for v in seen)


#: Lines that hold a true-reward side: a whole comparison, or ``--true-reward-only``'s.
BASELINE_BENCHES = ("prefs_vs_true_reward", "true_reward_baseline")
#: A true-reward side's returns.
BASELINE_KEYS = ("return_true_reward", "return_true_reward_stochastic", "train_return_true_reward")


def baseline_lines(rows: Iterable[dict]) -> dict[tuple[str, int, int], dict]:
    """(env, seed, steps) -> the last line among ``rows`` that holds a true-reward side."""
    return {
        (row["env"], row["seed"], row["steps"]): row
        for row in rows
        if row.get("bench") in BASELINE_BENCHES and row.get("return_true_reward")
    }


def rebased(row: dict, base: dict) -> dict:
    """``row`` with ``base``'s true-reward returns (and ``true_reward_cpu``, the CPU they ran
    on), its ratios recomputed; ValueError where the two lines record a different TRPO setup,
    library versions or CPU (a record either lacks is not compared)."""
    for field in ("true_reward_setup", "versions", "cpu"):
        if None not in (row.get(field), base.get(field)) and row[field] != base[field]:
            raise ValueError(
                f"{row['env']} seed {row['seed']}: its line and its --baseline-from line ran "
                f"with different {field} ({row[field]!r} / {base[field]!r})"
            )
    out = {**row, **{k: base.get(k) for k in BASELINE_KEYS}, "true_reward_cpu": base.get("cpu")}
    for name, (learned, true) in PAIRS.items():
        a, b = out.get(learned), out.get(true)
        out[name] = round(a / b, 3) if a is not None and b else None
    return out


def read_lines(paths: list[Path]) -> list[dict]:
    """Every JSON line of the files (blank lines skipped); ValueError naming the file and line
    number of one that is not JSON."""
    rows = []
    for path in paths:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError as exc:
                raise ValueError(f"{path} line {n} is not JSON ({exc})") from None
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="summarize_prefs.py", description=__doc__.split("\n\n")[0])
    p.add_argument("results", type=Path, nargs="+", metavar="JSONL")
    p.add_argument("--steps", type=whole_number_arg, default=1_000_000)
    p.add_argument(
        "--variant",
        nargs="+",
        default=[""],
        metavar="PREFS_ARGS",
        help="the prefs_args of the lines to pool (default: the default, ''; a lone flag: "
        "--variant=--flag)",
    )
    p.add_argument(
        "--against",
        nargs="+",
        default=None,
        metavar="PREFS_ARGS",
        help="compare with the lines of these prefs_args, on the seeds both ran and over "
        "each one's every seed (see above)",
    )
    p.add_argument(
        "--against-from",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSONL",
        help="take the --against lines (default: '') from these files instead of JSONL; they "
        "keep their own true-reward side (--baseline-from re-bases the --variant lines only)",
    )
    p.add_argument(
        "--l2-max",
        type=float,
        default=None,
        help="only lines (--variant's and --against's) whose reward trainer ran with this L2 "
        "cap (Walker2d's default is 3e-2 since 2026-12-04, 1e-2 before: '' alone selects both)",
    )
    p.add_argument(
        "--baseline-from",
        type=Path,
        nargs="+",
        default=None,
        metavar="JSONL",
        help="take each line's true-reward side from these files' lines (see above)",
    )
    p.add_argument("--draws", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="of the bootstrap draws")
    args = p.parse_args(argv)
    if args.draws < 1:
        p.error(f"--draws must be at least 1, got {args.draws}")
    try:
        rows = read_lines(args.results)
    except (OSError, ValueError) as exc:
        p.error(str(exc))
    cap = "" if args.l2_max is None else f" and L2 cap {args.l2_max:g}"  # for the errors
    found = select(rows, args.steps, set(args.variant), args.l2_max)
    if not found:
        p.error(f"no bench_prefs line at {args.steps} steps with --variant {args.variant}{cap}")
    if args.baseline_from is not None:
        try:
            bases = baseline_lines(read_lines(args.baseline_from))
            for env, by_seed in found.items():
                for seed, row in by_seed.items():
                    if (env, seed, args.steps) not in bases:
                        raise ValueError(f"no true-reward line for {env} seed {seed}")
                    by_seed[seed] = rebased(row, bases[(env, seed, args.steps)])
        except (OSError, ValueError) as exc:
            p.error(f"--baseline-from: {exc}")
    if args.against_from is not None:
        try:
            against_rows = read_lines(args.against_from)
        except (OSError, ValueError) as exc:
            p.error(f"--against-from: {exc}")
        args.against = [""] if args.against is None else args.against
    else:
        against_rows = rows
    against = {}
    if args.against is not None:
        against = select(against_rows, args.steps, set(args.against), args.l2_max)
        if not against:
            p.error(f"no bench_prefs line at {args.steps} steps with --against {args.against}{cap}")
    for env in sorted(found):
        seen = versions_seen(found[env])
        if len(seen) > 1:
            print(
                f"summarize_prefs: {env}'s lines were recorded with {len(seen)} different library "
                "version sets (or none): the sums mix set-ups",
                file=sys.stderr,
            )
        out = summarize(found[env], args.draws, args.seed)
        if args.against is not None:
            out["paired"] = paired(found[env], against.get(env, {}), args.draws, args.seed)
            out["unpaired"] = unpaired(found[env], against.get(env, {}), args.draws, args.seed)
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

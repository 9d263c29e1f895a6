"""``rlkit prefs train`` and ``rlkit prefs eval``."""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import signal
import sys
import zipfile
from pathlib import Path
from typing import Any, Literal

import tyro
from rich.console import Console
from rich.table import Table

from rlkit.cli import run_tyro
from rlkit.commands.exit_watch import ExitWatch
from rlkit.commands.stopped import interrupted_line, stopped_line
from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.errors import RunStoppedError, UserError
from rlkit.core.provenance import record_provenance
from rlkit.core.rundir import (
    RESOLVED,
    RESUME_FLAGS,
    changed_settings,
    default_run_name,
    given_flags,
    load_config,
    prepare_run_dir,
    refuse_changes_on_resume,
    release_run_dirs,
    save_config,
)
from rlkit.core.stop import GracefulStop, StopRequested
from rlkit.loops.preference_config import PrefsConfig

# How a run executes, not what it learns: a resumed run may change these (a restarted Ray
# cluster has a new address; the two reward learners train alike, tested).
EXECUTION_SETTINGS = (
    "reward_learner", "torch_threads", "eval_episodes", "checkpoint_every", "ray_address",
    "ray_compiled", "ray_worker_rollouts", "ray_compress", "ray_call_timeout",
)  # fmt: skip


def _flags(name: str) -> set[str]:
    """A setting's flag and its negation (tyro rejects the latter for non-booleans)."""
    flag = "--" + name.replace("_", "-")
    return {flag, "--no-" + flag[2:]}


# What a run's stored segments and labels depend on: a run with no checkpoint yet may restart
# with any other setting changed (nothing else has been learned), but not these.
DATA_SETTINGS = (
    "env", "segment_seconds", "atari_segment_steps", "env_reward", "teacher", "teacher_model",
)  # fmt: skip
_DATA_FLAGS = tuple(name.replace("_", "-") for name in DATA_SETTINGS)


def _parse(argv: list[str], default: PrefsConfig | None = None) -> PrefsConfig:
    try:
        return run_tyro(PrefsConfig, argv, prog="rlkit prefs train", default=default)
    except ValueError as exc:  # raised by the config's own checks
        raise UserError(str(exc)) from None


def _fmt(x: float, spec: str = ".1f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def check_resumable(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """One-line errors, before anything is written, for a run that cannot be resumed: a
    damaged checkpoint (state or policy), or a missing or damaged label store. A run that
    stopped before its first checkpoint starts again from step 0 with the labels it stored
    (its store, if it got as far as making one, must be readable).

    Returns the latest checkpoint's directory and loaded state, for the run to restore
    (:meth:`~rlkit.loops.preference.PreferenceLoop.restore`) without reading it again; None
    for a run with no checkpoint."""
    from rlkit.store import check_segment_files, check_store

    checkpoints = CheckpointManager(run_dir)
    if not checkpoints.any():
        check_store(run_dir, required=False)
        check_segment_files(run_dir)
        return None
    path, state = checkpoints.load_latest()
    _check_policy_file(path / "policy.zip")
    check_store(run_dir, required=True)
    check_segment_files(run_dir)
    return path, state


def _resume_settings(
    argv: list[str], cfg: PrefsConfig, saved: PrefsConfig, run_dir: Path
) -> PrefsConfig:
    """The settings a checkpointed run resumes with: the saved ones, with a longer --steps and
    how the run executes (EXECUTION_SETTINGS) changed for this invocation only."""
    given = given_flags(argv)
    execution = {n: getattr(cfg, n) for n in EXECUTION_SETTINGS if _flags(n) & given}
    allowed = RESUME_FLAGS.union(*(_flags(n) for n in EXECUTION_SETTINGS))
    refuse_changes_on_resume(argv, cfg, saved, allowed=allowed)
    steps = cfg.steps if "--steps" in given else saved.steps
    if steps < saved.steps:
        raise UserError(
            f"--steps {steps} is below the run's {saved.steps}: a resumed run can only go on"
        )
    return dataclasses.replace(
        saved, resume=True, run_dir=run_dir, steps=max(steps, saved.steps), **execution
    )


def _restart_settings(
    argv: list[str], saved: PrefsConfig, run_dir: Path
) -> tuple[PrefsConfig, list[str]]:
    """The settings a run with no checkpoint yet starts again from step 0 with, and the
    changes (``--flag NEW (saved: OLD)``): the saved settings and any flag given, except
    those its stored segments and labels depend on (DATA_SETTINGS). Nothing but those labels
    has been learned, so a run that failed on a setting before its first checkpoint (say, a
    diverging learning rate) can go on in place with another. Checked as a fresh run's are."""
    from envs import env_kind
    from rlkit.loops.preference import trainer_config
    from rlkit.store import stored_label_count

    cfg = dataclasses.replace(_parse(argv, default=saved), resume=True, run_dir=run_dir)
    changed = changed_settings(argv, cfg, saved, frozenset({"--resume", "--run-dir"}), True)
    fixed = [line for flag, line in changed.items() if flag[2:].split(".")[0] in _DATA_FLAGS]
    if fixed:
        raise UserError(
            f"--resume keeps what the run's stored segments and labels depend on"
            f" ({', '.join('--' + f for f in _DATA_FLAGS)}): not {', '.join(fixed)}; choose"
            " another --run-dir for a new run"
        )
    stored = stored_label_count(run_dir)
    if cfg.labels < stored:
        raise UserError(f"--labels {cfg.labels} is below the {stored} labels the run stored")
    kind = env_kind(cfg.env)
    _refuse_unused_flags(cfg, given_flags(argv), kind)
    _check_one_rollout(cfg, kind)
    cfg = dataclasses.replace(cfg, trainer=trainer_config(cfg.trainer, kind, cfg.env))
    return cfg, list(changed.values())


def _save_config(run_dir: Path, cfg: PrefsConfig) -> None:
    """``config.json``: the settings as given (what ``--resume`` compares its flags with and
    reads back), and under ``resolved`` what those left to the env came to."""
    from rlkit.loops.preference import resolved_settings

    save_config(run_dir, {**dataclasses.asdict(cfg), RESOLVED: resolved_settings(cfg)})


def _check_policy_file(path: Path) -> None:
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path} is missing or not a zip archive; left as it is")


def _clear_new_run(run_dir: Path, made_dir: bool) -> None:
    """Remove what a fresh run wrote before it failed to start (the directory was new or
    empty, and no label exists yet), so the same command can be run again; and the
    directory itself where this run made it."""
    import shutil

    for entry in run_dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    if made_dir:
        run_dir.rmdir()


def _exit_watch(cfg: PrefsConfig, run_dir: Path) -> ExitWatch | None:
    """For a run on a cluster it joined: a watch that prints the run's error line if Ray ends
    this process when the cluster's head is lost (:mod:`rlkit.commands.exit_watch`)."""
    if not cfg.ray_workers or cfg.ray_address is None:
        return None
    from rlkit.distributed.connection import head_address

    head = head_address()
    return None if head is None else ExitWatch(head, run_dir)


def _check_one_rollout(cfg: PrefsConfig, kind: str) -> None:
    """``--steps`` is rounded up to whole rollouts: refuse a budget under one, which would
    silently run a whole rollout (a million steps with ``--n-envs 1000``)."""
    from agents.presets import resolve_algo, steps_per_env

    per_env = steps_per_env(cfg.policy, resolve_algo(cfg.policy, kind))
    rollout = cfg.vec_envs(kind) * per_env
    if cfg.steps < rollout:
        raise UserError(
            f"--steps {cfg.steps} is less than one rollout ({cfg.vec_envs(kind)} envs x {per_env}"
            f" steps = {rollout}); raise --steps or lower --n-envs or --policy.n-steps"
        )


#: The synthetic teacher's settings that only one noise model reads.
NOISE_FLAGS = {
    "--teacher-model.beta": "bradley_terry", "--teacher-model.eps": "mistake",
    "--teacher-model.skip-threshold": "skip", "--teacher-model.equal-threshold": "equal",
    "--teacher-model.gamma": "myopic",
}  # fmt: skip


def _refuse_unused_flags(cfg: PrefsConfig, given: set[str], kind: str) -> None:
    """A flag this run would ignore is a mistake to point out, not to pass over: the synthetic
    teacher's settings without a synthetic teacher or with a noise model that does not read
    them, the mixed teacher's share without it, one env family's segment length or episode
    ends on the other, the candidates per query of uniform queries, the MLP's hidden layers
    under another backbone, observation normalization for A2C (TRPO's alone)."""
    from agents.presets import resolve_algo
    from rlkit.loops.preference import resolved_backbone

    teacher_flags = sorted(f for f in given if f.startswith("--teacher-model."))
    if cfg.teacher == "human" and teacher_flags:
        raise UserError(
            f"{teacher_flags[0]} sets the synthetic teacher, and --teacher human has none: use"
            " --teacher mixed, or drop it"
        )
    for flag in teacher_flags:
        model = NOISE_FLAGS.get(flag)
        if model is not None and cfg.teacher_model.noise != model:
            raise UserError(
                f"{flag} sets the {model} noise model, and this run's teacher is"
                f" {cfg.teacher_model.noise}: add --teacher-model.noise {model}, or drop it"
            )
    if cfg.query_strategy == "uniform" and "--oversample" in given:
        raise UserError(
            "--oversample sets the candidates scored per query; --query-strategy uniform scores"
            " none"
        )
    if kind == "atari" and given & {"--early-termination", "--no-early-termination"}:
        raise UserError(
            f"--early-termination sets MuJoCo episodes; {cfg.env}'s end with the game (a life"
            " lost ends a training episode)"
        )
    backbone = resolved_backbone(cfg, kind)
    if backbone != "mlp" and "--reward-hidden" in given:
        raise UserError(
            f"--reward-hidden sets the mlp backbone's layers; this run's is {backbone} (its"
            " settings go in --backbone-kwargs)"
        )
    normalize = {"--policy.normalize-obs", "--policy.no-normalize-obs"}
    algo = resolve_algo(cfg.policy, kind)
    if algo != "trpo" and given & normalize:
        raise UserError(
            "--policy.normalize-obs sets TRPO's observation normalization; this run's policy is"
            f" {algo.upper()}"
        )
    if cfg.teacher != "mixed" and "--synthetic-share" in given:
        raise UserError(
            f"--synthetic-share is the synthetic teacher's share under --teacher mixed; this run"
            f" has --teacher {cfg.teacher}"
        )
    if kind == "mujoco" and "--atari-segment-steps" in given:
        raise UserError(
            f"--atari-segment-steps sets Atari segments; {cfg.env}'s last --segment-seconds"
        )
    if kind == "atari" and "--segment-seconds" in given:
        raise UserError(
            f"--segment-seconds sets MuJoCo segments; {cfg.env}'s last --atari-segment-steps"
        )


def train(argv: list[str]) -> int:
    """``rlkit prefs train``: parse ``argv`` (a new run, or ``--resume``), check it, run the
    preference loop; returns the exit code. The run directory is released however it ends."""
    try:
        return _train(argv)
    finally:  # the run directory is free for the next trainer (a kill -9 frees it too)
        release_run_dirs()


def _train(argv: list[str]) -> int:
    cfg = _parse(argv)
    from envs import check_env_id, env_kind

    check_env_id(cfg.env)
    if env_kind(cfg.env) == "other":
        raise UserError(
            f"rlkit prefs trains on MuJoCo v5 tasks and ALE Atari games; {cfg.env} is neither"
        )
    restart_changes: list[str] = []  # settings changed by resuming a run with no checkpoint
    checkpoint = None  # the latest checkpoint, loaded once, for a resumed run to restore
    if cfg.resume:
        if cfg.run_dir is None:
            raise UserError("--resume needs --run-dir: the run to continue")
        run_dir = prepare_run_dir(cfg.run_dir, resume=True)
        saved = PrefsConfig.from_saved(load_config(run_dir))
        if CheckpointManager(run_dir).any():
            cfg = _resume_settings(argv, cfg, saved, run_dir)
        else:
            cfg, restart_changes = _restart_settings(argv, saved, run_dir)
        # A missing or corrupt checkpoint or store stops us here, before anything is written.
        checkpoint = check_resumable(run_dir)
    # On the settings the run will use: a resumed Ray run takes a new --ray-address alone.
    if cfg.ray_workers == 0 and (
        cfg.ray_address is not None
        or cfg.ray_compiled
        or not cfg.ray_worker_rollouts
        or cfg.ray_compress != "auto"
        or cfg.ray_env_processes != 1
        or cfg.ray_call_timeout != PrefsConfig.ray_call_timeout
    ):
        raise UserError(
            "--ray-address, --ray-compiled, --ray-compress, --ray-env-processes,"
            " --ray-call-timeout and --no-ray-worker-rollouts need --ray-workers N (N >= 1)"
        )
    n_envs = cfg.vec_envs(env_kind(cfg.env))
    if cfg.ray_workers > n_envs:
        default = " (the default)" if cfg.n_envs is None else ""
        raise UserError(
            f"--ray-workers {cfg.ray_workers} is more than the {n_envs} envs{default}: each"
            f" worker needs at least one; raise --n-envs"
        )
    if cfg.ray_workers > 0 and cfg.ray_env_processes > n_envs // cfg.ray_workers:
        raise UserError(
            f"--ray-env-processes {cfg.ray_env_processes} is more than the envs of a worker"
            f" ({n_envs} envs on {cfg.ray_workers} workers: {n_envs // cfg.ray_workers} for the"
            f" smallest); each env process steps at least one; raise --n-envs"
        )
    if cfg.ray_workers > 0 and cfg.ray_address is not None:
        from rlkit.distributed import check_address  # optional dependency

        check_address(cfg.ray_address)  # before anything is written: a bad address is one line
    if not cfg.resume:
        from rlkit.loops.preference import check_segments_fit, trainer_config

        _refuse_unused_flags(cfg, given_flags(argv), env_kind(cfg.env))
        check_segments_fit(cfg)  # before anything is written
        _check_one_rollout(cfg, env_kind(cfg.env))
        # The env's trainer settings (an unset L2 cap is 3e-2 on Walker2d) are checked here
        # and saved as set, so a resumed run keeps them if the per-env defaults change.
        cfg = dataclasses.replace(
            cfg, trainer=trainer_config(cfg.trainer, env_kind(cfg.env), cfg.env)
        )
        run_dir = Path(cfg.run_dir or Path("runs") / default_run_name(cfg.env, "prefs", cfg.seed))
        made_dir = not run_dir.exists()
        run_dir = prepare_run_dir(run_dir, resume=False)
        cfg = dataclasses.replace(cfg, run_dir=run_dir)
        _save_config(run_dir, cfg)

    from rlkit.loops.preference import PreferenceLoop

    console = Console(stderr=True)
    try:
        loop = PreferenceLoop(cfg, run_dir, console)
    except BaseException as exc:
        if not cfg.resume:
            _clear_new_run(run_dir, made_dir)
        if isinstance(exc, ValueError | TypeError | RuntimeError):  # settings the env cannot take
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"cannot set up the run: {first}") from None
        raise
    if restart_changes:  # (saved once the run is set up: a setting refused there is not)
        _save_config(run_dir, dataclasses.replace(cfg, resume=False))
        print(f"no checkpoint yet: the run starts again with {', '.join(restart_changes)}",
              file=sys.stderr)  # fmt: skip
    # (once the run is set up: a setting refused there is the only line printed)
    console.print(
        f"[bold]rlkit prefs[/] {cfg.env}: {cfg.steps} steps, {cfg.labels} labels, run dir {run_dir}"
    )
    # The first Ctrl-C or SIGTERM stops the run at the end of its round, checkpointed; a
    # second one stops it at once (rlkit.core.stop).
    stop = GracefulStop(announce=lambda line: console.print(line, soft_wrap=True))
    watch = None
    clear_new = False  # a fresh run refused before it saved anything of value
    try:
        watch = _exit_watch(cfg, run_dir)
        with stop:
            summary = loop.run(
                resume=cfg.resume, stop=stop, checkpoint=checkpoint,
                on_begin=lambda: record_provenance(run_dir, ["rlkit", "prefs", "train", *argv]),
            )  # fmt: skip
    except StopRequested as exc:
        print(interrupted_line(run_dir, f"stopped at step {exc.step:,}"), file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(interrupted_line(run_dir), file=sys.stderr)
        return 128 + int(stop.requested or signal.SIGINT)
    except RunStoppedError as exc:  # e.g. the Ray cluster lost: what was saved is intact
        lost = cfg.ray_address if exc.cluster_lost else None
        print(stopped_line(str(exc), run_dir, lost), file=sys.stderr)
        return exc.exit_code
    except ConnectionError as exc:
        if not (cfg.ray_address or "").startswith("ray://"):
            raise
        # Ray Client's connection dropped and did not come back within its grace (30 s).
        from rlkit.distributed.connection import error_line

        message = (
            f"lost the Ray cluster: the Ray Client connection to {cfg.ray_address} dropped"
            f" ({error_line(exc)})"
        )
        print(stopped_line(message, run_dir, cfg.ray_address), file=sys.stderr)
        return 1
    except UserError:  # (after RunStoppedError, a UserError whose line says what is saved)
        # e.g. episodes too short for any segment, found while the random policy collects:
        # with no checkpoint and no label yet, the same command (or a corrected one) may run
        # again in the same directory
        clear_new = not cfg.resume and not loop.checkpoints.any()
        clear_new = clear_new and loop.store.count_labels() == 0
        raise
    finally:
        try:
            loop.close()
            if clear_new:
                _clear_new_run(run_dir, made_dir)
        finally:
            if watch is not None:
                watch.done()
    table = Table(title=f"rlkit prefs: {cfg.env}", show_header=False)
    table.add_row("true return, before", _fmt(summary.true_return_before))
    table.add_row("true return, after", _fmt(summary.true_return_after))
    table.add_row("reward-model accuracy, held-out pairs", _fmt(summary.val_accuracy, ".3f"))
    table.add_row("labels / policy steps", f"{summary.labels} / {summary.steps}")
    table.add_row("wall-clock", f"{summary.wall_seconds:.0f} s")
    table.add_row("run dir", str(summary.run_dir))
    table.add_row("plot", str(summary.plot))
    table.add_row(
        "logs",
        f"{summary.run_dir / 'metrics.csv'}, tensorboard --logdir"
        f" {shlex.quote(str(summary.run_dir))}",
    )
    Console().print(table)
    if summary.labels == 0:
        who = (
            "no one labeled a clip (`rlkit label serve` is where people do)"
            if cfg.teacher != "synthetic"
            else "its label budget was 0"
        )
        print(
            f"warning: the run ended without a label, {who}: its policy trained on an untrained"
            " reward model",
            file=sys.stderr,
        )
    return 0


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluate a preference run's latest policy on the true reward."""

    run_dir: tyro.conf.Positional[Path]
    """The run directory."""
    episodes: int = 10
    """Evaluation episodes."""
    stochastic: bool = False
    """Sample actions as in training instead of taking the policy's mean action (seeded from
    the run's seed, so repeatable)."""
    json: bool = False
    """Print one JSON object instead of a table."""
    env_reward: Literal["run", "gymnasium", "paper"] = "run"
    """The true reward to score on: the run's own, or (MuJoCo) another of `rlkit prefs train
    --env-reward`'s, e.g. a run taught with the paper's reward scored on Gymnasium's."""


def evaluate(argv: list[str]) -> int:
    """``rlkit prefs eval DIR``: score the run's latest checkpointed policy on the true
    reward and print the mean return (a table line, or JSON with ``--json``); returns 0."""
    args = run_tyro(EvalConfig, argv, prog="rlkit prefs eval")
    if args.episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {args.episodes}")
    cfg = PrefsConfig.from_saved(load_config(args.run_dir))
    if args.env_reward != "run":
        cfg = cfg.scored_on(args.env_reward)
    from envs import env_kind
    from rlkit.loops.evaluation import evaluate_policy_true, load_policy

    path = CheckpointManager(args.run_dir).latest()
    _check_policy_file(path / "policy.zip")
    agent = load_policy(cfg, path / "policy.zip")
    n_envs = cfg.vec_envs(env_kind(cfg.env))
    mean = evaluate_policy_true(
        agent, cfg, n_envs, args.episodes, deterministic=not args.stochastic
    )
    result = {
        "env": cfg.env,
        "checkpoint": path.name,
        "episodes": args.episodes,
        "actions": "stochastic" if args.stochastic else "deterministic",
        "env_reward": cfg.env_reward,
        "true_return": mean,
    }
    if args.json:
        print(json.dumps(result))
    else:
        Console().print(
            f"{cfg.env} {path.name}: mean true return ({cfg.env_reward} reward) {mean:.2f}"
            f" over {args.episodes} {result['actions']} episodes",
            soft_wrap=True,
        )
    return 0

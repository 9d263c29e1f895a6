"""``rlkit vpn train`` and ``rlkit vpn eval``: the Value Prediction Network and its DQN baseline."""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from rlkit.cli import run_tyro
from rlkit.core.errors import UserError
from rlkit.core.provenance import record_provenance
from rlkit.core.rundir import (
    RESUME_FLAGS,
    given_flags,
    refuse_changes_on_resume,
    release_run_dirs,
)
from rlkit.core.stop import GracefulStop, StopRequested


def train(argv: list[str]) -> int:
    """Train a VPN (``--algo vpn``, default) or the DQN baseline (``--algo dqn``)."""
    from agents.vpn.config import VPNConfig

    cfg = run_tyro(VPNConfig, argv, prog="rlkit vpn train", description=VPNConfig.__doc__)
    algo = cfg.algo
    if cfg.resume and cfg.run_dir and (Path(cfg.run_dir) / "config.json").is_file():
        from agents.vpn.trainer import saved_config

        saved = saved_config(Path(cfg.run_dir))
        algo = saved.algo  # a resumed run keeps its algorithm
        # where it runs may change (a run begun on a GPU goes on on a CPU); what it learns not
        refuse_changes_on_resume(argv, cfg, saved, allowed=RESUME_FLAGS | {"--device"})
        if "--device" not in given_flags(argv):
            cfg = dataclasses.replace(cfg, device=saved.device)
    vpn_only = sorted(given_flags(argv) & {"--plan", "--prediction-steps"})
    if algo == "dqn" and vpn_only and not cfg.resume:  # (else silently ignored)
        one = len(vpn_only) == 1
        raise UserError(
            f"{' and '.join(vpn_only)} {'is' if one else 'are'} for the VPN's planning; the DQN"
            f" baseline does not plan: drop {'it' if one else 'them'}, or use --algo vpn"
        )
    if algo == "dqn":
        from agents.vpn.dqn import train_dqn as train_run
    else:
        from agents.vpn.trainer import train_vpn as train_run
    # The first Ctrl-C or SIGTERM checkpoints the step it arrives at and stops; a second one
    # stops at once (rlkit.core.stop).
    stop = GracefulStop(
        announce=lambda line: print(line, file=sys.stderr), what="after a checkpoint"
    )
    made = cfg.run_dir is not None and not Path(cfg.run_dir).exists()
    try:
        with stop:
            run_dir = train_run(
                cfg, stop, lambda run: record_provenance(run, ["rlkit", "vpn", "train", *argv])
            )
    except UserError:  # refused before its config was saved: leave no empty run directory
        if made and Path(cfg.run_dir).is_dir() and not any(Path(cfg.run_dir).iterdir()):
            Path(cfg.run_dir).rmdir()
        raise
    except StopRequested as exc:
        print(
            f"stopped at step {exc.step:,}, checkpointed: `rlkit vpn train --run-dir"
            f" {shlex.quote(str(exc.run_dir))} --resume` continues",
            file=sys.stderr,
        )
        return exc.exit_code
    finally:  # the run directory is free for the next trainer (a kill -9 frees it too)
        release_run_dirs()
    print(f"run finished: {run_dir}")
    print(final_line(json.loads((Path(run_dir) / "summary.json").read_text())))
    return 0


def final_line(summary: dict[str, Any]) -> str:
    """The line ``rlkit vpn train`` ends with: its ``summary.json`` (written by the trainer,
    :func:`agents.vpn.trainer.write_summary`) in words."""
    parts = [f"{summary['steps']:,} steps", f"{summary['updates']:,} updates"]
    if summary["eval_reward"] is not None:
        parts.append(
            f"greedy eval reward {summary['eval_reward']:.2f} over"
            f" {summary['eval_episodes']} episodes at step {summary['eval_step']:,}"
        )
    if summary["episode_reward"] is not None:
        parts.append(f"training episode reward {summary['episode_reward']:.2f}")
    return f"final: {', '.join(parts)} (summary.json)"


def evaluate(argv: list[str]) -> int:
    """Greedy evaluation of a run; prints one JSON line (and writes it to ``--output``)."""
    from agents.vpn.config import EvalConfig
    from agents.vpn.run_eval import evaluate_run

    if argv and not argv[0].startswith("-"):  # `rlkit vpn eval DIR ...`: the run dir comes first
        if any(a == "--run-dir" or a.startswith("--run-dir=") for a in argv[1:]):
            raise UserError(f"the run is given twice ({argv[0]} and --run-dir): give it once")
        argv = ["--run-dir", argv[0], *argv[1:]]
    cfg = run_tyro(EvalConfig, argv, prog="rlkit vpn eval DIR", description=EvalConfig.__doc__)
    cfg.validate()
    if cfg.output:
        from rlkit.core.rundir import check_output_file

        check_output_file(cfg.output, cfg.run_dir, force=cfg.force)
    result = evaluate_run(cfg)
    line = json.dumps(result)
    print(line)
    if cfg.output:
        from rlkit.core.rundir import atomic_output

        with atomic_output(cfg.output) as out:
            out.write(line + "\n")
    return 0

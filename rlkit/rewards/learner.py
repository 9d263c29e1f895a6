"""Where the reward ensemble trains while the policy collects rollouts: a thread or a process.

The preference loop trains the reward model in the background of each round and waits for
it at the round's end (:mod:`rlkit.loops.preference`). Both learners below take the same
calls, in the same order, and give the same results (tested):

- :class:`ThreadLearner` runs :meth:`RewardTrainer.train` on a background thread of this
  process. torch releases the GIL inside its kernels, but between them the learner's Python
  takes it back from the policy's rollout loop: on 2 cores TRPO ran ~12% slower beside a
  learner training without pause (BENCHMARKS.md, "Overhead"; at the 1M-step default, where the
  learner is idle half of each round, the two learners came out alike).
- :class:`ProcessLearner` keeps the trainer in a child process (spawned, so no thread state
  is forked) and exchanges only what changes: the new labels' segments (observations and
  actions, each segment once) on the way in, the members' weights on the way out. Beside
  it TRPO ran ~4% slower. Mean-teacher training samples the live segment pool, which lives
  in this process, so it needs the thread.
"""

from __future__ import annotations

import contextlib
import copy
import multiprocessing as mp
import multiprocessing.util
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, NoReturn, Protocol

import numpy as np
import torch

from rlkit.core.errors import UserError, error_summary, save_traceback
from rlkit.core.stop import ignore_signals, start_ignoring_signals
from rlkit.core.types import Comparison, Segment
from rlkit.rewards.ensemble import RewardEnsemble
from rlkit.rewards.regularizers import UnlabeledSampler
from rlkit.rewards.trainer import RewardTrainer, TrainerConfig

LearnerKind = Literal["thread", "process"]
#: What both learners raise on a second :meth:`start` before :meth:`finish`.
ALREADY_STARTED = "reward training already started; call finish() first"
#: What both learners raise when used after :meth:`close`.
CLOSED = "the reward learner is closed"
NORMALIZATION = ("out_mean", "out_std", "out_scale")
"""The ensemble's output normalization: set by the loop in this process, never by training."""


class RewardLearner(Protocol):
    """What the preference loop asks of its reward learner."""

    ensemble: RewardEnsemble
    """This process's copy of the learner's ensemble, current after :meth:`finish`."""

    def __len__(self) -> int: ...
    def add(self, comparison: Comparison, seg_a: Segment, seg_b: Segment) -> None:
        """Add one labelled comparison with its two segments (obs ``(L, *obs_shape)``, acts
        ``(L, *act_shape)``), for the next :meth:`start`."""

    def start(self, epochs: float | None = None) -> None:
        """Start training in the background; :meth:`finish` waits for it."""

    def finish(self) -> dict[str, float]:
        """Wait for the training in flight and return its metrics (``{}`` if none was started)."""

    def evaluate(self) -> dict[str, float]:
        """Losses and accuracies of the current ensemble on the training and validation labels."""

    def state_dict(self) -> dict:
        """The trainer's state for a checkpoint (see :meth:`RewardTrainer.state_dict`)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore the trainer's state from :meth:`state_dict`."""

    def load_ensemble(self, state: dict) -> None:
        """Load ensemble weights into :attr:`ensemble` and the copy that trains (if another)."""

    def close(self) -> None:
        """Stop training and release the thread or process; safe twice."""


class ThreadLearner:
    """A :class:`RewardTrainer` on ``ensemble``, trained on one background thread."""

    def __init__(
        self,
        ensemble: RewardEnsemble,
        config: TrainerConfig,
        rng: np.random.Generator,
        unlabeled: UnlabeledSampler | None = None,
        torch_threads: int = 1,
    ) -> None:
        self.ensemble = ensemble
        self.trainer = RewardTrainer(ensemble, config, rng, unlabeled=unlabeled)
        self._executor = ThreadPoolExecutor(
            max_workers=1,
            thread_name_prefix="reward-trainer",
            initializer=torch.set_num_threads,  # per-thread in OpenMP: set it there too
            initargs=(torch_threads,),
        )
        self._training: Future | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self.trainer)

    def add(self, comparison: Comparison, seg_a: Segment, seg_b: Segment) -> None:
        """Hand one labelled comparison to the trainer (see :meth:`RewardTrainer.add`)."""
        self.trainer.add(comparison, seg_a, seg_b)

    def start(self, epochs: float | None = None) -> None:
        """Start training in the background; :meth:`finish` waits for it.

        Raises:
            RuntimeError: training is already in flight, or the learner was closed.
        """
        if self._closed:
            raise RuntimeError(CLOSED)
        if self._training is not None:
            raise RuntimeError(ALREADY_STARTED)
        self._training = self._executor.submit(self.trainer.train, epochs)

    def finish(self) -> dict[str, float]:
        """Wait for the training in flight and return its metrics (``{}`` if none was started).

        Raises whatever the training raised.
        """
        if self._training is None:
            return {}
        training, self._training = self._training, None
        return training.result()

    def evaluate(self) -> dict[str, float]:
        """The trainer's losses and accuracies (see :meth:`RewardTrainer.evaluate`)."""
        return self.trainer.evaluate()

    def state_dict(self) -> dict:
        """The trainer's state (see :meth:`RewardTrainer.state_dict`)."""
        return self.trainer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the trainer's state from :meth:`state_dict`."""
        self.trainer.load_state_dict(state)

    def load_ensemble(self, state: dict) -> None:
        """Load ensemble weights; the thread trains the same ensemble, so there is one copy."""
        self.ensemble.load_state_dict(state)

    def close(self) -> None:
        """Wait for the training in flight (if it began) and end the thread; safe twice."""
        self._closed = True
        if self._training is not None:
            self._training.cancel()
        self._training = None
        self._executor.shutdown(wait=True)


def _weights(ensemble: RewardEnsemble) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ensemble.state_dict().items() if k not in NORMALIZATION}


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux ``PR_SET_PDEATHSIG``).

    The child ignores SIGINT and SIGTERM and sees its pipe close only between jobs, so a loop
    process that dies at once (``kill -9``, a second Ctrl-C) would otherwise leave it training
    alone for as long as its job lasts (minutes of a core for an Atari pretraining). The kernel
    sends the signal when the *thread* that started the child ends, so a learner is made on the
    thread that runs its loop (as ``PreferenceLoop`` does)."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipe's EOF ends it between jobs
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)


def _end() -> NoReturn:
    """End the child at once: it holds nothing to save or release, and Python's own exit of
    a process with torch loaded takes ~0.8 s, which the loop's close would wait out (at the
    end of every run, and after a lost cluster's one line)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _serve(
    conn: Any,
    ensemble: RewardEnsemble,
    config: TrainerConfig,
    rng: np.random.Generator,
    threads: int,
    parent: int,
) -> None:
    """The child process: apply each request to one trainer, answer each that asks."""
    from rlkit.core.allocator import keep_freed_memory

    _die_with_parent(parent)

    keep_freed_memory()  # as the rlkit command does in its own process
    # Ctrl-C in a terminal and a scheduler's SIGTERM reach every process of the job: the loop
    # decides when to stop (rlkit.core.stop) and may still need this trainer's state for its
    # checkpoint. The child ends when the loop closes the pipe or asks it to, or when killed.
    # (It was started with both blocked, so none that came since is acted on.)
    ignore_signals()
    torch.set_num_threads(threads)
    trainer = RewardTrainer(ensemble, config, rng)
    while True:
        try:
            op, *args = conn.recv()
        except (EOFError, KeyboardInterrupt):  # the loop's process is gone
            _end()
        try:
            if op == "add":  # each segment arrives once; the trainer's cache keeps it
                new, comparisons = args
                for c in comparisons:
                    trainer.add(c, new.get(c.segment_a), new.get(c.segment_b))
                continue
            if op == "close":
                _end()
            if op == "train":
                reply: Any = (trainer.train(args[0]), _weights(ensemble))
            elif op == "evaluate":
                reply = trainer.evaluate()
            elif op == "state_dict":
                reply = trainer.state_dict()
            elif op == "load_state_dict":
                trainer.load_state_dict(args[0])
                continue
            elif op == "load_ensemble":
                ensemble.load_state_dict(args[0])
                continue
            else:
                raise ValueError(f"unknown request {op!r}")
        except Exception as exc:  # noqa: BLE001  (reported to the loop, which raises it)
            # The loop raises one line; an unforeseen error's whole story goes to a file.
            reply = error_summary(exc, limit=1000)
            if not isinstance(exc, UserError):
                reply += f" (traceback in {save_traceback(exc, 'the reward learner process')})"
            with contextlib.suppress(OSError):
                conn.send(("error", reply))
            return
        try:
            conn.send(("ok", reply))
        except OSError:  # the loop's process is gone (BrokenPipeError)
            return


class LearnerProcessError(UserError):
    """The reward learner's process failed or died: one line for the CLI, exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(
            f"{message}; the last checkpoint and every stored label are intact (--resume)",
            exit_code=1,
        )


class ProcessLearner:
    """A :class:`RewardTrainer` in a child process; ``ensemble`` mirrors its weights.

    The child starts with a copy of ``ensemble`` and ``rng``, so it trains exactly as a
    :class:`ThreadLearner` given the same ones would. Labels are sent in one message per
    :meth:`start` (their segments' observations and actions, each segment once).
    """

    def __init__(
        self,
        ensemble: RewardEnsemble,
        config: TrainerConfig,
        rng: np.random.Generator,
        torch_threads: int = 1,
    ) -> None:
        if config.mean_teacher_weight > 0:
            raise ValueError("mean-teacher training samples the pool in this process: use a thread")
        self.ensemble = ensemble
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=_serve,
            args=(
                child,
                copy.deepcopy(ensemble),
                config,
                copy.deepcopy(rng),
                torch_threads,
                os.getpid(),
            ),  # fmt: skip
            name="rlkit-reward-learner",
            daemon=True,
        )
        start_ignoring_signals(self._process)  # blocked from its first import on
        child.close()
        # The child ignores SIGTERM, so multiprocessing's exit handler cannot end it that way
        # if close() was never called: closing the pipe first (before that handler terminates
        # and joins its daemonic children) lets it see EOF and return.
        multiprocessing.util.Finalize(self, self._conn.close, exitpriority=10)
        self._sent: set[int] = set()
        self._new_segments: dict[int, Segment] = {}
        self._new_comparisons: list[Comparison] = []
        self._n = 0
        self._training = False
        self._closed = False

    def __len__(self) -> int:
        return self._n

    def add(self, comparison: Comparison, seg_a: Segment, seg_b: Segment) -> None:
        """Queue one labelled comparison for the child; sent with the next request.

        Each segment's obs and acts are queued once (without render state or true rewards).
        """
        for seg in (seg_a, seg_b):
            if seg.id not in self._sent:
                self._sent.add(seg.id)
                # The trainer needs what the reward sees: no render state, no true reward.
                self._new_segments[seg.id] = Segment(
                    obs=seg.obs, acts=seg.acts, true_rews=np.zeros(len(seg)), id=seg.id
                )
        self._new_comparisons.append(comparison)
        self._n += 1

    def _send(self, *message: Any) -> None:
        if self._closed:
            raise RuntimeError(CLOSED)
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            raise self._died() from None

    def _flush(self) -> None:
        if self._new_comparisons or self._new_segments:
            self._send("add", self._new_segments, self._new_comparisons)
            self._new_segments, self._new_comparisons = {}, []

    def _died(self) -> LearnerProcessError:
        self._process.join(timeout=5)
        return LearnerProcessError(
            f"the reward learner process died (exit code {self._process.exitcode})"
        )

    def _reply(self) -> Any:
        if self._closed:
            raise RuntimeError(CLOSED)
        try:
            status, reply = self._conn.recv()
        except (EOFError, ConnectionResetError):
            raise self._died() from None
        if status == "error":
            raise LearnerProcessError(f"the reward learner failed: {reply}")
        return reply

    def _request(self, *message: Any) -> None:
        """Send ``message`` after the pending labels; the child must be idle.

        Raises:
            RuntimeError: training is in flight, or the learner was closed.
        """
        if self._closed:
            raise RuntimeError(CLOSED)
        if self._training:
            raise RuntimeError(ALREADY_STARTED)
        self._flush()
        self._send(*message)

    def _ask(self, *message: Any) -> Any:
        self._request(*message)
        return self._reply()

    def start(self, epochs: float | None = None) -> None:
        """Start training in the child; :meth:`finish` waits for it.

        Raises:
            RuntimeError: training is already in flight, or the learner was closed.
        """
        self._request("train", epochs)
        self._training = True

    def finish(self) -> dict[str, float]:
        """Wait for the child's training and return its metrics (``{}`` if none was started);
        this process's ``ensemble`` takes the trained weights (not its output normalization).

        Raises:
            LearnerProcessError: the child failed or died.
        """
        if not self._training:
            return {}
        self._training = False
        metrics, weights = self._reply()
        self.ensemble.load_state_dict(weights, strict=False)
        return metrics

    def evaluate(self) -> dict[str, float]:
        """The child trainer's losses and accuracies (see :meth:`RewardTrainer.evaluate`).

        Raises:
            RuntimeError: training is in flight, or the learner was closed.
        """
        return self._ask("evaluate")

    def state_dict(self) -> dict:
        """The child trainer's state (see :meth:`RewardTrainer.state_dict`).

        Raises:
            RuntimeError: training is in flight, or the learner was closed.
        """
        return self._ask("state_dict")

    def load_state_dict(self, state: dict) -> None:
        """Send the pending labels, then the trainer state from :meth:`state_dict`, to the child."""
        self._flush()
        self._send("load_state_dict", state)

    def load_ensemble(self, state: dict) -> None:
        """Load ensemble weights into this copy and the child's.

        Raises:
            RuntimeError: the learner was closed.
        """
        if self._closed:  # (before this copy changes)
            raise RuntimeError(CLOSED)
        self.ensemble.load_state_dict(state)
        self._send("load_ensemble", state)

    def close(self) -> None:
        """End the child (killed if it is training: nothing will read the result); safe
        twice. Every call that needs the child raises afterwards."""
        self._closed = True
        if self._process.is_alive():
            if self._training:  # nothing will read the result: do not wait for it
                self._process.kill()
            else:
                with contextlib.suppress(OSError):
                    self._conn.send(("close",))
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
                self._process.join()
        self._training = False
        self._conn.close()


def make_learner(
    kind: LearnerKind,
    ensemble: RewardEnsemble,
    config: TrainerConfig,
    rng: np.random.Generator,
    unlabeled: UnlabeledSampler | None = None,
    torch_threads: int = 1,
) -> RewardLearner:
    """``process`` unless mean-teacher training needs the pool in this process."""
    if kind == "process" and config.mean_teacher_weight == 0:
        return ProcessLearner(ensemble, config, rng, torch_threads)
    return ThreadLearner(ensemble, config, rng, unlabeled, torch_threads)

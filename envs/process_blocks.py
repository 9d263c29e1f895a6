"""A VecEnv whose envs step in helper processes, a contiguous block of envs per process.

One Ray rollout worker is one process on one core. :class:`ProcessBlocksVecEnv` lets it use
more: its envs are split into ``n_processes`` blocks, each stepped by a helper process in a
:class:`~envs.shallow_dummy_vec_env.ShallowDummyVecEnv` (auto-reset, ``terminal_observation``
and ``TimeLimit.truncated`` infos exactly as there). Unlike SB3's ``SubprocVecEnv`` (a process
and a pickled message per env per step), a step is one message per process each way, and the
observations never cross a pipe: every helper writes its block's into one shared-memory array
(``(n_envs, *obs_shape)``) that the parent copies out once per step. Rewards, dones and infos
(render states included) are pickled. Besides the VecEnv interface, each block can step on its
own (:meth:`~ProcessBlocksVecEnv.send_block`, :meth:`~ProcessBlocksVecEnv.recv_block`), so that a
caller can act for one block while the others step (:meth:`rlkit.distributed.RolloutWorker.sample`).

The helpers are plain ``python -m envs.env_block_process`` children (not ``multiprocessing``:
a Ray worker's ``__main__`` cannot be re-imported by a spawned child), with a socket and the
shared memory (a ``memfd``) passed as file descriptors. A helper ends when its parent does
(``PR_SET_PDEATHSIG``, and the socket's end of file), ignores ``SIGINT`` (the parent decides
when the envs close), and answers an env's exception with its message, which the parent raises
as :class:`EnvProcessError`. A helper that dies makes every later call raise
:class:`EnvProcessLostError` after ``on_lost`` (a Ray worker ends itself there, so that its pool
re-creates it whole).
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from multiprocessing.connection import Connection
from socket import socketpair
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import VecEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvStepReturn

from envs.factory import EnvSpec, make_env

#: How long the helpers may take to build their envs.
START_TIMEOUT_S = 120.0
#: How long :meth:`ProcessBlocksVecEnv.close` waits for a helper before killing it.
CLOSE_TIMEOUT_S = 10.0


class EnvProcessError(RuntimeError):
    """An env in a helper process raised (the message is the helper's)."""


class EnvProcessLostError(EnvProcessError):
    """A helper process ended (killed, or crashed outside Python)."""


def contiguous_blocks(n: int, k: int) -> list[range]:
    """``range(n)`` cut into ``k`` contiguous blocks whose sizes differ by at most one, the
    larger ones first. Requires ``1 <= k <= n``."""
    base, extra = divmod(n, k)
    bounds = [0]
    for i in range(k):
        bounds.append(bounds[-1] + base + (i < extra))
    return [range(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _shared_file(nbytes: int) -> int:
    """A file descriptor of ``nbytes`` of memory that a child given the descriptor can map."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("rlkit-env-obs")
    else:  # macOS: an unlinked temporary file (kept in the page cache)
        with tempfile.TemporaryFile() as f:
            fd = os.dup(f.fileno())
    os.ftruncate(fd, max(nbytes, 1))
    return fd


class ProcessBlocksVecEnv(VecEnv):
    """Envs ``first_rank .. first_rank + n_envs - 1`` of ``spec``, built and seeded as
    :func:`envs.make_env` builds them (env ``first_rank + k`` seeded ``seed + first_rank + k``),
    stepped in ``n_processes`` helper processes.

    Args:
        spec: which env (its observations must be one array: a ``Box`` space).
        seed, first_rank, n_envs: as for :class:`rlkit.distributed.RolloutWorker`.
        n_processes: helper processes, ``1 <= n_processes <= n_envs``.
        on_lost: called with a one-line message when a helper is found dead (once they all
            built their envs), before :class:`EnvProcessLostError` is raised.
        start_timeout_s: how long the helpers may take to build their envs.

    Raises:
        ValueError: bad ``n_processes``, or observations that are not one array.
        EnvProcessError: a helper could not build its envs (its message), or timed out.
    """

    def __init__(
        self,
        spec: EnvSpec,
        seed: int,
        first_rank: int,
        n_envs: int,
        n_processes: int,
        on_lost: Callable[[str], None] | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        if not 1 <= n_processes <= n_envs:
            raise ValueError(f"n_processes must be in 1..{n_envs} (the envs), got {n_processes}")
        probe = make_env(spec, seed, first_rank)()
        obs_space, act_space = probe.observation_space, probe.action_space
        probe.close()
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"env processes need array observations, not {obs_space}")
        self.num_envs = n_envs
        self.on_lost: Callable[[str], None] | None = None  # set once the helpers are up
        self.blocks = contiguous_blocks(n_envs, n_processes)
        shape, dtype = obs_space.shape, np.dtype(obs_space.dtype)
        nbytes = n_envs * int(np.prod(shape)) * dtype.itemsize
        self.conns: list[Connection] = []
        self.procs: list[subprocess.Popen] = []
        self._lost: str | None = None
        self.closed = False
        self._stepping: set[int] = set()  # blocks sent a step and not yet answered
        fd = _shared_file(nbytes)
        self._memory = mmap.mmap(fd, max(nbytes, 1))
        self._obs = np.frombuffer(self._memory, dtype, count=n_envs * int(np.prod(shape)))
        self._obs = self._obs.reshape(n_envs, *shape)
        # PR_SET_PDEATHSIG fires when the starting thread ends: only the main thread's last.
        die_with = os.getpid() if threading.current_thread() is threading.main_thread() else 0
        try:
            for block in self.blocks:
                mine, theirs = socketpair()
                with theirs:
                    self.procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "envs.env_block_process"]
                            + [str(theirs.fileno()), str(fd), str(die_with)],
                            pass_fds=(theirs.fileno(), fd),
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                        )
                    )
                self.conns.append(Connection(mine.detach()))
                ranks = range(first_rank + block.start, first_rank + block.stop)
                self.conns[-1].send((spec, seed, ranks, block.start, n_envs, shape, dtype.str))
            os.close(fd)  # the mapping and the helpers keep the memory
            fd = -1
            deadline = time.monotonic() + start_timeout_s
            for i in range(n_processes):
                if not self.conns[i].poll(max(0.0, deadline - time.monotonic())):
                    raise EnvProcessError(
                        f"env process {i} did not build its envs within {start_timeout_s:g} s"
                    )
                self._answer(i)
            # VecEnv's own set-up reads the envs' render_mode: the helpers are up now.
            super().__init__(n_envs, obs_space, act_space)
            self.on_lost = on_lost
        except BaseException:
            if fd >= 0:
                os.close(fd)
            self.close()
            raise

    # -- talking to the helpers ------------------------------------------------------------

    def _describe(self, i: int) -> str:
        proc = self.procs[i]
        code = proc.poll()
        if code is None:
            try:
                code = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                return f"env process {i} (pid {proc.pid}) stopped answering"
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        return f"env process {i} (pid {proc.pid}) ended ({how})"

    def _lose(self, i: int) -> EnvProcessLostError:
        self._lost = self._describe(i)
        if self.on_lost is not None:
            self.on_lost(self._lost)
        return EnvProcessLostError(self._lost)

    def _send(self, i: int, message: tuple) -> None:
        if self._lost is not None:
            raise EnvProcessLostError(self._lost)
        try:
            self.conns[i].send(message)
        except OSError:
            raise self._lose(i) from None

    def _answer(self, i: int) -> Any:
        try:
            ok, value = self.conns[i].recv()
        except (EOFError, OSError):
            raise self._lose(i) from None
        if not ok:
            raise EnvProcessError(f"env process {i}: {value}")
        return value

    def _all(self, messages: Iterable[tuple]) -> list[Any]:
        """Send one message to each helper, then gather the answers in order."""
        self.drain()
        for i, message in enumerate(messages):
            self._send(i, message)
        return self._gather(self._answer)

    def _gather(self, answer: Callable[[int], Any]) -> list[Any]:
        """``answer(i)`` of every helper in order; every answer is read (so that no stale one
        is left in a pipe) before the first env error is raised."""
        answers, error = [], None
        for i in range(len(self.blocks)):
            try:
                answers.append(answer(i))
            except EnvProcessLostError:
                raise
            except EnvProcessError as exc:
                error = error or exc
        if error is not None:
            raise error
        return answers

    def _per_env(self, command: str, indices: VecEnvIndices, *args: Any) -> list[Any]:
        """``command`` on the envs ``indices`` (global in this VecEnv), in that order."""
        self.drain()
        wanted = list(self._get_indices(indices))
        out: dict[int, Any] = {}
        for i, block in enumerate(self.blocks):
            local = [k - block.start for k in wanted if k in block]
            if local:
                self._send(i, (command, local, *args))
                out.update(zip((block.start + k for k in local), self._answer(i), strict=True))
        return [out[k] for k in wanted]

    # -- the VecEnv interface --------------------------------------------------------------

    def reset(self) -> np.ndarray:
        """Reset every env (with the seeds and options set since the last reset, then
        forgotten); returns a copy of the observations ``(n_envs, *obs_shape)`` and keeps the
        infos in :attr:`reset_infos`."""
        seeds, options = self._seeds or [None] * self.num_envs, self._options
        infos = self._all(
            ("reset", seeds[b.start : b.stop], options[b.start : b.stop]) for b in self.blocks
        )
        self.reset_infos = [info for block in infos for info in block]
        self._reset_seeds()
        self._reset_options()
        return self._obs.copy()

    def step_async(self, actions: np.ndarray) -> None:
        """Send every helper its block's actions; they step while the caller goes on."""
        for i, block in enumerate(self.blocks):
            self.send_block(i, actions[block.start : block.stop])

    def step_wait(self) -> VecEnvStepReturn:
        """Wait for every block's step: ``obs (n_envs, *obs_shape)`` (a copy), ``rews
        (n_envs,)``, ``dones (n_envs,)`` and ``n_envs`` infos."""
        answers = self._gather(lambda i: self.recv_block(i, copy=False))
        rews = np.concatenate([a[1] for a in answers])
        dones = np.concatenate([a[2] for a in answers])
        infos = [info for a in answers for info in a[3]]
        return self._obs.copy(), rews, dones, infos

    # -- one block at a time (a worker's pipelined sampling) -----------------------------------

    def send_block(self, i: int, actions: np.ndarray) -> None:
        """Start a step of block ``i`` (its envs' ``actions``); :meth:`recv_block` ends it."""
        if i in self._stepping:
            raise RuntimeError(f"block {i} is already stepping")
        self._send(i, ("step", np.asarray(actions)))
        self._stepping.add(i)

    def recv_block(
        self, i: int, copy: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """Wait for block ``i``'s step: ``(obs, rews, dones, infos)`` of its envs (``obs``
        a view of the shared array until the block's next step without ``copy``); its envs'
        :attr:`reset_infos` are updated."""
        if i not in self._stepping:
            raise RuntimeError(f"block {i} is not stepping")
        self._stepping.discard(i)
        rews, dones, infos, resets = self._answer(i)
        block = self.blocks[i]
        for k, reset_info in resets.items():
            self.reset_infos[block.start + k] = reset_info
        obs = self._obs[block.start : block.stop]
        return (obs.copy() if copy else obs), rews, dones, infos

    def pipeline(
        self,
        n_steps: int,
        act: Callable[[int], np.ndarray],
        take: Callable[[int, tuple], None],
        copy: bool = True,
    ) -> None:
        """Step every block ``n_steps`` times, each block on as soon as its last step is
        taken: ``act(i)`` gives block ``i``'s next actions, ``take(i, (obs, rews, dones,
        infos))`` receives its step (as :meth:`recv_block` with ``copy``). While the caller
        takes one block's step and acts for it, the other blocks step. On an error the
        blocks still stepping are waited for before it is raised."""
        try:
            for i in range(len(self.blocks)):
                self.send_block(i, act(i))
            for step in range(n_steps):
                for i in range(len(self.blocks)):
                    take(i, self.recv_block(i, copy))
                    if step < n_steps - 1:
                        self.send_block(i, act(i))
        except BaseException:
            self.drain()
            raise

    def drain(self) -> None:
        """Wait for the blocks still stepping, dropping their results (after an error)."""
        for i in sorted(self._stepping):
            try:
                self.recv_block(i, copy=False)
            except EnvProcessLostError:
                raise
            except EnvProcessError:
                pass

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute ``attr_name`` of each env ``indices`` (default: all), from its helper."""
        return self._per_env("get_attr", indices, attr_name)

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set attribute ``attr_name`` to ``value`` on each env ``indices`` (default: all)."""
        self._per_env("set_attr", indices, attr_name, value)

    def env_method(
        self, method_name: str, *method_args: Any, indices: VecEnvIndices = None, **kwargs: Any
    ) -> list[Any]:
        """The results of ``method_name(*method_args, **kwargs)`` on each env ``indices``
        (default: all), called in its helper."""
        return self._per_env("env_method", indices, method_name, method_args, kwargs)

    def env_is_wrapped(
        self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None
    ) -> list[bool]:
        """Whether each env ``indices`` (default: all) is wrapped in ``wrapper_class``."""
        return self._per_env("env_is_wrapped", indices, wrapper_class)

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Every env's ``render()`` (an RGB frame or None), in env order."""
        return self.env_method("render")

    # -- snapshots (envs.env_state.RemoteEnvs) -----------------------------------------------

    def get_env_state(self) -> dict[str, Any] | None:
        """Each helper's :func:`envs.env_state.vec_env_state`, and the reset infos here."""
        blocks = self._all(("get_state",) for _ in self.blocks)
        if any(b is None for b in blocks):
            return None
        return {"blocks": blocks, "reset_infos": [dict(i) for i in self.reset_infos]}

    def set_env_state(self, state: dict[str, Any]) -> None:
        """Put the helpers' envs back into ``state`` from :meth:`get_env_state`.

        Raises:
            ValueError: the state's blocks are not this VecEnv's (nothing changed then).
        """
        sizes = [len(b["envs"]) for b in state["blocks"]]
        if sizes != [len(b) for b in self.blocks]:
            raise ValueError(
                f"the state has env blocks of {sizes}, this VecEnv's are "
                f"{[len(b) for b in self.blocks]}"
            )
        self._all(("set_state", b) for b in state["blocks"])
        self.reset_infos = [dict(i) for i in state["reset_infos"]]

    def close(self) -> None:
        """End the helpers (killed if they do not end within ``CLOSE_TIMEOUT_S``); safe to
        call twice."""
        if self.closed:
            return
        self.closed = True
        for conn in self.conns:
            try:
                conn.send(("close",))
            except OSError:
                pass
        deadline = time.monotonic() + CLOSE_TIMEOUT_S
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for conn in self.conns:
            conn.close()
        self._obs = np.empty((0,))  # the mapping can close only with no array over it
        try:
            self._memory.close()
        except BufferError:  # a caller still holds a view: the mapping goes with it
            pass

    def pids(self) -> list[int]:
        """The helpers' process ids."""
        return [p.pid for p in self.procs]

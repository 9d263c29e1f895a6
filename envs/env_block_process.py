"""A helper process of :class:`envs.process_blocks.ProcessBlocksVecEnv`: steps one block of envs.

    python -m envs.env_block_process SOCKET_FD MEMORY_FD PARENT_PID

The parent sends ``(spec, seed, ranks, offset, n_envs, obs_shape, obs_dtype)`` first; this
process builds env ``r`` for each ``r`` in ``ranks`` as :func:`envs.make_env` does, writes its
observations into rows ``offset ..`` of the shared ``(n_envs, *obs_shape)`` array, and answers
every command with ``(True, value)``, or ``(False, "Type: message")`` when its envs raised.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import signal
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """Linux: get SIGKILL when the parent ends (a killed Ray worker leaves no stepping envs).
    The kernel sends it when the parent's thread that started this process ends, so the
    parent asks for it only from its main thread; elsewhere the socket's end of file ends
    this process (after the step it is in)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the parent ended before the request
        os._exit(1)


def serve(conn: Connection, memory_fd: int) -> None:
    """Build the envs, then answer commands until ``close`` or the parent's end."""
    from envs.env_state import set_vec_env_state, vec_env_state
    from envs.factory import make_env
    from envs.shallow_dummy_vec_env import ShallowDummyVecEnv

    spec, seed, ranks, offset, n_envs, shape, dtype = conn.recv()
    count = n_envs * int(np.prod(shape))
    memory = mmap.mmap(memory_fd, count * np.dtype(dtype).itemsize)
    rows = np.frombuffer(memory, dtype, count=count).reshape(n_envs, *shape)
    mine = rows[offset : offset + len(ranks)]
    try:
        venv = ShallowDummyVecEnv([make_env(spec, seed, r) for r in ranks])
    except Exception as exc:
        conn.send((False, f"{type(exc).__name__}: {exc}"))
        return
    conn.send((True, None))

    def answer(command: str, *args: Any) -> Any:
        if command == "step":
            obs, rews, dones, infos = venv.step(args[0])
            mine[:] = obs
            resets = {k: venv.reset_infos[k] for k in np.flatnonzero(dones).tolist()}
            return rews, dones, infos, resets
        if command == "reset":
            venv._seeds, venv._options = list(args[0]), [dict(o) for o in args[1]]
            mine[:] = venv.reset()
            return [dict(i) for i in venv.reset_infos]
        if command == "get_attr":
            return venv.get_attr(args[1], args[0])
        if command == "set_attr":
            venv.set_attr(args[1], args[2], args[0])
            return [None] * len(args[0])
        if command == "env_method":
            return venv.env_method(args[1], *args[2], indices=args[0], **args[3])
        if command == "env_is_wrapped":
            return venv.env_is_wrapped(args[1], args[0])
        if command == "get_state":
            return vec_env_state(venv)
        if command == "set_state":
            set_vec_env_state(venv, args[0])
            return None
        raise ValueError(f"unknown command {command!r}")

    while True:
        try:
            command, *args = conn.recv()
        except (EOFError, OSError):
            break
        if command == "close":
            break
        try:
            reply = (True, answer(command, *args))
        except Exception as exc:
            last = traceback.extract_tb(exc.__traceback__)[-1]
            reply = (False, f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})")
        conn.send(reply)
    venv.close()


def main(argv: list[str]) -> None:
    """``argv``: the socket's and the memory's descriptors, and the parent's pid when this
    process should die with it (0: not)."""
    if int(argv[2]):
        _die_with_parent(int(argv[2]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent closes the envs on Ctrl-C
    conn = Connection(int(argv[0]))
    try:
        serve(conn, int(argv[1]))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass  # the parent ended first


if __name__ == "__main__":
    main(sys.argv[1:])

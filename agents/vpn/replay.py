"""Replay of short option sequences from ``N`` parallel envs, on top of ``rlkit.core.ReplayBuffer``.

Each vector step adds one row of ``N`` transitions, so env ``e``'s transition at row ``t``
sits at index ``t * N + e`` and its successor ``N`` further on. A sampled sequence starts
at a random stored transition and follows its env for up to ``length`` options, stopping
after an episode end or at the newest row.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from rlkit.core.buffers import ReplayBuffer


class SequenceBatch(NamedTuple):
    """``B`` sequences of up to ``L`` options; entries past a sequence's end are padding.

    Attributes:
        obs: ``(B, L, *obs_shape)`` observation at each option's start.
        acts: ``(B, L)`` options taken (int64).
        rews: ``(B, L)`` option rewards.
        durations: ``(B, L)`` option durations in primitive steps.
        terminated: ``(B, L)`` the option ended the episode in a terminal state.
        mask: ``(B, L)`` real (True) or padding (False) entries; each row is a prefix.
        last_next_obs: ``(B, *obs_shape)`` observation after each sequence's last option.
        last_terminated: ``(B,)`` whether that last option reached a terminal state.
    """

    obs: np.ndarray
    acts: np.ndarray
    rews: np.ndarray
    durations: np.ndarray
    terminated: np.ndarray
    mask: np.ndarray
    last_next_obs: np.ndarray
    last_terminated: np.ndarray


class SequenceReplay:
    """A ring of rows of ``n_envs`` transitions with extras ``duration`` and ``done``.

    Args:
        capacity: transitions kept (rounded down to whole rows).
        n_envs: parallel envs per row.
        obs_shape, obs_dtype: one observation.
    """

    def __init__(
        self, capacity: int, n_envs: int, obs_shape: tuple[int, ...], obs_dtype: np.dtype | type
    ) -> None:
        self.n_envs = n_envs
        self.rows = max(2, capacity // n_envs)
        self.buffer = ReplayBuffer(
            self.rows * n_envs,
            obs_shape,
            obs_dtype=obs_dtype,
            extras={"duration": ((), np.float32), "done": ((), bool)},
        )

    def __len__(self) -> int:
        return len(self.buffer)

    def add(
        self,
        obs: np.ndarray,
        acts: np.ndarray,
        rews: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        durations: np.ndarray,
        dones: np.ndarray,
    ) -> None:
        """One vector step: every argument has leading dimension ``n_envs``. ``dones`` marks
        episode ends (terminated or truncated); ``next_obs`` is the true last observation there."""
        self.buffer.add(obs, acts, rews, next_obs, terminated, duration=durations, done=dones)

    def sample(self, batch: int, length: int, rng: np.random.Generator) -> SequenceBatch:
        """``batch`` sequences of at most ``length`` options, starting uniformly at stored transitions."""
        buf, n = self.buffer, self.n_envs
        stored_rows = buf.size // n
        if stored_rows == 0:
            raise ValueError("cannot sample from an empty replay")
        oldest = (buf.pos // n) % self.rows if buf.size == buf.capacity else 0
        start = rng.integers(0, stored_rows, size=batch)  # rows in time order, 0 = oldest
        env = rng.integers(0, n, size=batch)
        offsets = np.arange(length)
        rows_t = start[:, None] + offsets[None, :]  # (B, L) time-ordered rows
        in_range = rows_t < stored_rows
        idx = ((oldest + np.minimum(rows_t, stored_rows - 1)) % self.rows) * n + env[:, None]
        done = buf.extras["done"][idx] & in_range
        # An entry is real if it is stored and no earlier entry of the row ended an episode.
        ended_before = np.concatenate(
            [np.zeros((batch, 1), bool), np.cumsum(done, axis=1)[:, :-1] > 0], axis=1
        )
        mask = in_range & ~ended_before
        last = mask.sum(axis=1) - 1
        last_idx = idx[np.arange(batch), last]
        return SequenceBatch(
            obs=buf.obs[idx],
            acts=buf.acts[idx],
            rews=np.where(mask, buf.rews[idx], 0.0).astype(np.float32),
            durations=np.where(mask, buf.extras["duration"][idx], 1.0).astype(np.float32),
            terminated=buf.terminated[idx] & mask,
            mask=mask,
            last_next_obs=buf.next_obs[last_idx],
            last_terminated=buf.terminated[last_idx],
        )

    def state_dict(self) -> dict:
        """The underlying buffer's state, for a checkpoint."""
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore the underlying buffer from :meth:`state_dict`'s dict."""
        self.buffer.load_state_dict(state)

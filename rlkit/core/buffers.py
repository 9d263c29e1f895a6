"""Buffers: a pool of recent segments (for queries) and a transition replay buffer."""

from __future__ import annotations

from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from rlkit.core.types import Segment


class SegmentPool:
    """The ``capacity`` most recent segments, with ids assigned in arrival order.

    Query selection draws candidate pairs from here; only segments that end up in a
    query are persisted (and rendered), the rest are forgotten as new ones arrive.
    """

    def __init__(self, capacity: int, first_id: int = 0) -> None:
        if capacity < 2:
            raise ValueError(f"a segment pool needs capacity >= 2, got {capacity}")
        self.capacity = capacity
        self.next_id = first_id
        self._segments: OrderedDict[int, Segment] = OrderedDict()

    def __len__(self) -> int:
        return len(self._segments)

    def __contains__(self, segment_id: int) -> bool:
        return segment_id in self._segments

    def __getitem__(self, segment_id: int) -> Segment:
        return self._segments[segment_id]

    def add(self, segment: Segment) -> Segment:
        """Store ``segment`` under a fresh id (evicting the oldest when full); return it with its id.

        Raises:
            ValueError: its observations or actions are shaped unlike the pool's segments
                (another length or env): pairs are scored and trained on stacked together.
        """
        self._check_layout(segment)
        segment = segment.with_id(self.next_id)
        self.next_id += 1
        self._segments[segment.id] = segment
        while len(self._segments) > self.capacity:
            self._segments.popitem(last=False)
        return segment

    def _check_layout(self, segment: Segment) -> None:
        """Refuse ``segment`` if its obs/acts shapes differ from the pool's (its newest)."""
        if not self._segments:
            return
        held = next(reversed(self._segments.values()))
        if segment.obs.shape != held.obs.shape or segment.acts.shape != held.acts.shape:
            raise ValueError(
                f"segment of obs {segment.obs.shape} and acts {segment.acts.shape} does not"
                f" fit a pool of obs {held.obs.shape} and acts {held.acts.shape}: every"
                " segment of a pool must have the same length and spaces"
            )

    def ids(self) -> np.ndarray:
        """The ids of the segments held, oldest first: ``(len(self),)`` int64."""
        return np.fromiter(self._segments.keys(), dtype=np.int64, count=len(self._segments))

    def state_dict(self) -> dict:
        """The segments held, oldest first, and the next id (for a checkpoint)."""
        return {"segments": list(self._segments.values()), "next_id": self.next_id}

    def load_state_dict(self, state: dict) -> None:
        """Hold ``state``'s segments instead of the current ones (its newest ``capacity``,
        where it held more); ids go on from its next id or from the current one, whichever
        is later."""
        newest = list(state["segments"])[-self.capacity :]
        self._segments = OrderedDict((int(s.id), s) for s in newest)
        self.next_id = max(self.next_id, int(state["next_id"]))

    def sample_pairs(self, n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
        """``n`` random pairs of distinct segment ids (pairs may repeat when the pool is small)."""
        if len(self) < 2:
            raise ValueError("need at least two segments in the pool to sample pairs")
        ids = self.ids()
        a = rng.integers(0, len(ids), size=n)
        # Draw b from the other len-1 ids so that a != b without rejection.
        b = (a + rng.integers(1, len(ids), size=n)) % len(ids)
        return [(int(ids[i]), int(ids[j])) for i, j in zip(a, b, strict=True)]


class ReplayBatch(NamedTuple):
    """A batch of transitions, each array with leading dimension ``batch_size``."""

    obs: np.ndarray
    acts: np.ndarray
    rews: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray
    extras: dict[str, np.ndarray]


class ReplayBuffer:
    """A ring buffer of transitions stored as preallocated NumPy arrays.

    Args:
        capacity: number of transitions kept; the oldest are overwritten.
        obs_shape: shape of one observation.
        act_shape: shape of one action (``()`` for discrete actions).
        obs_dtype, act_dtype: storage dtypes (``uint8`` keeps Atari frames small).
        extras: further per-transition fields, name -> (shape, dtype), e.g. an option's duration.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        act_shape: tuple[int, ...] = (),
        obs_dtype: np.dtype | type = np.float32,
        act_dtype: np.dtype | type = np.int64,
        extras: dict[str, tuple[tuple[int, ...], np.dtype | type]] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = np.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.acts = np.zeros((capacity, *act_shape), dtype=act_dtype)
        self.rews = np.zeros((capacity,), dtype=np.float32)
        self.terminated = np.zeros((capacity,), dtype=bool)
        self.extras = {
            name: np.zeros((capacity, *shape), dtype=dtype)
            for name, (shape, dtype) in (extras or {}).items()
        }
        self.pos = 0
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        acts: np.ndarray,
        rews: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        **extras: np.ndarray,
    ) -> None:
        """Add a batch of ``n`` transitions (leading dimension ``n``, e.g. one per env)."""
        n = len(rews)
        if set(extras) != set(self.extras):
            raise ValueError(f"extras must be exactly {sorted(self.extras)}, got {sorted(extras)}")
        idx = (self.pos + np.arange(n)) % self.capacity
        self.obs[idx] = obs
        self.acts[idx] = acts
        self.rews[idx] = rews
        self.next_obs[idx] = next_obs
        self.terminated[idx] = terminated
        for name, value in extras.items():
            self.extras[name][idx] = value
        self.pos = int((self.pos + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplayBatch:
        """A uniform sample of ``batch_size`` stored transitions (with replacement)."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self.size, size=batch_size)
        return ReplayBatch(
            obs=self.obs[idx],
            acts=self.acts[idx],
            rews=self.rews[idx],
            next_obs=self.next_obs[idx],
            terminated=self.terminated[idx],
            extras={name: value[idx] for name, value in self.extras.items()},
        )

    def state_dict(self) -> dict:
        """The stored transitions (the first ``size`` rows of each array), write position and
        size, for a checkpoint."""
        return {
            "obs": self.obs[: self.size], "next_obs": self.next_obs[: self.size],
            "acts": self.acts[: self.size], "rews": self.rews[: self.size],
            "terminated": self.terminated[: self.size], "pos": self.pos, "size": self.size,
            "extras": {k: v[: self.size] for k, v in self.extras.items()},
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict` into this buffer's arrays (its capacity must be at
        least the saved size)."""
        size = int(state["size"])
        for name in ("obs", "next_obs", "acts", "rews", "terminated"):
            getattr(self, name)[:size] = state[name]
        for name, value in state["extras"].items():
            self.extras[name][:size] = value
        self.pos, self.size = int(state["pos"]), size

"""Seeding: one seed in, every source of randomness fixed, a Generator out."""

import random

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy's legacy global state and torch; return a fresh ``np.random.Generator``.

    rlkit code never draws from global state itself: it takes the returned generator
    (or one spawned from it) as an explicit ``rng`` argument. The global seeds are for
    libraries that do (SB3, Gymnasium's action-space sampling).
    """
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def rng_state(rng: np.random.Generator) -> dict:
    """The generator's state as a picklable dict (for checkpoints)."""
    return rng.bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    """Rebuild a generator from :func:`rng_state`'s output."""
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    return rng

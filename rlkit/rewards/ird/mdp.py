"""What IRD's planners need from an environment: a deterministic, finite-horizon tabular MDP.

:class:`envs.lavaland.GridMDP` is one; any object with these attributes works.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np


class TabularMDP(Protocol):
    """A deterministic finite-horizon MDP with linear state features.

    Attributes:
        next_state: successor state per (state, action), shape ``(S, A)``, int.
        features: features of each state, earned on entering it, shape ``(S, d)``.
        start: the start state's index.
        horizon: number of steps ``T``; feature counts sum the features of the ``T`` states
            entered, so for one-hot features they sum to ``T``.
    """

    next_state: np.ndarray
    features: np.ndarray
    start: int
    horizon: int

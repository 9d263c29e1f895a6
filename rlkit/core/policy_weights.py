"""A policy's weights in the form they cross process boundaries (Ray's object store)."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping

import numpy as np
import torch as th


@dataclasses.dataclass(frozen=True)
class PolicyWeights:
    """A policy's ``state_dict`` as numpy arrays, each tensor once: SB3's actor-critic
    policies list a shared features extractor three times (``features_extractor``,
    ``pi_features_extractor``, ``vf_features_extractor``), 20 MB instead of 6.7 for A2C's
    Atari CNN. Numpy arrays also cross Ray's object store without a copy, tensors do not.

    Attributes:
        arrays: the distinct tensors' data, by the first key that names each.
        aliases: every other key, mapped to the key in ``arrays`` holding its data.
    """

    arrays: dict[str, np.ndarray]
    aliases: dict[str, str]

    @classmethod
    def of(cls, state_dict: Mapping[str, th.Tensor]) -> PolicyWeights:
        """The distinct tensors of ``state_dict`` copied to numpy; keys whose tensor shares
        another's storage, shape and strides become aliases of it."""
        arrays: dict[str, np.ndarray] = {}
        aliases: dict[str, str] = {}
        seen: dict[tuple, str] = {}
        for key, tensor in state_dict.items():
            view = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())
            if view in seen:
                aliases[key] = seen[view]
            else:
                seen[view] = key
                arrays[key] = tensor.detach().cpu().numpy()
        return cls(arrays, aliases)

    def state_dict(self) -> dict[str, th.Tensor]:
        """Tensors over the arrays (read-only when they came through Ray's object store,
        which is fine for ``load_state_dict``: it copies)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensors = {key: th.from_numpy(array) for key, array in self.arrays.items()}
        return {**tensors, **{key: tensors[first] for key, first in self.aliases.items()}}

    @classmethod
    def wrap(cls, weights: Mapping | PolicyWeights) -> Mapping | PolicyWeights:
        """``weights`` as :class:`PolicyWeights` when it is a ``state_dict`` of tensors;
        anything else (already wrapped, or other values) as it is."""
        if isinstance(weights, PolicyWeights) or not all(
            isinstance(v, th.Tensor) for v in weights.values()
        ):
            return weights
        return cls.of(weights)

    @staticmethod
    def unwrap(weights: Mapping | PolicyWeights) -> Mapping:
        """The ``state_dict`` for a ``load_state_dict``."""
        return weights.state_dict() if isinstance(weights, PolicyWeights) else weights

"""One registry of representation backbones: ``make_backbone(name, observation_space, **kwargs)``.

A backbone maps a batch of observations ``(B, *obs_shape)`` to features ``(B, out_dim)``;
every backbone module has an integer attribute ``out_dim``. Reward models, policies
(through the SB3 adapter) and the VPN encoder pick theirs by name.
"""

from __future__ import annotations

from collections.abc import Callable
from difflib import get_close_matches

import gymnasium as gym
from torch import nn

BackboneFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register ``factory(observation_space, **kwargs) -> nn.Module`` under ``name``."""

    def deco(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return deco


def backbone_names() -> list[str]:
    """The registered backbone names, sorted."""
    return sorted(_REGISTRY)


class UnknownBackboneError(KeyError):
    """No backbone is registered under that name. A KeyError whose ``str`` is its message
    (a plain KeyError's is the message's repr, in quotes)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def make_backbone(name: str, observation_space: gym.spaces.Space, **kwargs) -> nn.Module:
    """Build the backbone registered as ``name`` for ``observation_space``.

    Raises:
        UnknownBackboneError: (a KeyError) unknown name; the message lists close matches and
            every name.
    """
    if name not in _REGISTRY:
        close = get_close_matches(name, _REGISTRY, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; {hint}known: {', '.join(backbone_names())}"
        )
    module = _REGISTRY[name](observation_space, **kwargs)
    if not isinstance(getattr(module, "out_dim", None), int):
        raise TypeError(f"backbone {name!r} must set an integer out_dim")
    return module

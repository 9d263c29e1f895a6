"""Any rlkit backbone as a Stable-Baselines3 features extractor.

    from agents.features import backbone_policy_kwargs
    PPO("CnnPolicy", env, policy_kwargs=backbone_policy_kwargs("revnet", n_blocks=8))

Image backbones scale uint8 pixels themselves (``scale=1/255``), so the policy kwargs turn off
SB3's own image normalization (``normalize_images=False``); otherwise pixels would be divided
by 255 twice. SB3 optimizes only its own loss: a ``vq`` backbone's auxiliary loss is not added,
so use it with ``ema=True`` (the codebook then learns from its moving averages).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import torch
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

from rlkit.nn import backbone_names, make_backbone


class BackboneExtractor(BaseFeaturesExtractor):
    """``make_backbone(backbone, observation_space, **backbone_kwargs)`` as an SB3 extractor.

    Input ``(B, *obs_shape)`` observations as SB3 preprocessed them (float; images unscaled when
    the policy has ``normalize_images=False``), output ``(B, features_dim)`` with
    ``features_dim`` the backbone's ``out_dim``.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        backbone: str = "mlp",
        backbone_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(observation_space, gym.spaces.Dict):
            raise ValueError("rlkit backbones take Box observations, not a Dict space")
        net = make_backbone(backbone, observation_space, **(backbone_kwargs or {}))
        super().__init__(observation_space, features_dim=net.out_dim)
        self.backbone = net

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """Features ``(B, features_dim)`` of observations ``(B, *obs_shape)``."""
        return self.backbone(observations)


def backbone_policy_kwargs(name: str, **kwargs: Any) -> dict[str, Any]:
    """``policy_kwargs`` for any SB3 algorithm that make its policy use backbone ``name``
    (built with ``kwargs``) as features extractor; add ``net_arch`` etc. to the dict as usual.

    Raises:
        KeyError: unknown backbone name (raised now rather than when the policy is built).
    """
    if name not in backbone_names():
        make_backbone(name, gym.spaces.Box(0, 1, (1,)))  # raises the registry's helpful KeyError
    return {
        "features_extractor_class": BackboneExtractor,
        "features_extractor_kwargs": {"backbone": name, "backbone_kwargs": dict(kwargs)},
        "normalize_images": False,
    }

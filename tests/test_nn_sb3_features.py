"""The SB3 adapter: every backbone as a features extractor through ``policy_kwargs``."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import A2C, PPO

from agents.features import BackboneExtractor, backbone_policy_kwargs


class TinyImageEnv(gym.Env):
    """Channels-last uint8 frames, like SB3's Atari stack, 5 steps long."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), dtype=np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def _frame(self) -> np.ndarray:
        return self.np_random.integers(0, 256, (36, 36, 3), dtype=np.uint8)

    def step(self, action):
        self.t += 1
        return self._frame(), float(action), self.t >= 5, False, {}


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("selu_mlp", {"hidden": (16,)}),
        ("revnet", {"width": 16, "n_blocks": 2}),
        ("vq", {"ema": True, "encoder_kwargs": {"hidden": (16,)}}),
    ],  # fmt: skip
)
def test_vector_backbones_train_in_ppo(name: str, kwargs: dict):
    env = gym.make("CartPole-v1")
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=16, n_epochs=1, seed=0,
                policy_kwargs=backbone_policy_kwargs(name, **kwargs))  # fmt: skip
    extractor = model.policy.features_extractor
    assert isinstance(extractor, BackboneExtractor)
    before = _params(extractor.backbone)
    model.learn(64)
    assert not torch.allclose(before, _params(extractor.backbone))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("revnet", {"channels": 8, "n_blocks": 2, "features_dim": 16}),
        ("relation", {"conv_layers": 3, "channels": 8}),
        ("nature_cnn", {"features_dim": 16, "norm": "batch_renorm"}),
    ],  # fmt: skip
)
def test_image_backbones_see_unscaled_channels_first_pixels(name: str, kwargs: dict):
    model = A2C("CnnPolicy", TinyImageEnv(), n_steps=5, seed=0,
                policy_kwargs=backbone_policy_kwargs(name, **kwargs))  # fmt: skip
    seen: list[torch.Tensor] = []
    extractor = model.policy.features_extractor
    extractor.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
    first_conv = next(m for m in extractor.modules() if isinstance(m, torch.nn.Conv2d))
    convolved: list[torch.Tensor] = []
    first_conv.register_forward_pre_hook(lambda mod, args: convolved.append(args[0].detach()))
    model.learn(10)
    assert model.policy.observation_space.shape == (3, 36, 36)  # SB3 transposed the frames
    assert seen and all(obs.shape[1:] == (3, 36, 36) for obs in seen)
    assert max(obs.max().item() for obs in seen) > 2.0  # the backbone scales, SB3 does not
    # ...to [0, 1] before its first convolution: pixels / 255
    assert len(convolved) == len(seen)
    for obs, x in zip(seen, convolved, strict=True):
        torch.testing.assert_close(x, obs / 255.0)


def test_unknown_backbone_and_dict_spaces_fail_early():
    with pytest.raises(KeyError, match="did you mean revnet") as info:
        backbone_policy_kwargs("revnt")
    assert str(info.value).startswith("unknown backbone 'revnt'; did you mean revnet")  # no quotes
    with pytest.raises(ValueError, match="Dict"):
        BackboneExtractor(gym.spaces.Dict({"a": gym.spaces.Box(0, 1, (2,))}))

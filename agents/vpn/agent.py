"""The VPN agent: acting by planning, and the n-step Q-learning plus k-step prediction loss.

Training follows the paper (section 3.3). For a sequence of options ``o_0 .. o_{L-1}``
with rewards ``r_j`` and durations ``tau_j``, the n-step returns are

    R_L = 0 if the last option ended the episode, else max_o Q_target(s_L, o)   (planning value)
    R_j = r_j + gamma^{tau_j} R_{j+1}

and from each ``s_j`` the model is unrolled along the options actually taken for up to
``k`` steps; the ``l``-th prediction is trained towards the option's reward ``r_{j+l-1}``,
its duration ``tau_{j+l-1}`` (this is what the discount ``gamma^t`` is learned from) and the
return ``R_{j+l}`` of the state it reached. All three use the Huber loss.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F

from agents.vpn.modules import VPNetwork
from agents.vpn.planner import Plan, plan
from agents.vpn.replay import SequenceBatch


def n_step_returns(
    rews: torch.Tensor, discounts: torch.Tensor, mask: torch.Tensor, bootstrap: torch.Tensor
) -> torch.Tensor:
    """Returns ``R`` of shape ``(B, L + 1)`` with ``R[:, j]`` the return from step ``j``.

    ``rews, discounts, mask``: ``(B, L)`` (each mask row a prefix); ``bootstrap (B,)`` is the
    value after each sequence's last real step (0 for a terminal one). Entries past a
    sequence's end equal its bootstrap, so ``R[:, j + 1]`` is always the right target for
    the state reached by option ``j``.
    """
    b, length = rews.shape
    out = torch.empty(b, length + 1, dtype=rews.dtype, device=rews.device)
    out[:, length] = bootstrap
    for j in range(length - 1, -1, -1):
        step = rews[:, j] + discounts[:, j] * out[:, j + 1]
        out[:, j] = torch.where(mask[:, j], step, bootstrap)
    return out


class VPNAgent:
    """A VPN with its target network, optimizer and planning configuration.

    Args:
        observation_space, num_options: the env's spaces (actions are options).
        branching: planning branching per depth, e.g. ``(4, 4, 4, 1, 1)``.
        gamma: per-primitive-step discount.
        channels, hidden, backbone: network size (see :class:`VPNetwork`).
        lr: Adam learning rate.
        prediction_steps: ``k`` of the prediction loss.
        max_grad_norm: gradient norm clip.
        device: torch device.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        num_options: int,
        branching: Sequence[int],
        gamma: float,
        channels: int = 16,
        hidden: int = 64,
        backbone: str = "auto",
        lr: float = 5e-4,
        prediction_steps: int = 3,
        max_grad_norm: float = 10.0,
        device: str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.branching = tuple(branching)
        self.gamma = gamma
        self.prediction_steps = prediction_steps
        self.max_grad_norm = max_grad_norm
        self.net = VPNetwork(observation_space, num_options, gamma, channels, hidden, backbone).to(
            self.device
        )
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.num_options = num_options

    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(obs, device=self.device)

    @torch.no_grad()
    def plan(self, obs: np.ndarray, target: bool = False) -> Plan:
        """Plan from observations ``(N, *obs_shape)`` with the online (or target) network."""
        net = self.target if target else self.net
        return plan(net, net.encode(self._obs(obs)), self.branching)

    def act(self, obs: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
        """Epsilon-greedy options ``(N,)`` int64; only the greedy envs pay for planning."""
        n = len(obs)
        options = rng.integers(0, self.num_options, size=n)
        greedy = rng.random(n) >= epsilon
        if greedy.any():
            options[greedy] = self.plan(obs[greedy]).option.cpu().numpy()
        return options.astype(np.int64)

    def losses(self, batch: SequenceBatch) -> dict[str, torch.Tensor]:
        """The VPN loss terms on a batch of sequences (each a mean over its valid predictions)."""
        b, length = batch.acts.shape
        mask = self._obs(batch.mask)
        rews, durs = self._obs(batch.rews), self._obs(batch.durations)
        acts = self._obs(batch.acts).long()
        with torch.no_grad():
            boot = self.plan(batch.last_next_obs, target=True).value
            boot = torch.where(self._obs(batch.last_terminated), torch.zeros_like(boot), boot)
            returns = n_step_returns(rews, torch.pow(self.gamma, durs), mask, boot)
        state = self.net.encode(self._obs(batch.obs).flatten(0, 1))  # (B*L, C, H, W)
        j = torch.arange(length, device=self.device)
        # The value of each encoded (not predicted) state is trained towards its return as
        # well, grounding the value head on real states (an addition to the paper's loss).
        flat_mask = mask.flatten().float()
        value0 = F.huber_loss(
            self.net.value(state), returns[:, :length].flatten(), reduction="none"
        )
        terms = {"reward": [], "duration": [], "value": []}
        weights = []
        for step in range(self.prediction_steps):
            t = (j + step).clamp(max=length - 1)  # the option applied at this unroll step
            valid = (mask[:, t] & (j + step < length)).flatten()  # (B*L,)
            if not valid.any():
                break
            pred = self.net.step(state, acts[:, t].flatten())
            terms["reward"].append(
                F.huber_loss(pred.reward, rews[:, t].flatten(), reduction="none")
            )
            terms["duration"].append(
                F.huber_loss(pred.duration, durs[:, t].flatten(), reduction="none")
            )
            terms["value"].append(
                F.huber_loss(pred.value, returns[:, t + 1].flatten(), reduction="none")
            )
            weights.append(valid.float())
            state = pred.next_state
        w = torch.stack(weights)
        denom = w.sum().clamp(min=1.0)
        out = {name: (torch.stack(vals) * w).sum() / denom for name, vals in terms.items()}
        out["value0"] = (value0 * flat_mask).sum() / flat_mask.sum().clamp(min=1.0)
        out["total"] = out["reward"] + out["duration"] + out["value"] + out["value0"]
        return out

    def update(self, batch: SequenceBatch) -> dict[str, float]:
        """One Adam step on ``batch``; returns the loss terms as floats."""
        losses = self.losses(batch)
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
        self.optimizer.step()
        out = {f"losses/{k}": float(v.detach()) for k, v in losses.items()}
        out["losses/grad_norm"] = float(grad_norm)
        return out

    def sync_target(self) -> None:
        """Copy the network's weights into the target network."""
        self.target.load_state_dict(self.net.state_dict())

    def state_dict(self) -> dict:
        """The network's, target network's and optimizer's state, for a checkpoint."""
        return {
            "net": self.net.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore the network, target network and optimizer from :meth:`state_dict`'s dict."""
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.optimizer.load_state_dict(state["optimizer"])

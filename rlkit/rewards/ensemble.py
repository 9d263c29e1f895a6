"""An ensemble of reward predictors r(o, a), all members computed in one batched forward pass.

Each member is ``head(concat(backbone(o), enc(a)))``. The K members share one module
structure; their parameters are stacked along a leading member dimension, so K members
cost one pass of batched kernels rather than a Python loop over modules: for MLP and Nature
CNN members one ``bmm`` per Linear and one grouped convolution per conv layer
(:mod:`rlkit.rewards.stacked`), for any other backbone ``torch.func.vmap`` over
``functional_call``.

Train or eval behaviour (dropout, batch statistics) follows the ensemble's ``training`` flag,
or the ``train`` argument where given: the policy's reward, output normalization and query
selection always evaluate in eval mode without touching the flag, so they can run while a
background thread trains the same ensemble.

The reward handed to the policy is each member's output normalized on its own (zero mean,
unit std over recent data, Christiano et al. 2017, sec. 2.2.1), then averaged, and the
average divided by its own std over the same data: the paper normalizes r-hat itself to a
constant std (appendix A), and an average of K unit-std members has std
sqrt(mean correlation) < 1 (~0.9 trained, ~0.77 untrained with K = 3).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from rlkit.nn import make_backbone
from rlkit.nn.basic import MLP
from rlkit.rewards.stacked import affine, stackable, stacked_features, stacked_layers

PASS_ROWS = 4096
"""Rows (steps) per member that one training pass of stacked MLP members aims at: see
:meth:`RewardEnsemble.pairs_per_pass`."""


def normalizable(observation_space: gym.spaces.Space) -> bool:
    """Whether the ensemble can standardize these observations (``normalize_inputs``): vector
    (float Box) observations, not pixels."""
    return isinstance(observation_space, gym.spaces.Box) and np.issubdtype(
        observation_space.dtype, np.floating
    )


def action_dim(action_space: gym.spaces.Space) -> int:
    """Width of the action encoding: one-hot for Discrete, flattened for Box."""
    if isinstance(action_space, gym.spaces.Discrete):
        return int(action_space.n)
    if isinstance(action_space, gym.spaces.Box):
        return int(np.prod(action_space.shape))
    raise TypeError(f"unsupported action space {action_space}")


def _shape(dims: str, shape: tuple[int, ...]) -> str:
    """``"(B, 11)"`` from leading dims ``"B"`` and a trailing shape ``(11,)``."""
    parts = [dims, *map(str, shape)]
    return f"({', '.join(parts)}{',' if len(parts) == 1 and ',' not in dims else ''})"


class RewardNet(nn.Module):
    """One member: ``(B, *obs_shape), (B, *act_shape) -> (B,)`` rewards."""

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        backbone: str = "mlp",
        backbone_kwargs: dict | None = None,
        head_hidden: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.act_dim = action_dim(action_space)
        self.backbone = make_backbone(backbone, observation_space, **(backbone_kwargs or {}))
        layers: list[nn.Module] = [
            nn.Linear(self.backbone.out_dim + self.act_dim, head_hidden),
            nn.LeakyReLU(),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(head_hidden, 1))
        self.head = nn.Sequential(*layers)

    def encode_actions(self, acts: torch.Tensor) -> torch.Tensor:
        """Actions ``(B, *act_shape)`` -> ``(B, act_dim)`` float: one-hot for Discrete (integer
        ``(B,)`` or ``(B, 1)``), flattened for Box."""
        if self.discrete:
            return nn.functional.one_hot(acts.long().reshape(-1), self.act_dim).float()
        return acts.float().reshape(acts.shape[0], -1)

    def forward(self, obs: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """Rewards ``(B, *obs_shape), (B, *act_shape) -> (B,)``."""
        feats = self.backbone(obs)
        return self.head(torch.cat([feats, self.encode_actions(acts)], dim=-1)).squeeze(-1)


class RewardEnsemble(nn.Module):
    """K reward members with stacked parameters and per-member output normalization.

    Args:
        observation_space, action_space: the env's spaces.
        n_members: K.
        backbone: name in the :mod:`rlkit.nn` registry (``mlp``, ``nature_cnn``, ...).
        backbone_kwargs: passed to the backbone factory.
        head_hidden: width of the head's hidden layer.
        dropout: dropout probability in the head (drawn independently per member).
        seed: initialization seed (members are initialized independently).
        normalize_inputs: standardize vector observations, per dimension, with a mean and
            std shared by the members (buffers ``in_mean``, ``in_std`` of ``obs_shape``), set by
            :meth:`set_input_normalization` (the trainer does so from its labelled segments
            before every round); until then they are 0 and 1.
    """

    def __init__(
        self,
        observation_space: gym.spaces.Space,
        action_space: gym.spaces.Space,
        n_members: int = 3,
        backbone: str = "mlp",
        backbone_kwargs: dict | None = None,
        head_hidden: int = 64,
        dropout: float = 0.0,
        seed: int = 0,
        normalize_inputs: bool = False,
    ) -> None:
        super().__init__()
        if n_members < 1:
            raise ValueError(f"n_members must be >= 1, got {n_members}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.n_members = n_members
        # Trailing shapes of the input batches, checked at the entry points. Actions may also
        # come flattened as SB3's buffers hold them: ``(act_dim,)`` for Box, ``(1,)`` for
        # Discrete (integer actions, ``()``).
        self.obs_shape: tuple[int, ...] = tuple(observation_space.shape)
        self.act_shape: tuple[int, ...] = tuple(action_space.shape or ())
        flat = (
            (1,) if isinstance(action_space, gym.spaces.Discrete) else (action_dim(action_space),)
        )
        self._act_shapes = (self.act_shape,) if flat == self.act_shape else (self.act_shape, flat)
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        members = [
            RewardNet(
                observation_space, action_space, backbone, backbone_kwargs, head_hidden, dropout
            )
            for _ in range(n_members)
        ]
        torch.random.set_rng_state(gen_state)
        params, buffers = stack_module_state(members)
        # Templates hold the structure only (their own tensors are never used), one in each
        # mode; in a dict, so they are not submodules and ``train()`` leaves them alone.
        template = copy.deepcopy(members[0]).to("meta")
        self._templates: dict[bool, RewardNet] = {
            True: template.train(),
            False: copy.deepcopy(template).eval(),
        }
        self._names = list(params)
        self.params = nn.ParameterList([nn.Parameter(params[n]) for n in self._names])
        self._buffer_names = list(buffers)
        for i, n in enumerate(self._buffer_names):
            self.register_buffer(f"member_buffer_{i}", buffers[n])
        self._fast = stackable(template.backbone, template.head)
        self.register_buffer("out_mean", torch.zeros(n_members))
        self.register_buffer("out_std", torch.ones(n_members))
        # The std of the members' mean of normalized outputs, which reward() divides by.
        self.register_buffer("out_scale", torch.ones(()))
        self.normalize_inputs = normalize_inputs
        if normalize_inputs:
            if not normalizable(observation_space):
                raise ValueError("input normalization is for vector (float Box) observations")
            shape = observation_space.shape
            self.register_buffer("in_mean", torch.zeros(shape))
            self.register_buffer("in_std", torch.ones(shape))

    # -- input checks -------------------------------------------------------------------
    def _check_inputs(
        self, obs: torch.Tensor, acts: torch.Tensor, dims: str, k: int | None = None
    ) -> None:
        """Refuse inputs the members cannot take, with one line instead of torch internals.

        ``obs`` must be ``(*lead, *obs_shape)`` and ``acts`` ``(*lead, *act_shape)`` (or
        flattened, see ``_act_shapes``), tensors with the same leading dims ``lead`` (named by
        ``dims``, e.g. ``"N, L"``); ``k``: the first leading dim must be it (per-member
        inputs). Shape comparisons only, O(1): this runs on every env step.
        """
        for name, x in (("obs", obs), ("acts", acts)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(
                    f"{name} must be a torch.Tensor, got {type(x).__module__}."
                    f"{type(x).__qualname__} (convert with torch.as_tensor)"
                )
        lead = len(dims.split(","))
        if obs.ndim != lead + len(self.obs_shape) or obs.shape[lead:] != self.obs_shape:
            raise ValueError(f"obs must be {_shape(dims, self.obs_shape)}, got {tuple(obs.shape)}")
        if acts.ndim < lead or acts.shape[lead:] not in self._act_shapes:
            want = " or ".join(_shape(dims, shape) for shape in self._act_shapes)
            raise ValueError(f"acts must be {want}, got {tuple(acts.shape)}")
        if obs.shape[:lead] != acts.shape[:lead]:
            raise ValueError(
                f"obs and acts must share their leading dims ({dims}), got obs"
                f" {tuple(obs.shape)} and acts {tuple(acts.shape)}"
            )
        if k is not None and obs.shape[0] != k:
            raise ValueError(
                f"obs must be {_shape(dims, self.obs_shape)} with K={k} (the members), got"
                f" {tuple(obs.shape)}"
            )

    # -- input normalization -------------------------------------------------------------
    @torch.no_grad()
    def set_input_normalization(self, obs: torch.Tensor, min_std: float = 1e-2) -> None:
        """Set the inputs' mean and std from observations ``(..., *obs_shape)`` (a dimension
        that hardly varies is divided by ``min_std``, not by ~0)."""
        if not self.normalize_inputs:
            raise RuntimeError("this ensemble was built without normalize_inputs")
        lead = obs.ndim - len(self.obs_shape)
        if lead < 0 or tuple(obs.shape[lead:]) != self.obs_shape:
            shape = ", ".join(map(str, self.obs_shape))
            raise ValueError(f"obs must be (..., {shape}), got {tuple(obs.shape)}")
        flat = obs.reshape(-1, *self.in_mean.shape).float()
        if len(flat) < 2:
            raise ValueError("input normalization needs at least two observations")
        self.in_mean.copy_(flat.mean(0))
        self.in_std.copy_(flat.std(0).clamp_min(min_std))

    def _inputs(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.normalize_inputs:
            return obs
        return (obs.float() - self.in_mean) / self.in_std

    # -- batched evaluation -------------------------------------------------------------
    def _stacked(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params = dict(zip(self._names, self.params, strict=True))
        buffers = {n: getattr(self, f"member_buffer_{i}") for i, n in enumerate(self._buffer_names)}
        return params, buffers

    def _mode(self, train: bool | None) -> bool:
        return self.training if train is None else bool(train)

    def _vmapped(self, train: bool | None, in_dims: tuple) -> Callable[..., torch.Tensor]:
        """One member's forward in the given mode, vmapped over the stacked parameters."""
        template = self._templates[self._mode(train)]

        def call_one(
            params: dict[str, torch.Tensor],
            buffers: dict[str, torch.Tensor],
            obs: torch.Tensor,
            acts: torch.Tensor,
        ) -> torch.Tensor:
            return functional_call(template, (params, buffers), (self._inputs(obs), acts))

        return vmap(call_one, in_dims=in_dims, randomness="different")

    def _stacked_forward(
        self,
        obs: torch.Tensor,
        acts: torch.Tensor,
        length: int | None = None,
        train: bool | None = None,
    ) -> torch.Tensor:
        """Fast path (MLP and Nature CNN members, :mod:`rlkit.rewards.stacked`): every Linear
        is one ``bmm`` over the member dim, every convolution one grouped convolution.

        ``obs`` is ``(K, B, *obs_shape)``, ``acts`` ``(K, B, *act_shape)``; returns ``(K, B)``
        rewards, or with ``length`` the ``(K, B // length)`` sums over consecutive runs of
        ``length`` rows (segment returns). Equal to the vmap path (tested), and cheaper.
        """
        template = self._templates[True]
        train = self._mode(train)
        params = dict(zip(self._names, self.params, strict=True))
        k, b = obs.shape[:2]
        obs = self._inputs(obs)
        feats = stacked_features(template.backbone, "backbone", obs, params, train, k)
        enc = template.encode_actions(acts.reshape(k * b, *acts.shape[2:]).to("cpu"))
        enc = enc.reshape(k, b, -1).to(feats.device)
        # head.0 sees concat(feats, enc): its weight is applied in two parts instead, which
        # spares building the (K, B, width + act_dim) input and, in the backward, a matmul of
        # that odd width (~2x slower than the 64-wide one).
        w, bias = params["head.0.weight"], params["head.0.bias"]
        width = feats.shape[-1]
        x = affine(enc, w[:, :, width:], bias)
        x = x.baddbmm_(feats, w[:, :, :width].transpose(1, 2))  # nothing else reads x
        last = len(template.head) - 1  # the output Linear (width -> 1)
        x = stacked_layers(template.head, "head", x, params, train, start=1, stop=last, fresh=True)
        w, bias = params[f"head.{last}.weight"], params[f"head.{last}.bias"]
        if length is not None:
            # A segment's return sum_t (h_t w + b) is (sum_t h_t) w + L b: the output layer
            # runs once per segment instead of once per step (its (K, B, 1) matmuls and their
            # backward cost about as much as a 64-wide layer's).
            x = x.reshape(k, b // length, length, x.shape[-1]).sum(2)
            bias = bias * length
        return torch.baddbmm(bias[:, None, :], x, w.transpose(1, 2)).squeeze(-1)

    def member_rewards(
        self, obs: torch.Tensor, acts: torch.Tensor, train: bool | None = None
    ) -> torch.Tensor:
        """Raw rewards of every member on the same inputs: ``(B, ...) -> (K, B)``.

        ``obs`` is ``(B, *obs_shape)``, ``acts`` ``(B, *act_shape)``: tensors (a numpy array
        is refused with a TypeError, a wrong shape with a ValueError naming it). ``train``:
        train-mode behaviour (dropout, batch statistics); default ``self.training``.
        """
        self._check_inputs(obs, acts, "B")
        return self._raw_rewards(obs, acts, False, train)

    def member_rewards_per_member(
        self, obs: torch.Tensor, acts: torch.Tensor, train: bool | None = None
    ) -> torch.Tensor:
        """Raw rewards where member k sees its own inputs: ``(K, B, ...) -> (K, B)``."""
        self._check_inputs(obs, acts, "K, B", self.n_members)
        return self._raw_rewards(obs, acts, True, train)

    def _raw_rewards(
        self,
        obs: torch.Tensor,
        acts: torch.Tensor,
        per_member: bool,
        train: bool | None,
        length: int | None = None,
    ) -> torch.Tensor:
        """:meth:`member_rewards` (``per_member`` False) or :meth:`member_rewards_per_member`
        on inputs already checked: ``(K, B)``; with ``length``, the ``(K, B // length)`` sums
        over consecutive runs of ``length`` rows (segment returns)."""
        if self._fast:
            if not per_member:
                k = self.n_members
                obs, acts = obs.expand(k, *obs.shape), acts.expand(k, *acts.shape)
            return self._stacked_forward(obs, acts, length, train)
        dims = (0, 0, 0, 0) if per_member else (0, 0, None, None)
        raw = self._vmapped(train, dims)(*self._stacked(), obs, acts)
        return raw if length is None else raw.reshape(self.n_members, -1, length).sum(-1)

    def member(self, k: int) -> RewardNet:
        """Member ``k`` as an ordinary module (a copy; for tests and inspection)."""
        params, buffers = self._stacked()
        net = copy.deepcopy(self._templates[True]).to_empty(device="cpu")
        state = {n: p[k].detach().clone() for n, p in params.items()}
        state.update({n: b[k].clone() for n, b in buffers.items()})
        net.load_state_dict(state)
        return net

    # -- segment returns and normalized reward ----------------------------------------------
    def pairs_per_pass(self, length: int) -> int | None:
        """How many pairs of ``length``-step segments a training step should put through one
        forward and backward pass (both segments of each pair together), or None: the whole
        minibatch in one.

        Stacked MLP members take a minibatch in parts of about :data:`PASS_ROWS` steps per
        member, each part's loss backward at once: its activations (K x 4096 x 64 floats,
        5 MB for K = 5) are then still in cache for the backward, where the whole of Hopper's
        64 pairs x 187 steps (30 MB a layer) are not (BENCHMARKS.md, "Reward ensemble").
        Other members keep one pass: batch statistics (batch renorm) need the whole
        minibatch, and the Nature CNN's grouped convolutions gained nothing from parts.
        """
        if not self._fast or type(self._templates[True].backbone) is not MLP:
            return None
        return max(1, PASS_ROWS // (2 * length))

    def segment_returns(
        self,
        obs: torch.Tensor,
        acts: torch.Tensor,
        per_member: bool = False,
        train: bool | None = None,
    ) -> torch.Tensor:
        """Undiscounted predicted returns of segments.

        Args:
            obs: ``(N, L, *obs_shape)``, or ``(K, N, L, *obs_shape)`` when ``per_member``.
            acts: ``(N, L, *act_shape)``, or ``(K, N, L, *act_shape)`` when ``per_member``.
            per_member: each member sees its own segments.
            train: train-mode behaviour (dropout, batch statistics); default ``self.training``.

        Returns:
            ``(K, N)`` raw (unnormalized) returns.
        """
        if per_member:
            self._check_inputs(obs, acts, "K, N, L", self.n_members)
        else:
            self._check_inputs(obs, acts, "N, L")
        lead = int(per_member)  # the member dim, where each member has its own segments
        n, length = obs.shape[lead : lead + 2]

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(*x.shape[:lead], n * length, *x.shape[lead + 2 :])

        return self._raw_rewards(flat(obs), flat(acts), per_member, train, length)

    @torch.no_grad()
    def update_normalization(self, obs: torch.Tensor, acts: torch.Tensor) -> None:
        """Set each member's output mean/std from a sample of recent inputs (eval mode), then
        the std of their normalized mean (``out_scale``), so that :meth:`reward` has zero mean
        and unit std over the sample: obs ``(B, *obs_shape)``, acts ``(B, *act_shape)``,
        B >= 2 (the std of one row is NaN)."""
        self._check_inputs(obs, acts, "B")
        if obs.shape[0] < 2:
            raise ValueError(
                f"output normalization needs at least two rows, got obs {tuple(obs.shape)}"
            )
        raw = self._raw_rewards(obs, acts, False, train=False)
        self.out_mean.copy_(raw.mean(dim=1))
        self.out_std.copy_(raw.std(dim=1).clamp_min(1e-6))
        normalized = (raw - self.out_mean[:, None]) / self.out_std[:, None]
        self.out_scale.copy_(normalized.mean(dim=0).std().clamp_min(1e-6))

    @torch.no_grad()
    def reward(self, obs: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        """The policy's reward: mean over members of normalized outputs, divided by the std
        of that mean (both as of :meth:`update_normalization`), ``(B, ...) -> (B,)``.

        Always in eval mode (no dropout, running statistics), whatever ``self.training`` is.
        """
        raw = self.member_rewards(obs, acts, train=False)
        mean = ((raw - self.out_mean[:, None]) / self.out_std[:, None]).mean(dim=0)
        return mean / self.out_scale

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        """Load ``state_dict``; one with the output normalization saved before ``out_scale``
        existed (2026-12-06) gets 1, the reward it was trained with, until the next
        :meth:`update_normalization`. Weights alone (the reward learner's, loaded with
        ``strict=False``) leave the normalization as it is."""
        if prefix + "out_mean" in state_dict:
            state_dict.setdefault(prefix + "out_scale", torch.ones(()))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def parameter_l2(self) -> torch.Tensor:
        """Sum of squared parameters, per member: ``(K,)``."""
        return torch.stack([p.pow(2).reshape(self.n_members, -1).sum(-1) for p in self.params]).sum(
            0
        )


def build_ensemble(
    observation_space: gym.spaces.Space,
    action_space: gym.spaces.Space,
    n_members: int = 3,
    backbone: str = "auto",
    backbone_kwargs: dict | None = None,
    hidden: Sequence[int] | None = None,
    dropout: float = 0.0,
    seed: int = 0,
    normalize_inputs: bool = False,
) -> RewardEnsemble:
    """An ensemble with the Nature CNN for pixels or a leaky-ReLU MLP for vectors
    (``backbone="auto"``: images, uint8 ``(H, W, C)`` or ``(C, H, W)``, get ``nature_cnn``,
    anything else ``mlp``), or any backbone of :func:`rlkit.nn.make_backbone` by name.

    ``hidden``: the mlp backbone's hidden layers (unless ``backbone_kwargs`` has them; default
    the backbone's (64, 64)). The head adds one hidden layer of 64 on the features and the
    action, so ``hidden=(64,)`` is the paper's network, two layers of 64 (the rlkit prefs
    default). ``normalize_inputs``: see :class:`RewardEnsemble`.
    """
    if backbone == "auto":
        image = observation_space.dtype == np.uint8 and len(observation_space.shape) == 3
        backbone = "nature_cnn" if image else "mlp"
    kwargs = dict(backbone_kwargs or {})
    if hidden is not None and backbone == "mlp":
        kwargs.setdefault("hidden", tuple(hidden))
    return RewardEnsemble(
        observation_space, action_space, n_members, backbone, kwargs, dropout=dropout, seed=seed,
        normalize_inputs=normalize_inputs,
    )  # fmt: skip

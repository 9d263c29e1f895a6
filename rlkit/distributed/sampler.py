"""FragmentSampler: whole trajectory fragments produced on Ray workers by a worker-side policy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ray

from envs.factory import EnvSpec, check_env_id
from rlkit.core.policy_weights import PolicyWeights
from rlkit.core.types import Trajectory
from rlkit.distributed.fragments import PackedFrames
from rlkit.distributed.policies import WorkerPolicy
from rlkit.distributed.pool import WorkerPool


class FragmentSampler:
    """``n_envs`` envs on ``n_workers`` Ray actors that roll out a policy on their own.

    One :meth:`sample` is one call per worker: each worker steps its envs
    ``fragment_length`` times with the policy, cutting each env's stream at episode ends,
    and sends back the pieces whole (observations, actions, true rewards, and with
    ``spec.render_state`` the render states). Observations are what ``envs.make_vec_env``
    gives (Atari: 4 stacked frames, stacked in the worker and sent as the frames themselves, a
    quarter of the bytes, so that each trajectory's ``obs`` is a read-only view of its frames).
    Episodes continue from one call to the next; the policy and each new set of weights cross
    the object store once.

    With ``prefetch``, each worker starts its next fragment as soon as it has sent one, so
    workers never wait for the driver (nor for each other); the price is one fragment of
    staleness: :meth:`sample` returns fragments begun before it was called, and a policy or
    weights it is given apply from the next call's fragments on.

    If a worker dies during a sample it is re-created (fresh envs, new seed, the policy and
    latest weights re-installed) and samples again; its episodes in progress are lost.

    Args:
        spec, n_envs, n_workers, seed, max_restarts, num_cpus: as for
            :class:`~rlkit.distributed.RayVecEnv`; worker ``i``'s policy generator (and
            torch's) is seeded from ``seed`` and its first env index.
        fragment_length: env steps per env per :meth:`sample`.
        prefetch: keep one fragment per worker in flight between calls (see above).
        compress: as for :class:`~rlkit.distributed.WorkerPool`: by default workers on
            another node than the driver's compress their fragments (Atari frames shrink
            90-290x), the others do not.
        env_processes: as for :class:`~rlkit.distributed.RayVecEnv`.
    """

    def __init__(
        self,
        spec: EnvSpec,
        n_envs: int,
        n_workers: int,
        seed: int,
        fragment_length: int,
        max_restarts: int = 3,
        num_cpus: float | None = None,
        prefetch: bool = False,
        compress: bool | None = None,
        env_processes: int = 1,
    ) -> None:
        check_env_id(spec.env_id)
        if fragment_length < 1:
            raise ValueError(f"fragment_length must be >= 1, got {fragment_length}")
        self.fragment_length = fragment_length
        self.prefetch = prefetch
        self._closed = False
        self._in_flight: list[ray.ObjectRef] | None = None
        self._policy_ref: ray.ObjectRef | None = None
        self._weights_ref: ray.ObjectRef | None = None
        self.pool = WorkerPool(
            spec,
            n_envs,
            n_workers,
            seed,
            max_restarts,
            frame_stack=True,
            num_cpus=num_cpus,
            on_restart=self._reinstall,
            compress=compress,
            env_processes=env_processes,
        )
        self.observation_space, self.action_space = self.pool.call(0, "spaces")

    @property
    def restarts(self) -> int:
        """How many times a worker was re-created after its process died."""
        return self.pool.restarts

    def _reinstall(self, i: int) -> None:
        if self._policy_ref is not None:
            self.pool.call(i, "set_policy", self._policy_ref)
        if self._weights_ref is not None:
            self.pool.call(i, "load_state_dict", self._weights_ref)

    def sample(
        self, policy: WorkerPolicy | None = None, state_dict: Mapping[str, Any] | None = None
    ) -> list[Trajectory]:
        """Roll out ``fragment_length`` steps in every env; see :meth:`sample_indexed`."""
        return [traj for _, traj in self.sample_indexed(policy, state_dict)]

    def sample_indexed(
        self, policy: WorkerPolicy | None = None, state_dict: Mapping[str, Any] | None = None
    ) -> list[tuple[int, Trajectory]]:
        """Roll out ``fragment_length`` steps in every env.

        Args:
            policy: a new worker-side policy (see :mod:`rlkit.distributed.policies`), sent to
                every worker once and kept for later calls; None keeps the current one.
            state_dict: new weights for the policy's ``load_state_dict``, sent once.

        Returns: ``(env index, trajectory)`` pairs, sorted by env index then time. Each
        env's trajectories hold ``fragment_length`` actions together; a trajectory ends at
        an episode's end (``terminal``, or ``truncated`` where a time limit cut it) or at the
        end of the call (neither), where the next call's first trajectory of that env
        starts (unless its worker was re-created meanwhile: its envs start new episodes).
        :class:`rlkit.loops.segment_recorder.FragmentSegmenter` cuts them into the segments
        of a preference run's pool.

        Raises:
            RuntimeError: the sampler was closed.
        """
        self._check_open()
        handles = list(self.pool.handles)
        if policy is not None:
            self._policy_ref = ray.put(policy)
            for i in range(self.pool.n_workers):
                self.pool.call(i, "set_policy", self._policy_ref)
        if self._policy_ref is None:
            raise ValueError("FragmentSampler.sample needs a policy the first time")
        new_weights = None
        if state_dict is not None:
            # Numpy, each shared tensor once (an SB3 CNN policy's extractor is listed 3 times).
            self._weights_ref = new_weights = ray.put(PolicyWeights.wrap(dict(state_dict)))
        args = (self.fragment_length, new_weights, True)
        plain = (self.fragment_length, None, True)
        refs, self._in_flight = self._in_flight, None
        if refs is None:
            refs = self._submit(args)
            args = plain
        else:
            self._resubmit_if_restarted(refs, handles, plain)
        handles = list(self.pool.handles)
        if self.prefetch:
            self._in_flight = self._submit(args)
        # A worker re-created on death gets the latest policy and weights from _reinstall.
        retry = [("sample", plain)] * len(refs)
        results = self.pool.results(refs, retry=retry)
        if self._in_flight is not None:
            self._resubmit_if_restarted(self._in_flight, handles, args)
        out: list[tuple[int, Trajectory]] = []
        for i, pieces in enumerate(results):
            start = self.pool.ranges[i].start
            out += sorted(((start + k, _unpacked(p)) for k, p in pieces), key=lambda p: p[0])
        return out

    def _resubmit_if_restarted(
        self, refs: list[ray.ObjectRef], handles: list[Any], args: tuple
    ) -> None:
        """Send again the calls in ``refs`` that went to an actor since re-created."""
        for i, handle in enumerate(handles):
            if self.pool.handles[i] is not handle:
                refs[i] = self.pool.submit(i, "sample", *args)

    def _submit(self, args: tuple) -> list[ray.ObjectRef]:
        return [self.pool.submit(i, "sample", *args) for i in range(self.pool.n_workers)]

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (sampling then raises)."""
        return self._closed

    def _check_open(self) -> None:
        """Raise rather than sample nothing: a closed pool has no workers, and a loop that
        samples until it has enough segments would spin for ever on empty samples."""
        if self._closed:
            raise RuntimeError("FragmentSampler is closed")

    def close(self) -> None:
        """End the workers; safe to call twice. Sampling afterwards raises."""
        self._closed = True
        self._in_flight = None
        self.pool.close()


def _unpacked(piece: Trajectory | PackedFrames) -> Trajectory:
    return piece.unpack() if isinstance(piece, PackedFrames) else piece

"""Render a stored segment into a video clip that Chromium plays.

A clip is rendered from the segment's saved simulator state, never by re-running the
policy: MuJoCo segments store ``concat(qpos, qvel)`` per step, which is set into a
rendering copy of the env; Atari segments store the RGB screens themselves. Frames are
piped to the ffmpeg binary that imageio-ffmpeg ships and encoded as H.264 in MP4
(yuv420p, even dimensions, ``+faststart`` so playback starts before the download ends)
or VP9 in WebM. The clip runs at the env's own speed (one frame per agent step) and ends
with a short freeze on the last frame, so the outcome of the segment stays visible
before the loop starts again.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Literal

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede importing mujoco

import gymnasium as gym
import imageio_ffmpeg
import numpy as np

from envs import env_kind
from rlkit.core.types import Segment

# The agent acts every 4th emulator frame (envs.factory's Atari frame skip) at 60 Hz.
ATARI_AGENT_FPS = 60.0 / 4

Codec = Literal["h264", "vp9"]
SUFFIX: dict[str, str] = {"h264": ".mp4", "vp9": ".webm"}
MEDIA_TYPE: dict[str, str] = {"h264": "video/mp4", "vp9": "video/webm"}


class ClipError(Exception):
    """A segment that cannot be rendered (no render state, unknown env, ffmpeg failure)."""


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    """How clips look."""

    width: int = 360
    """MuJoCo frame width in pixels (rounded up to even)."""
    height: int = 360
    """MuJoCo frame height in pixels (rounded up to even)."""
    atari_scale: int = 4
    """Atari screens (stored at 105x80) are enlarged pixel-exactly by this factor, so that
    chroma subsampling does not smear them."""
    max_fps: float = 30.0
    """Frames per second at most: faster envs (Hopper: 125 steps/s, shown at 25) drop frames
    evenly and keep their real-time speed; 0 keeps every step. Software rendering costs
    ~20 ms a frame, so 30 keeps a Hopper clip faster than real time on one core."""
    freeze_seconds: float = 0.5
    """How long the last frame is held before the clip loops."""
    codec: Codec = "h264"
    """h264 (MP4, plays in every browser) or vp9 (WebM)."""
    crf: int = 23
    """Encoder quality, lower is better (0..51; 18..28 is sensible)."""

    def validate(self) -> ClipOptions:
        """Raise ValueError naming the first bad field; return self.

        Not in ``__post_init__``: tyro would turn that into a help screen instead of the
        one-line error the CLI gives.
        """
        if self.width < 16 or self.height < 16 or self.width > 4096 or self.height > 4096:
            raise ValueError(f"clip size must be 16..4096 pixels, got {self.width}x{self.height}")
        if not 1 <= self.atari_scale <= 8:
            raise ValueError(f"atari_scale must be 1..8, got {self.atari_scale}")
        if self.max_fps < 0 or self.freeze_seconds < 0 or not 0 <= self.crf <= 51:
            raise ValueError("max_fps and freeze_seconds must be >= 0 and crf in 0..51")
        if self.codec not in SUFFIX:
            raise ValueError(f"codec must be one of {sorted(SUFFIX)}, got {self.codec!r}")
        return self

    @property
    def suffix(self) -> str:
        """The clip files' extension for ``codec``."""
        return SUFFIX[self.codec]


def _even(n: int) -> int:
    return n + (n % 2)


def frame_stride(fps: float, max_fps: float) -> int:
    """Keep every ``stride``-th step so that ``fps / stride <= max_fps`` (0: keep all)."""
    return max(1, math.ceil(fps / max_fps - 1e-9)) if max_fps > 0 else 1


class MujocoFrames:
    """Renders MuJoCo states with one rgb_array env of ``env_id`` (not thread-safe: the EGL
    context belongs to the thread that made it)."""

    def __init__(self, env_id: str, width: int, height: int) -> None:
        import mujoco

        from envs.mujoco_warnings import route_mujoco_warnings

        route_mujoco_warnings()
        self.env = gym.make(env_id, render_mode="rgb_array", width=width, height=height)
        self.env.reset(seed=0)
        model = self.env.unwrapped.model
        self.nq, self.nv = int(model.nq), int(model.nv)
        self.fps = 1.0 / float(self.env.unwrapped.dt)
        # Shadows and floor reflections make software GL (Mesa llvmpipe, what a machine
        # without a GPU has) about 6x slower per frame and add little for judging motion.
        scene = self.env.unwrapped.mujoco_renderer._get_viewer("rgb_array").scn  # noqa: SLF001
        scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0

    def render(self, states: np.ndarray) -> np.ndarray:
        """``(L, nq + nv)`` states -> ``(L, H, W, 3)`` uint8 frames."""
        if states.ndim != 2 or states.shape[1] != self.nq + self.nv:
            raise ClipError(
                f"render state has shape {states.shape}, expected (L, {self.nq + self.nv})"
            )
        unwrapped = self.env.unwrapped
        frames = []
        for state in states:
            unwrapped.set_state(state[: self.nq], state[self.nq :])
            frames.append(self.env.render())
        return np.stack(frames)

    def close(self) -> None:
        """Close the rendering env."""
        self.env.close()


class ClipRenderer:
    """Segment -> encoded clip file. Keeps one rendering env per env id; use it from one thread.

    Args:
        options: how clips look.
    """

    def __init__(self, options: ClipOptions | None = None) -> None:
        self.options = (options or ClipOptions()).validate()
        self._mujoco: dict[str, MujocoFrames] = {}

    def frames(self, seg: Segment) -> tuple[np.ndarray, float]:
        """The clip's frames ``(T, H, W, 3)`` uint8 and their rate in frames/s.

        One frame per agent step at the env's own rate (MuJoCo ``1 / dt``, Atari 15/s),
        thinned evenly to at most ``max_fps``: ``T = ceil(L / stride)``.
        """
        if seg.render_state is None:
            raise ClipError(f"segment {seg.id} has no render state to draw it from")
        import envs  # noqa: F401  (registers ALE and rlkit's own ids)

        try:
            kind = env_kind(seg.env_id)
        except gym.error.Error as exc:
            raise ClipError(f"segment {seg.id}: unknown env id {seg.env_id!r}") from exc
        if kind == "atari":
            frames = np.asarray(seg.render_state)
            if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
                raise ClipError(f"segment {seg.id}: Atari render state must be (L, H, W, 3) uint8")
            stride = frame_stride(ATARI_AGENT_FPS, self.options.max_fps)
            s = self.options.atari_scale
            return frames[::stride].repeat(s, axis=1).repeat(s, axis=2), ATARI_AGENT_FPS / stride
        if kind == "mujoco":
            if seg.env_id not in self._mujoco:
                o = self.options
                self._mujoco[seg.env_id] = MujocoFrames(seg.env_id, _even(o.width), _even(o.height))
            renderer = self._mujoco[seg.env_id]
            stride = frame_stride(renderer.fps, self.options.max_fps)
            return renderer.render(np.asarray(seg.render_state)[::stride]), renderer.fps / stride
        raise ClipError(f"segment {seg.id}: no clip renderer for env {seg.env_id!r}")

    def render(self, seg: Segment, path: Path) -> Path:
        """Render and encode ``seg`` to ``path`` atomically (a reader never sees half a file)."""
        frames, fps = self.frames(seg)
        encode(frames, fps, path, self.options)
        return path

    def close(self) -> None:
        """Close every rendering env kept so far."""
        for r in self._mujoco.values():
            r.close()
        self._mujoco.clear()


def encode(frames: np.ndarray, fps: float, path: Path, options: ClipOptions) -> None:
    """Encode ``(T, H, W, 3)`` uint8 frames played at ``fps`` to ``path`` (written atomically).

    Frames are padded to even dimensions and the last one is held for
    ``options.freeze_seconds``.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ClipError(f"frames must be (T, H, W, 3) with T >= 1, got {frames.shape}")
    hold = int(round(options.freeze_seconds * fps))
    if hold:
        frames = np.concatenate([frames, np.repeat(frames[-1:], hold, axis=0)])
    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes; pad with edge pixels
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if options.codec == "h264":
        codec, params = "libx264", ["-preset", "veryfast", "-crf", str(options.crf),
                                    "-movflags", "+faststart", "-f", "mp4"]  # fmt: skip
    else:
        codec, params = "libvpx-vp9", ["-deadline", "realtime", "-cpu-used", "8", "-b:v", "0",
                                       "-crf", str(options.crf + 10), "-f", "webm"]  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (w, h), fps=fps, codec=codec, quality=None, macro_block_size=1,
            output_params=["-threads", "1", *params], ffmpeg_log_level="error",
        )  # fmt: skip
        writer.send(None)
        for frame in frames:
            writer.send(frame)
        writer.close()
    except (OSError, RuntimeError) as exc:
        tmp.unlink(missing_ok=True)
        raise ClipError(f"ffmpeg could not encode {path.name}: {exc}") from exc
    os.replace(tmp, path)

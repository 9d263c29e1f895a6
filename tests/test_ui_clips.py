"""Clips rendered from saved simulator state (MuJoCo) and stored frames (Atari), and rendered ahead."""

import time

import imageio_ffmpeg
import numpy as np
import pytest
from test_ui_helpers import make_run, mujoco_segments

from feedback_ui.clips import ClipError, ClipOptions, ClipRenderer
from feedback_ui.queue import open_queries
from feedback_ui.render_worker import RenderWorker
from rlkit.core.types import Segment


def _decode(path):
    """``(frames (T, H, W, 3), fps)`` of an encoded clip."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(f, np.uint8).reshape(h, w, 3) for f in reader]
    return np.stack(frames), meta["fps"]


def test_mujoco_clip_from_saved_state_at_natural_speed_with_freeze(tmp_path):
    cheetah = mujoco_segments("HalfCheetah-v5", 1, 10)[0]
    renderer = ClipRenderer(ClipOptions(width=96, height=64, freeze_seconds=0.5))
    try:
        frames, fps = _decode(renderer.render(cheetah, tmp_path / "c.mp4"))
        assert fps == 20  # HalfCheetah: dt = 0.05 s
        assert frames.shape == (10 + 10, 64, 96, 3)  # one frame per step + 0.5 s frozen
        assert np.abs(frames[-1].astype(int) - frames[-10].astype(int)).mean() < 2  # frozen
        assert np.abs(frames[0].astype(int) - frames[9].astype(int)).mean() > 0.5  # it moves
        # each frame is drawn from its saved state alone (no simulation in between):
        # the states played backwards give exactly the frames backwards
        forward, _ = renderer.frames(cheetah)
        backward = Segment(obs=cheetah.obs, acts=cheetah.acts, true_rews=cheetah.true_rews,
                           render_state=cheetah.render_state[::-1].copy(), id=1,
                           env_id="HalfCheetah-v5")  # fmt: skip
        np.testing.assert_array_equal(renderer.frames(backward)[0], forward[::-1])
        # Hopper runs at 125 steps/s: thinned to <= 30 frames/s, same real-time length
        hopper = mujoco_segments("Hopper-v5", 1, 30)[0]
        frames, fps = _decode(renderer.render(hopper, tmp_path / "h.mp4"))
        assert fps == 25
        assert len(frames) == 30 // 5 + round(0.5 * 25)
    finally:
        renderer.close()


def test_atari_clip_from_stored_frames_and_vp9(tmp_path):
    import gymnasium as gym

    import envs  # noqa: F401  (registers ALE)
    from envs.render_state import atari_frame

    env = gym.make("ALE/Pong-v5", frameskip=4)
    env.reset(seed=0)
    shots = []
    for _ in range(12):
        env.step(env.action_space.sample())
        shots.append(atari_frame(env))
    env.close()
    seg = Segment(obs=np.zeros((12, 84, 84, 4), np.uint8), acts=np.zeros(12, np.int64),
                  true_rews=np.zeros(12), render_state=np.stack(shots), id=3,
                  env_id="ALE/Pong-v5")  # fmt: skip
    renderer = ClipRenderer(ClipOptions(atari_scale=2, freeze_seconds=0.2))
    frames, fps = _decode(renderer.render(seg, tmp_path / "p.mp4"))
    assert fps == 15 and frames.shape == (12 + 3, 210, 160, 3)
    # pixel-exact upscaling survives encoding: the first frame matches the stored screen
    assert np.abs(frames[0].astype(int) - shots[0].repeat(2, 0).repeat(2, 1)).mean() < 6
    webm = ClipRenderer(ClipOptions(atari_scale=1, codec="vp9", freeze_seconds=0))
    frames, _ = _decode(webm.render(seg, tmp_path / "p.webm"))
    assert frames.shape == (12, 106, 80, 3)  # 105 rows padded to even
    with pytest.raises(ClipError, match="no render state"):
        renderer.render(Segment(obs=seg.obs, acts=seg.acts, true_rews=seg.true_rews, id=4,
                                env_id="ALE/Pong-v5"), tmp_path / "x.mp4")  # fmt: skip
    assert not list(tmp_path.glob(".*tmp*"))  # failed or finished: no partial files left


def test_worker_renders_ahead_and_keeps_paths_inside_the_run(tmp_path):
    make_run(tmp_path, mujoco_segments("HalfCheetah-v5", 4, 6), n_queries=3)
    options = ClipOptions(width=64, height=64)
    worker = RenderWorker(tmp_path, options, lambda store, n: [
        s for _, a, b in open_queries(store, 1, n) for s in (a, b)
    ], ahead=1, poll_seconds=0.1).start()  # fmt: skip
    try:
        from rlkit.store import Store

        (top,) = open_queries(Store(tmp_path), 1, 1)
        deadline = time.time() + 60
        while not (worker.ready(top[1]) and worker.ready(top[2])) and time.time() < deadline:
            time.sleep(0.1)
        assert worker.ready(top[1]) and worker.ready(top[2])  # nobody asked: rendered ahead
        others = set(range(4)) - {top[1], top[2]}
        assert not any(worker.ready(s) for s in others)  # only the top query (ahead=1)
        assert worker.clip(max(others)).is_file()  # on request, at once
        with pytest.raises(ClipError, match="not in the store"):
            worker.clip(77)
        assert worker.path(12).parent == (tmp_path / "clips").resolve()
    finally:
        worker.stop()

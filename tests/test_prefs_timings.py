"""A preference run logs where its time goes: the start-up phases once, then each round."""

from prefs_tiny import tiny_hopper
from rich.console import Console

from rlkit.core.metrics import read_metrics
from rlkit.loops.preference import PreferenceLoop


def test_start_up_phases_and_rounds_log_their_times(tmp_path):
    cfg = tiny_hopper(
        steps=512, labels=12, seed=0, round_steps=256, segment_seconds=0.1, pool_size=60,
        pretrain_epochs=1, min_steps=1, n_steps=128,
    )  # fmt: skip
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    try:
        loop.start()
        while loop.steps_done < cfg.steps:
            loop.run_round()
        loop.finish_reward_training()
    finally:
        loop.close()
    metrics = read_metrics(tmp_path)
    for name in ("time/random_segments_seconds", "time/initial_labels_and_pretrain_seconds"):
        [(step, seconds)] = metrics[name]
        assert step == 0 and seconds > 0
    # one entry per round, at the round's last step
    assert [s for s, _ in metrics["time/policy_seconds"]] == [256, 512]
    assert all(v >= 0 for _, v in metrics["time/reward_wait_seconds"])
    # the round's steps over its whole wall-clock time, which the policy's part is only part of
    policy = dict(metrics["time/policy_seconds"])
    for step, sps in metrics["time/steps_per_second"]:
        assert 0 < sps <= 256 / policy[step]

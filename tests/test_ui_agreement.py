"""The labeling UI's model judge: the run's latest reward ensemble, rebuilt from its files."""

import dataclasses

import torch

from envs import EnvSpec, make_vec_env
from feedback_ui.agreement import ModelJudge
from rlkit.core.checkpoint import CheckpointManager
from rlkit.core.rundir import save_config
from rlkit.loops.preference import reward_ensemble
from rlkit.loops.preference_config import PrefsConfig


def test_model_judge_builds_the_runs_ensemble_with_its_backbone_settings(tmp_path):
    """A run trained with --backbone-kwargs: the judge's ensemble must take its checkpoint
    (it used to build the default backbone, fail to load, and stay silent)."""
    cfg = PrefsConfig(env="Hopper-v5", backbone_kwargs='{"hidden": [16, 8]}', ensemble_size=2)
    cfg = dataclasses.replace(cfg, run_dir=tmp_path)
    save_config(tmp_path, cfg)
    venv = make_vec_env(EnvSpec(cfg.env), 1, 0)
    trained = reward_ensemble(cfg, "mujoco", venv)
    venv.close()
    with torch.no_grad():
        for p in trained.params:
            p.add_(0.5)  # differs from a fresh build
    CheckpointManager(tmp_path).save(1024, {"ensemble": trained.state_dict()})
    judge = ModelJudge(tmp_path)
    assert judge.refresh()
    obs, acts = torch.randn(4, 11), torch.randn(4, 3)
    torch.testing.assert_close(judge.ensemble.reward(obs, acts), trained.reward(obs, acts))

    # Agreement per labeler, counted with the trained model's returns; a newer checkpoint
    # replaces the model (and its cached returns); a damaged one keeps the last model.
    from feedback_ui.agreement import Agreement
    from rlkit.core import Segment
    from rlkit.store import Store

    store = Store(tmp_path)
    gen = torch.Generator().manual_seed(0)
    segs = [
        Segment(obs=torch.randn(5, 11, generator=gen).numpy(),
                acts=torch.randn(5, 3, generator=gen).numpy(), true_rews=torch.zeros(5).numpy(),
                id=i)
        for i in range(6)
    ]  # fmt: skip
    for seg in segs:
        store.add_segment(seg)
    pairs = [(0, 1), (2, 3), (4, 5), (1, 2), (3, 4)]
    queries = store.add_queries([(a, b, 1.0) for a, b in pairs])
    labels = [("ann", "left"), ("ann", "right"), ("ann", "left"), ("bob", "right"), ("bob", "skip")]
    for q, (who, choice) in zip(queries, labels, strict=True):
        store.add_label(q, choice, who, "human")

    def expected(model) -> dict[str, Agreement]:
        with torch.no_grad():
            ret = [
                float(model.reward(torch.as_tensor(s.obs), torch.as_tensor(s.acts)).sum())
                for s in segs
            ]
        out: dict[str, Agreement] = {}
        for (a, b), (who, choice) in zip(pairs, labels, strict=True):
            if choice in ("left", "right"):
                agg = out.setdefault(who, Agreement())
                agg.total += 1
                agg.agree += int(choice == ("left" if ret[a] > ret[b] else "right"))
        return out

    first = expected(trained)
    assert judge.agreement(store) == first
    assert {who: a.total for who, a in first.items()} == {"ann": 3, "bob": 1}
    with torch.no_grad():
        for p in trained.params:
            p.mul_(-1.0)  # another model: other returns, other rankings
    CheckpointManager(tmp_path).save(2048, {"ensemble": trained.state_dict()})
    second = judge.agreement(store)
    assert judge.checkpoint == "step_0000002048" and second == expected(trained)
    assert {w: a.agree for w, a in second.items()} != {w: a.agree for w, a in first.items()}
    (tmp_path / "checkpoints" / "step_0000002048" / "state.pt").write_bytes(b"torn")
    judge.checkpoint = None  # as if this checkpoint were new to it
    assert judge.refresh() and judge.agreement(store) == second  # the last model kept

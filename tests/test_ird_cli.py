"""``rlkit ird lavaland``: table, JSON lines, PNG, errors, seeding."""

import json
import math
from pathlib import Path

import pytest

from rlkit.cli import main

SMALL = ["--maps", "2", "--samples", "60", "--proxy-samples", "60", "--size", "8"]


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    import torch

    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_json_output_has_one_object_per_planner_and_condition_and_is_seeded(tmp_path, capsys):
    args = ["ird", "lavaland", *SMALL, "--seed", "3", "--json", "--out-dir", str(tmp_path)]
    assert main(args) == 0
    rows = _json_lines(capsys.readouterr().out)
    assert len(rows) == 14
    assert {(r["planner"], r["condition"]) for r in rows} >= {
        ("proxy", "onehot"),
        ("maxmin-traj-base", "latent"),
        ("cvar", "onehot"),
    }
    for r in rows:
        assert {"planner", "condition", "lava_rate", "regret", "regret_lava_free"} <= set(r)
        assert 0.0 <= r["lava_rate"] <= 1.0 and r["regret"] >= -1e-6
    by = {(r["planner"], r["condition"]): r for r in rows}
    # The proxy's weights are the true ones but for lava: on the maps without their lava it
    # plans optimally, while on the test maps it walks into the lava that the risk-averse
    # planner keeps out of (the lava sits across a shortest path).
    assert by["proxy", "onehot"]["regret_lava_free"] == 0.0
    assert by["proxy", "onehot"]["lava_rate"] > by["maxmin-traj-base", "onehot"]["lava_rate"]
    assert by["maxmin-traj-base", "onehot"]["lava_rate"] == 0.0
    assert by["maxmin-traj-base", "latent"]["lava_rate"] == 0.0
    assert by["proxy", "onehot"]["regret"] > 10 * by["maxmin-traj-base", "onehot"]["regret"]
    assert (tmp_path / "paths.png").stat().st_size > 1000
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 14
    first = (tmp_path / "results.jsonl").read_bytes()
    assert main(args) == 0
    assert _json_lines(capsys.readouterr().out) == rows
    # the second run keeps the first one's files and writes beside them
    assert (tmp_path / "results.jsonl").read_bytes() == first
    assert (tmp_path / "results-2.jsonl").read_bytes() == first  # same seed, same results
    assert (tmp_path / "paths-2.png").stat().st_size > 1000
    # another seed: other maps, other results
    other = ["ird", "lavaland", *SMALL, "--seed", "4", "--json", "--plot-maps", "0"]
    assert main([*other, "--out-dir", str(tmp_path / "seed4")]) == 0
    rows4 = _json_lines(capsys.readouterr().out)
    assert rows4 != rows
    # this seed's proxy regret without lava sums to -1e-15: written as 0.0, not -0.0
    assert all(math.copysign(1.0, r["regret_lava_free"]) == 1.0 for r in rows4)


def test_table_output_and_one_condition(tmp_path, capsys):
    args = ["ird", "lavaland", *SMALL, "--conditions", "onehot", "--plot-maps", "0"]
    assert main([*args, "--out-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "maxmin-traj-base" in out and "onehot" in out and "latent" not in out
    assert not (tmp_path / "paths.png").exists()


@pytest.mark.parametrize(
    "bad",
    [
        ["--maps", "0"],
        ["--samples", "1"],
        ["--beta", "0"],
        ["--alpha", "1.5"],
        ["--size", "3"],
        ["--beta", "inf"],
        ["--prior-std", "nan"],
        ["--samples", "1000000000"],
        ["--maps", "1000000000"],
        ["--proxy-samples", "2000000"],
        ["--beta", "1e308"],  # finite, but beta w^T phi overflows float64
        ["--prior-std", "1e200"],
    ],
)
def test_invalid_numbers_give_one_line_and_exit_code_2(tmp_path, capsys, bad):
    assert main(["ird", "lavaland", *bad, "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --") and "\n" not in err


def test_an_out_dir_that_cannot_take_the_results_is_refused_before_the_work(tmp_path, capsys):
    run = tmp_path / "run"  # another command's run directory: its files are not mixed in
    run.mkdir()
    (run / "config.json").write_text("{}")
    for out_dir, says in [(run, "holds a run (its config.json); choose another --out-dir"),
                          (Path("/proc"), "cannot write to --out-dir /proc")]:  # fmt: skip
        assert main(["ird", "lavaland", *SMALL, "--out-dir", str(out_dir)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and says in err and "\n" not in err
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]

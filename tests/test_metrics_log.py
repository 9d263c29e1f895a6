"""The CSV metrics log survives a kill -9 at any point: before its first row, or mid-row; and
closing it (the preference loop always does) writes TensorBoard's rows."""

from rlkit.core.metrics import MetricsLogger, read_metrics


def test_nothing_is_written_before_the_first_row_then_header_and_row_together(tmp_path):
    log = MetricsLogger(tmp_path)  # a run refused before it logs anything writes nothing
    assert list(tmp_path.iterdir()) == []
    log.log(0, **{"charts/labels": 3.0})
    assert (tmp_path / "metrics.csv").read_bytes() == b"step,name,value\r\n0,charts/labels,3.0\r\n"
    assert len(list((tmp_path / "tb").iterdir())) == 1
    log.close()


def test_an_empty_log_left_by_a_kill_gets_its_header(tmp_path):
    (tmp_path / "metrics.csv").write_text("")
    log = MetricsLogger(tmp_path)
    log.log(0, **{"charts/labels": 3.0})
    log.close()
    assert read_metrics(tmp_path) == {"charts/labels": [(0, 3.0)]}


def test_a_row_torn_by_a_kill_is_skipped_and_the_next_rows_kept(tmp_path):
    log = MetricsLogger(tmp_path)
    log.log(0, **{"charts/labels": 3.0})
    log.close()
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("512,charts/true_ret")  # the kill came mid-row
    log = MetricsLogger(tmp_path)
    log.log(1024, **{"charts/labels": 5.0, "charts/true_return": 7.5})
    log.close()
    assert read_metrics(tmp_path) == {
        "charts/labels": [(0, 3.0), (1024, 5.0)],
        "charts/true_return": [(1024, 7.5)],
    }


def _tensorboard_rows(run_dir) -> dict[str, list[int]]:
    """The steps of every scalar in ``run_dir/tb``, as written to disk so far."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"))
    events.Reload()
    return {name: [e.step for e in events.Scalars(name)] for name in events.Tags()["scalars"]}


def test_close_writes_tensorboard_rows_and_may_come_twice(tmp_path):
    """close() writes TensorBoard's rows (its writer's thread may not have yet); a second
    close() does nothing, and a row after it opens both files again."""
    log = MetricsLogger(tmp_path)
    log.log(0, **{"charts/labels": 3.0})
    log.close()
    log.close()
    assert _tensorboard_rows(tmp_path) == {"charts/labels": [0]}
    log.log(1, **{"charts/labels": 4.0})
    log.close()
    assert _tensorboard_rows(tmp_path) == {"charts/labels": [0, 1]}
    assert read_metrics(tmp_path) == {"charts/labels": [(0, 3.0), (1, 4.0)]}


def test_a_preference_loop_closed_before_its_end_closes_its_logs(tmp_path):
    """A run stopped early (Ctrl-C, a lost Ray cluster, an error) is closed without reaching
    the end of run(), which closed the run's logs: close() does it now, so TensorBoard gets
    the rows logged just before the process exits."""
    from prefs_tiny import tiny_hopper
    from rich.console import Console

    from rlkit.loops.preference import PreferenceLoop

    cfg = tiny_hopper(steps=512, labels=10, seed=1, run_dir=tmp_path)
    loop = PreferenceLoop(cfg, tmp_path, Console(quiet=True))
    closed: list[bool] = []
    close_logs = loop.metrics.close
    loop.metrics.close = lambda: (closed.append(True), close_logs())[1]
    try:
        loop.start()  # logs the pretrained reward model's stats at step 0
    finally:
        loop.close()
    assert closed == [True]
    rows = _tensorboard_rows(tmp_path)
    assert rows and all(steps == [0] for steps in rows.values())
    assert rows.keys() == read_metrics(tmp_path).keys()

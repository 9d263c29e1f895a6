"""The CSV metrics log survives a kill -9 at any point: before its first row, or mid-row."""

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

"""The suite's xdist work units (tests/conftest.py): a renamed module would silently lose its
group, and two Ray instances would then compete for the two cores."""

from __future__ import annotations

from pathlib import Path

from conftest import _FILE_GROUPS, group_of, pytest_xdist_make_scheduler

TESTS = Path(__file__).parent


def test_every_grouped_module_exists() -> None:
    missing = sorted(name for name in _FILE_GROUPS if not (TESTS / name).is_file())
    assert missing == []


class _Config:
    """What xdist's scheduler reads of the config: ``--dist`` and ``--tx`` (``-n 2``)."""

    def __init__(self, dist: str) -> None:
        self.values = {"dist": dist, "tx": ["2*popen"]}

    def getvalue(self, name: str) -> object:
        return self.values[name]


def test_the_scheduler_runs_the_ray_modules_as_one_unit_and_other_tests_alone() -> None:
    scheduler = pytest_xdist_make_scheduler(_Config("loadgroup"), None)  # type: ignore[arg-type]
    assert scheduler is not None
    units = {
        scheduler._split_scope(f"tests/{name}::test_x[1]")
        for name, group in _FILE_GROUPS.items()
        if group == "ray"
    }
    assert units == {"ray"}
    server = "tests/test_ui_server.py::test_"
    assert scheduler._split_scope(server + "a") == scheduler._split_scope(server + "b")
    other = "tests/test_types.py::test_segment_checks_shapes[3]"
    assert scheduler._split_scope(other) == group_of(other) == other
    assert pytest_xdist_make_scheduler(_Config("load"), None) is None  # type: ignore[arg-type]


def test_every_module_that_needs_ray_is_in_the_ray_group() -> None:
    """Modules that need a Ray instance skip without Ray (``pytest.importorskip("ray")``): each
    of them must run in the one "ray" unit."""
    marker = 'importorskip("ray")'
    needs_ray = {
        p.name for p in TESTS.glob("test_*.py") if p != Path(__file__) and marker in p.read_text()
    }
    assert needs_ray == {name for name, group in _FILE_GROUPS.items() if group == "ray"}


def test_every_module_with_a_module_scoped_fixture_is_one_unit() -> None:
    """Otherwise each xdist worker that takes one of its tests sets the fixture up again."""
    shared = {
        p.name
        for p in TESTS.glob("test_*.py")
        if p != Path(__file__) and 'scope="module"' in p.read_text()
    }
    assert shared <= set(_FILE_GROUPS), shared - set(_FILE_GROUPS)

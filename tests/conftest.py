from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest
import torch

if TYPE_CHECKING:
    from xdist.remote import Producer
    from xdist.scheduler import LoadGroupScheduling

os.environ.setdefault("MUJOCO_GL", "egl")
# Small models and a 2-core machine: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_a_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SB3 agents that tests build directly (not through the presets' silent logger) would
    leave an empty /tmp/SB3-<date> folder on every learn(); SB3_LOGDIR puts it here."""
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))


#: Files whose tests run one after another in one xdist worker, by group: the Ray modules (so
#: that two Ray instances never compete for the two cores), and each module whose tests share
#: a module-scoped fixture (a server, a tiny benchmark run), set up once rather than once per
#: worker. Every other test is a work unit of its own.
_FILE_GROUPS = {"test_distributed_ray.py": "ray", "test_distributed_units.py": "ray"} | {
    name: name
    for name in (
        "test_bench_prefs_records.py",
        "test_saved_data_guards.py",
        "test_summarize_prefs.py",
        "test_ui_fuzz.py",
        "test_ui_server.py",
    )
}


def group_of(nodeid: str) -> str:
    """The xdist work unit of the test ``nodeid``: its file's group in :data:`_FILE_GROUPS`,
    else the test itself."""
    return _FILE_GROUPS.get(nodeid.split("::", 1)[0].rsplit("/", 1)[-1], nodeid)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Producer) -> LoadGroupScheduling | None:
    """``--dist loadgroup`` (the suite's default, see pyproject.toml) with the groups of
    :data:`_FILE_GROUPS`. Given here rather than as ``xdist_group`` marks: pytest-xdist 3.8
    applies those by rewriting ``item._nodeid``, which pytest 9.2 no longer reads, so the marks
    silently did nothing."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FileGroups(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return FileGroups(config, log)

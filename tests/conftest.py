import os

import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# Small models and a 2-core machine: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)


@pytest.fixture(autouse=True, scope="session")
def _sb3_logs_in_a_temp_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    """SB3 agents that tests build directly (not through the presets' silent logger) would
    leave an empty /tmp/SB3-<date> folder on every learn(); SB3_LOGDIR puts it here."""
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))


#: Modules that start Ray (a head node, or a local instance on demand): they run one after the
#: other in one xdist worker, so that two Ray instances never share the two cores.
_RAY_MODULES = {"test_distributed_ray.py", "test_distributed_units.py"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Work units for ``--dist loadgroup`` (the suite's default, see pyproject.toml): a test is
    its own unit unless it shares something expensive. The Ray modules form one group, and a
    module whose tests share a module-scoped fixture (a server, a tiny benchmark run) is one
    group, so that the fixture is set up once rather than once per xdist worker."""
    for item in items:
        module = item.path.name
        if module in _RAY_MODULES:
            item.add_marker(pytest.mark.xdist_group("ray"))
            continue
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        if any(d[-1].scope == "module" for d in defs):
            item.add_marker(pytest.mark.xdist_group(module))

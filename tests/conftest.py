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

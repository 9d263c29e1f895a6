"""A HalfCheetah run prints no MuJoCo deprecation line and leaves no MUJOCO_LOG.TXT behind;
other MuJoCo warnings still reach the user, as Python warnings."""

import subprocess
import sys

SCRIPT = """
import warnings
import mujoco
from envs import EnvSpec, make_vec_env

venv = make_vec_env(EnvSpec("HalfCheetah-v5"), 2, seed=0)
assert abs(venv.envs[0].unwrapped.model.body_mass.sum() - 14.0) < 1e-9  # settotalmass applied
venv.close()
model = mujoco.MjModel.from_xml_string(
    '<mujoco><worldbody><body><joint type="slide"/><geom size=".1"/></body></worldbody></mujoco>'
)
data = mujoco.MjData(model)
data.qvel[0] = float("nan")  # an unstable simulation: the user should hear of it
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    mujoco.mj_step(model, data)
assert [str(w.message)[:44] for w in caught] == ["MuJoCo: Nan, Inf or huge value in QVEL at DO"]
assert caught[0].category is RuntimeWarning
print("ok")
"""


def test_halfcheetah_makes_no_log_file_and_other_warnings_still_show(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok" and "settotalmass" not in out.stdout + out.stderr
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()

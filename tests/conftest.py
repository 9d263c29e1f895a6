import os

import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# Small models and a 2-core machine: one intra-op thread avoids oversubscription stalls.
torch.set_num_threads(1)

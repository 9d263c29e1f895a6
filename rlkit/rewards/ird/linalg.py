"""Matrix products through torch, whose thread count callers control.

NumPy's ``@`` goes to OpenBLAS, whose worker threads spin-wait: on a shared, busy machine a
(100, 5) x (5, 2000) product takes ~30 ms instead of ~0.1 ms. Torch honours
``torch.set_num_threads``, so IRD's hot products (likelihoods, robust objectives, reward
batches) go through here.
"""

from __future__ import annotations

import numpy as np
import torch


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` in float64 (either may be 1-D, as with ``np.matmul``)."""
    ta = torch.as_tensor(np.asarray(a, dtype=np.float64))
    tb = torch.as_tensor(np.asarray(b, dtype=np.float64))
    return torch.matmul(ta, tb).numpy()

"""Representation backbones behind one registry (see :mod:`rlkit.nn.registry`).

Importing the modules registers them: basic (mlp, nature_cnn), batch_renorm (the norm
"batch_renorm" of mlp and nature_cnn), relation, revnet, selu (selu_mlp) and vq.
"""

from rlkit.nn import basic, batch_renorm, relation, revnet, selu, vq  # noqa: F401
from rlkit.nn.registry import backbone_names, make_backbone, register_backbone

__all__ = ["backbone_names", "make_backbone", "register_backbone"]

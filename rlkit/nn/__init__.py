"""Representation backbones behind one registry (see :mod:`rlkit.nn.registry`)."""

from rlkit.nn import basic  # noqa: F401  (registers mlp, nature_cnn)
from rlkit.nn.registry import backbone_names, make_backbone, register_backbone

__all__ = ["backbone_names", "make_backbone", "register_backbone"]

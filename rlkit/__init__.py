"""rlkit: reinforcement learning of *what* to do from people."""

__version__ = "0.1.0"

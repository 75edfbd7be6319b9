"""Weight-sharing supernets built from a search space (no search logic here)."""

from .net import Supernet

__all__ = ["Supernet"]

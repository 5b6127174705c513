"""Datasets (arrays in [-1, 1], NCHW float32) and partitioners (pure numpy, explicit Generator).

Readers of files on disk live one per source (``torchvision_sets``, ``folder``, ``npz``) and return
uint8 arrays; ``convert`` turns them into the float array. ``partition_report`` tabulates and plots a
split (it imports pandas and matplotlib, so it is not imported here).
"""

from .datasets import ImageSet, load_dataset, split_holdout
from .federated import federated_split
from .partition import partition

__all__ = ["ImageSet", "federated_split", "load_dataset", "partition", "split_holdout"]

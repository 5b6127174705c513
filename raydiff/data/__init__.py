"""Datasets (arrays in [-1, 1], NCHW float32) and partitioners (pure numpy, explicit Generator)."""
from .datasets import ImageSet, load_dataset, split_holdout
from .partition import partition

__all__ = ["ImageSet", "load_dataset", "split_holdout", "partition"]

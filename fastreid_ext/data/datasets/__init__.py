"""Datasets registered into FastReID's DATASET_REGISTRY on import."""
from .synthetic import ReidFolderDataset, SyntheticDuke, SyntheticMarket

__all__ = ["ReidFolderDataset", "SyntheticDuke", "SyntheticMarket"]

"""Datasets registered into FastReID's DATASET_REGISTRY on import."""
from .attributes import DukeMTMCAttr, Market1501Attr
from .synthetic import ReidFolderDataset, SyntheticDuke, SyntheticMarket

__all__ = ["DukeMTMCAttr", "Market1501Attr", "ReidFolderDataset", "SyntheticDuke", "SyntheticMarket"]

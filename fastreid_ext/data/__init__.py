"""Data: datasets (registered on import), per-image extra fields, loaders."""
from . import datasets  # noqa: F401  (registration)
from .build import (attribute_fields, build_test_loader, build_test_set, build_train_loader,
                    build_train_set, load_dataset)
from .common import ExtCommDataset

__all__ = ["ExtCommDataset", "attribute_fields", "build_test_loader", "build_test_set", "build_train_loader",
           "build_train_set", "load_dataset"]

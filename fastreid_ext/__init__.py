"""fastreid-ext: AANet, APR, HA-CNN, RBNet and MMT/DBSCAN as plugins of FastReID 1.4.0.

Importing the package first applies the compatibility layer (:mod:`fastreid_ext.compat`), then
registers every component into FastReID's registries.
"""
from . import compat

compat.apply()

from . import data, engine, evaluation, modeling  # noqa: E402,F401  (registration)
from .config import add_ext_config, get_ext_cfg  # noqa: E402

__version__ = "0.1.0"
__all__ = ["add_ext_config", "get_ext_cfg", "__version__"]

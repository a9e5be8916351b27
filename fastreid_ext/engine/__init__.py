from .. import compat  # FastReID compatibility patches before any fastreid import
compat.apply()
from .checkpoint import SafeCheckpointer
from .trainer import ExtTrainer, load_model

__all__ = ["ExtTrainer", "SafeCheckpointer", "load_model"]

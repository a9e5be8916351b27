from .checkpoint import SafeCheckpointer
from .trainer import ExtTrainer, load_model

__all__ = ["ExtTrainer", "SafeCheckpointer", "load_model"]

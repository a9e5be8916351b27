from .checkpoint import SafeCheckpointer
from .trainer import ExtTrainer

__all__ = ["ExtTrainer", "SafeCheckpointer"]

"""Meta-architectures registered into FastReID's META_ARCH_REGISTRY on import."""
from .apr import APR, ARM, APRHead
from .aanet import AANet, UncertaintyLoss, build_aanet_resnet_backbone
from .hacnn import HACNN, HACNNReID, build_hacnn_backbone

__all__ = ["AANet", "UncertaintyLoss", "build_aanet_resnet_backbone", "APR", "APRHead", "ARM", "HACNN", "HACNNReID", "build_hacnn_backbone"]

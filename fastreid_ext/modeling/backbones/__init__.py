"""Backbones registered into FastReID's BACKBONE_REGISTRY on import (``MODEL.BACKBONE.NAME``)."""
from .hacnn import HACNN, build_hacnn_backbone
from .resnet import build_aanet_resnet_backbone

__all__ = ["HACNN", "build_aanet_resnet_backbone", "build_hacnn_backbone"]

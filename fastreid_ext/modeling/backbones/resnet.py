# encoding: utf-8
"""FastReID's ResNet backbone builder extended with ResNet-152 (FastReID 1.4.0 stops at 101x).

AANet (Tay, Roy, Yap, "AANet: Attribute Attention Network for Person Re-Identifications", CVPR 2019)
reports ResNet-50 and ResNet-152 backbones; ``configs/*/aanet_R152.yml`` select this builder with
``MODEL.BACKBONE.NAME: build_aanet_resnet_backbone`` and ``DEPTH: 152x``. Any other depth is FastReID's
own ``build_resnet_backbone`` unchanged, so the builder can replace it in any config.
"""

import torch

from fastreid.modeling.backbones.build import BACKBONE_REGISTRY

__all__ = ["RESNET152_URL", "build_aanet_resnet_backbone"]

RESNET152_URL = "https://download.pytorch.org/models/resnet152-b121ed2d.pth"


@BACKBONE_REGISTRY.register()
def build_aanet_resnet_backbone(cfg):
    """FastReID's ``build_resnet_backbone`` for DEPTH 18x/34x/50x/101x; for ``152x`` the same
    FastReID ``ResNet`` class with Bottleneck blocks (3, 8, 36, 3) (torchvision's ResNet-152,
    whose ImageNet state dict it loads: ``MODEL.BACKBONE.PRETRAIN_PATH``, else torchvision's URL
    into ``$TORCH_HOME/checkpoints``). Non-local blocks are not available for 152x."""
    from fastreid.modeling.backbones import resnet as fr

    if cfg.MODEL.BACKBONE.DEPTH != "152x":
        return fr.build_resnet_backbone(cfg)
    bb = cfg.MODEL.BACKBONE
    if bb.WITH_NL:
        raise ValueError("build_aanet_resnet_backbone: MODEL.BACKBONE.WITH_NL is not supported for 152x")
    model = fr.ResNet(bb.LAST_STRIDE, bb.NORM, bb.WITH_IBN, bb.WITH_SE, False, fr.Bottleneck,
                      [3, 8, 36, 3], [0, 0, 0, 0])
    if bb.PRETRAIN:
        if bb.PRETRAIN_PATH:
            state_dict = torch.load(bb.PRETRAIN_PATH, map_location="cpu")
        else:
            if bb.WITH_IBN or bb.WITH_SE:
                raise ValueError("no public ImageNet weights for an IBN/SE ResNet-152: set "
                                 "MODEL.BACKBONE.PRETRAIN_PATH or PRETRAIN False")
            state_dict = torch.hub.load_state_dict_from_url(RESNET152_URL, map_location="cpu")
        incompatible = model.load_state_dict(state_dict, strict=False)
        if incompatible.missing_keys:
            raise ValueError(f"ResNet-152 weights miss {len(incompatible.missing_keys)} keys, e.g. "
                             f"{incompatible.missing_keys[:3]}")
    return model

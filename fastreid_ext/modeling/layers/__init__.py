"""Building blocks shared by models (not registered themselves): RBNet's reverse backbone."""
from .reverse_backbone import (ChangeChannel, KeypointFusion, MaskHead, ReBlock, ReLayer, ReverseBackbone,  # noqa: F401
                               resnet_stages, stage_channels)

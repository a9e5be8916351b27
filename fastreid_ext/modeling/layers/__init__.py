"""Building blocks shared by models (not registered themselves): RBNet's reverse backbone, NPSM's
query-conditioned Conv-LSTM and region shrinkage."""
from .reverse_backbone import (ChangeChannel, KeypointFusion, MaskHead, ReBlock, ReLayer, ReverseBackbone,  # noqa: F401
                               resnet_stages, stage_channels)
from .npsm import (QueryConvLSTMCell, box_outside_fraction, cluster_subregions, region_attention,  # noqa: F401
                   spatial_softmax)

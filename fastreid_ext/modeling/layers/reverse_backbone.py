# encoding: utf-8
"""RBNet's reverse backbone ("Re-Backbone") as reusable layers: change-channel, re-layers, the grouped
keypoint fusion (re-conv-1), the mask head, and a stage-wise run of FastReID's ResNet.

Paper: Yu Peng, Piao Yan, "Reverse backbone net for unsupervised person re-identification" (Journal of
Jilin University, Engineering and Technology Edition, 2024, 54(11): 3309-3317), section 1.1 and
Table 1. The model that uses these layers, and the mapping of the paper's equations, is
:mod:`fastreid_ext.modeling.meta_arch.rbnet`; this file is the decoder alone, so that other models
(MMT's nets in domain adaptation) reuse it.

Shapes for ResNet-50 at 256x128 (Table 1), backbone stage -> matching decoder stage::

    conv1 (stem)  64 x 128 x 64   <- re-conv-1: 17 x 128 x 64 (eq. 3; Table 1 draws it at 256 x 128)
    layer1       256 x  64 x 32   -> re-layer-1 (2 blocks) -> 64 x 64 x 32 (layer1's input)
    layer2       512 x  32 x 16   -> re-layer-2 (3 blocks) -> 256 x 64 x 32
    layer3      1024 x  16 x  8   -> re-layer-3 (5 blocks) -> 512 x 32 x 16
    layer4      2048 x  16 x  8   -> re-layer-4 (2 blocks) -> 1024 x 16 x 8  (last stride 1)

Each backbone stage output goes through a change-channel block (1x1 conv + ReLU, the paper's
``change_channel``) and is added to the decoder stream entering the matching re-layer (the paper's
"feature-pyramid-like" use of the backbone's same-size maps). A re-layer is ResNet-shaped: its
blocks keep the channel count except the last, which maps to the channel count of the backbone
layer's *input*, and it upsamples bilinearly at that last block where the backbone layer (or the
max-pool before layer1) downsampled. Blocks are bottlenecks whose 3x3 convolution is depthwise
(the paper: "depthwise separable convolutions reduce the computation"), width = max(in, out) / 4
(ResNet's bottleneck ratio; also for BasicBlock ResNets, where a full-width block made the decoder
cost 75 % of a ResNet-18 training step, measured on CPU).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ChangeChannel", "KeypointFusion", "MaskHead", "ReBlock", "ReLayer", "ReverseBackbone",
           "STAGES", "resnet_stages", "stage_channels"]

#: names of the backbone stages (and of the decoder levels that mirror them)
STAGES = ("conv1", "layer1", "layer2", "layer3", "layer4")


def resnet_stages(backbone: nn.Module, x: torch.Tensor) -> List[torch.Tensor]:
    """Outputs of FastReID's ResNet at conv1 (stem, before the max-pool) and layer1..layer4.

    The same computation as ``backbone(x)`` (whose result is the last entry), non-local blocks
    included (FastReID's ``NL_k_idx`` convention), but keeping every stage's map.
    """
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
        if not hasattr(backbone, name):
            raise ValueError(f"RBNet needs a ResNet-shaped backbone (conv1, bn1, maxpool, layer1-4: FastReID's "
                             f"build_resnet_backbone and its variants); {type(backbone).__name__} has no '{name}'")
    s0 = backbone.relu(backbone.bn1(backbone.conv1(x)))
    outs = [s0]
    h = backbone.maxpool(s0)
    for k in range(1, 5):
        layer = getattr(backbone, f"layer{k}")
        nl_idx = [i for i in getattr(backbone, f"NL_{k}_idx", []) if i >= 0]
        nl = getattr(backbone, f"NL_{k}", None)
        used = 0
        for i, block in enumerate(layer):
            h = block(h)
            if used < len(nl_idx) and i == nl_idx[used]:
                h = nl[used](h)
                used += 1
        outs.append(h)
    return outs


def stage_channels(backbone: nn.Module) -> List[int]:
    """Channels of the five stage outputs of a FastReID ResNet (conv1, layer1..layer4)."""
    chans = [backbone.conv1.out_channels]
    for k in range(1, 5):
        last = getattr(backbone, f"layer{k}")[-1]
        conv = getattr(last, "conv3", None) or last.conv2
        chans.append(conv.out_channels)
    return chans


class ChangeChannel(nn.Sequential):
    """The paper's change-channel block: 1x1 convolution + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True):
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=bias), nn.ReLU(inplace=True))


class ReBlock(nn.Module):
    """A residual block of a re-layer: 1x1 (in -> mid) -> depthwise 3x3 (mid) -> 1x1 (mid -> out), BN
    after each, ReLU after the first two and after the sum; a 1x1 conv + BN shortcut when in != out."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, padding=1, groups=mid_channels, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        self.conv3 = nn.Conv2d(mid_channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Identity() if in_channels == out_channels else
                         nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


class ReLayer(nn.Module):
    """``num_blocks`` :class:`ReBlock` s; the last maps ``in -> out`` channels, then the map is
    upsampled bilinearly to the size the next decoder stage needs (a no-op where the mirrored
    backbone layer did not downsample)."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, expansion: int = 4):
        super().__init__()
        if num_blocks < 1:
            raise ValueError(f"a re-layer needs at least one block, got {num_blocks}")
        mid = max(1, max(in_channels, out_channels) // expansion)
        blocks = [ReBlock(in_channels, in_channels, mid) for _ in range(num_blocks - 1)]
        blocks.append(ReBlock(in_channels, out_channels, mid))
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x, size=None):
        x = self.blocks(x)
        if size is not None and tuple(x.shape[-2:]) != tuple(size):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x


class KeypointFusion(nn.Module):
    """re-conv-1: multi-scale decoder maps fused into ``num_keypoints`` heatmaps by a grouped 1x1
    convolution, one group per keypoint.

    Each level goes through a change-channel block into ``num_keypoints * width`` channels and is
    brought to the output size (bilinear); the levels' channels are interleaved so that group k holds
    the ``width`` channels of keypoint k from every level; a 1x1 convolution with ``groups =
    num_keypoints`` gives one heatmap per keypoint from its own group only.
    """

    def __init__(self, in_channels: Sequence[int], num_keypoints: int = 17, width: int = 4):
        super().__init__()
        self.num_keypoints, self.width = num_keypoints, width
        self.change = nn.ModuleList([ChangeChannel(c, num_keypoints * width) for c in in_channels])
        self.conv = nn.Conv2d(num_keypoints * width * len(in_channels), num_keypoints, 1, groups=num_keypoints)

    def grouped(self, levels: Sequence[torch.Tensor], size) -> torch.Tensor:
        """(B, K * width * L, h, w): the levels' change-channel maps, interleaved keypoint by keypoint."""
        maps = []
        for cc, x in zip(self.change, levels):
            y = cc(x)
            if tuple(y.shape[-2:]) != tuple(size):
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            maps.append(y.unflatten(1, (self.num_keypoints, self.width)))
        return torch.cat(maps, dim=2).flatten(1, 2)

    def forward(self, levels: Sequence[torch.Tensor], size) -> torch.Tensor:
        return self.conv(self.grouped(levels, size))


class MaskHead(nn.Module):
    """M(x): a change-channel block (1x1 conv to one channel + ReLU) on a decoder map, brought to the
    input's size (bilinear). Initialised to M ~ 1 everywhere (bias 1, weights N(0, 1e-3): small, not
    zero, so that backbone 2's losses reach the decoder from the first step), so backbone 2 starts by
    seeing x itself; the mask is learnt through backbone 2's losses."""

    def __init__(self, in_channels: int):
        super().__init__()
        self.change = ChangeChannel(in_channels, 1)
        nn.init.normal_(self.change[0].weight, std=1e-3)
        nn.init.ones_(self.change[0].bias)

    def forward(self, x, size):
        return F.interpolate(self.change(x), size=size, mode="bilinear", align_corners=False)


class ReverseBackbone(nn.Module):
    """The decoder: change-channel blocks, re-layers 4 -> 1, re-conv-1 (:class:`KeypointFusion`).

    Args:
        channels: the five stage channels of the backbone (conv1, layer1..layer4), :func:`stage_channels`.
        blocks: blocks of re-layers 1-4 (Table 1: 2, 3, 5, 2 for ResNet-50).
        fuse_levels: decoder levels fused into the heatmaps (``conv1`` = the stem's change-channel
            map, ``relayer1``..``relayer4`` = re-layer outputs).
        heatmap_stride: 2 = the stem's grid (eq. 3), 1 = the input's grid (Table 1).

    ``forward(stages, input_size)`` returns a dict: ``heatmaps`` (B, 17, H/s, W/s), ``relayer1`` ..
    ``relayer4`` (re-layer outputs), ``conv1`` (the stem's change-channel map) and ``fused``
    (re-conv-1's grouped input), any of which can feed a mask.
    """

    def __init__(self, channels: Sequence[int], blocks: Sequence[int], num_keypoints: int = 17,
                 fuse_levels: Sequence[str] = ("conv1", "relayer1"), group_width: int = 4, heatmap_stride: int = 2):
        super().__init__()
        if len(channels) != 5 or len(blocks) != 4:
            raise ValueError(f"ReverseBackbone needs 5 stage channels and 4 re-layer block counts, got {channels}, {blocks}")
        known = ("conv1", "relayer1", "relayer2", "relayer3", "relayer4")
        bad = [lv for lv in fuse_levels if lv not in known]
        if bad or not fuse_levels:
            raise ValueError(f"MODEL.RBNET.FUSE_LEVELS has {list(fuse_levels)}; use a non-empty subset of {list(known)}")
        if heatmap_stride not in (1, 2):
            raise ValueError(f"MODEL.RBNET.HEATMAP_STRIDE must be 1 or 2, got {heatmap_stride}")
        c0, c1, c2, c3, c4 = channels
        self.change = nn.ModuleList([ChangeChannel(c, c) for c in channels])  # change_channel, conv1..layer4
        # re-layer k outputs the channel count of backbone layer k's input
        self.relayers = nn.ModuleList([
            ReLayer(c1, c0, blocks[0]),
            ReLayer(c2, c1, blocks[1]),
            ReLayer(c3, c2, blocks[2]),
            ReLayer(c4, c3, blocks[3]),
        ])
        level_channels = {"conv1": c0, "relayer1": c0, "relayer2": c1, "relayer3": c2, "relayer4": c3}
        self.fuse_levels = tuple(fuse_levels)
        self.fusion = KeypointFusion([level_channels[lv] for lv in self.fuse_levels], num_keypoints, group_width)
        self.heatmap_stride = heatmap_stride
        self.level_channels = level_channels

    def forward(self, stages: Sequence[torch.Tensor], input_size) -> Dict[str, torch.Tensor]:
        s0, s1, s2, s3, s4 = stages
        cc = [c(s) for c, s in zip(self.change, stages)]
        out = {"conv1": cc[0]}
        d = self.relayers[3](cc[4], s3.shape[-2:])                 # re-layer-4 -> layer3's size
        out["relayer4"] = d
        d = self.relayers[2](d + cc[3], s2.shape[-2:])             # re-layer-3 -> layer2's size
        out["relayer3"] = d
        d = self.relayers[1](d + cc[2], s1.shape[-2:])             # re-layer-2 -> layer1's size
        out["relayer2"] = d
        out["relayer1"] = self.relayers[0](d + cc[1])               # re-layer-1: layer1 keeps the size
        H, W = input_size
        size = (H, W) if self.heatmap_stride == 1 else tuple(s0.shape[-2:])
        levels = [out[lv] for lv in self.fuse_levels]
        out["fused"] = self.fusion.grouped(levels, size)
        out["heatmaps"] = self.fusion.conv(out["fused"])
        return out

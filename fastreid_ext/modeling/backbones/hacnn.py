# encoding: utf-8
"""HA-CNN's network (Li, Zhu, Gong, "Harmonious Attention Network for Person Re-Identification",
CVPR 2018), registered as the FastReID backbone ``build_hacnn_backbone``.

The paper-to-code map, the choices the paper leaves open and the losses are documented with the
model, :mod:`fastreid_ext.modeling.meta_arch.hacnn` (meta-architecture ``HACNNReID``). This file holds
the network of the paper's Fig. 2 and its blocks: ConvBlock / InceptionA / InceptionB, the Harmonious
Attention module (HarmAttn = SoftAttn (SpatialAttn x ChannelAttn) + HardAttn) and the two-branch
:class:`HACNN` with the cross-attention interaction. Layer sizes follow the public reference layout
of torchreid (2,929,112 parameters without classifiers, asserted in the tests).
"""

from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.modeling.backbones.build import BACKBONE_REGISTRY

__all__ = [
    "ConvBlock",
    "InceptionA",
    "InceptionB",
    "SpatialAttn",
    "ChannelAttn",
    "SoftAttn",
    "HardAttn",
    "HarmAttn",
    "HACNN",
    "build_hacnn_backbone",
    "check_input_size",
    "hard_attn_init_bias",
    "INPUT_SIZE",
    "LOCAL_CROP_SIZES",
]

#: The only input size (H, W) the architecture accepts.
INPUT_SIZE = (160, 64)
#: (H, W) at which the regions are sampled for the local stream, per block:
#: from the stem output, the block-1 output and the block-2 output.
LOCAL_CROP_SIZES = ((24, 28), (12, 14), (6, 7))

# --------------------------------------------------------------------------- #
# Building blocks
# --------------------------------------------------------------------------- #
class ConvBlock(nn.Module):
    """conv (with bias) + BatchNorm2d + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class InceptionA(nn.Module):
    """Inception-A unit (stride 1), four streams of ``out_channels // 4`` channels:
    1x1 -> 3x3; 1x1 -> 3x3; 1x1 -> 3x3; avgpool 3x3 (stride 1) -> 1x1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"InceptionA: out_channels must be divisible by 4, got {out_channels}")
        mid = out_channels // 4
        self.stream1 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, padding=1))
        self.stream2 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, padding=1))
        self.stream3 = nn.Sequential(ConvBlock(in_channels, mid, 1), ConvBlock(mid, mid, 3, padding=1))
        self.stream4 = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), ConvBlock(in_channels, mid, 1))

    def forward(self, x):
        return torch.cat([self.stream1(x), self.stream2(x), self.stream3(x), self.stream4(x)], dim=1)


class InceptionB(nn.Module):
    """Inception-B unit (halves H and W): 1x1 -> 3x3/s2 (out/4); 1x1 -> 3x3 ->
    3x3/s2 (out/4); maxpool 3x3/s2 -> 1x1 (out/2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"InceptionB: out_channels must be divisible by 4, got {out_channels}")
        mid = out_channels // 4
        self.stream1 = nn.Sequential(
            ConvBlock(in_channels, mid, 1),
            ConvBlock(mid, mid, 3, stride=2, padding=1),
        )
        self.stream2 = nn.Sequential(
            ConvBlock(in_channels, mid, 1),
            ConvBlock(mid, mid, 3, padding=1),
            ConvBlock(mid, mid, 3, stride=2, padding=1),
        )
        self.stream3 = nn.Sequential(
            nn.MaxPool2d(3, stride=2, padding=1),
            ConvBlock(in_channels, 2 * mid, 1),
        )

    def forward(self, x):
        return torch.cat([self.stream1(x), self.stream2(x), self.stream3(x)], dim=1)


# --------------------------------------------------------------------------- #
# Harmonious attention
# --------------------------------------------------------------------------- #
class SpatialAttn(nn.Module):
    """Spatial attention (Sec. 3.1 I.1): channel mean -> ConvBlock(1,1,3,s2,p1)
    -> bilinear resize to the input size -> ConvBlock(1,1,1). Output (B,1,H,W)."""

    def __init__(self):
        super().__init__()
        self.conv1 = ConvBlock(1, 1, 3, stride=2, padding=1)
        self.conv2 = ConvBlock(1, 1, 1)

    def forward(self, x):
        size = x.shape[-2:]
        y = x.mean(dim=1, keepdim=True)
        y = self.conv1(y)
        y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
        return self.conv2(y)


class ChannelAttn(nn.Module):
    """Channel attention (Sec. 3.1 I.2): GAP -> ConvBlock(C, C/r, 1) ->
    ConvBlock(C/r, C, 1). Output (B,C,1,1)."""

    def __init__(self, in_channels: int, reduction: int = 16):
        super().__init__()
        if in_channels % reduction:
            raise ValueError(
                f"ChannelAttn: in_channels ({in_channels}) must be divisible by the reduction ({reduction})"
            )
        self.conv1 = ConvBlock(in_channels, in_channels // reduction, 1)
        self.conv2 = ConvBlock(in_channels // reduction, in_channels, 1)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        return self.conv2(self.conv1(y))


class SoftAttn(nn.Module):
    """Soft attention (Sec. 3.1 I): ``sigmoid(ConvBlock(C,C,1)(S * C))``, a map of
    the same shape as the input (B,C,H,W)."""

    def __init__(self, in_channels: int, reduction: int = 16):
        super().__init__()
        self.spatial_attn = SpatialAttn()
        self.channel_attn = ChannelAttn(in_channels, reduction)
        self.conv = ConvBlock(in_channels, in_channels, 1)

    def forward(self, x):
        y = self.spatial_attn(x) * self.channel_attn(x)
        return torch.sigmoid(self.conv(y))


def _region_centres(num_regions: int) -> List[float]:
    """Vertical centres of ``num_regions`` equal horizontal stripes in [-1, 1]."""
    return [-1.0 + (2 * i + 1) / num_regions for i in range(num_regions)]


def hard_attn_init_bias(num_regions: int = 4) -> torch.Tensor:
    """The HardAttn bias at initialisation, laid out (t_x, t_y) per region;
    (0, -0.75, 0, -0.25, 0, 0.25, 0, 0.75) for 4 regions."""
    bias = torch.zeros(num_regions, 2)
    bias[:, 1] = torch.tensor(_region_centres(num_regions))
    return bias.flatten()


class HardAttn(nn.Module):
    """Hard regional attention (Sec. 3.1 II): GAP -> Linear(C, 2T) -> tanh ->
    theta (B, T, 2) holding the translations (t_x, t_y) of the T regions.

    With ``learn=False`` there is no Linear and theta is the constant initial
    value ``tanh(hard_attn_init_bias(T))`` for every sample.
    """

    def __init__(self, in_channels: int, num_regions: int = 4, learn: bool = True):
        super().__init__()
        self.num_regions = num_regions
        self.learn = learn
        if learn:
            self.fc = nn.Linear(in_channels, 2 * num_regions)
        else:
            self.fc = None
            self.register_buffer("fixed_theta", torch.tanh(hard_attn_init_bias(num_regions)).view(num_regions, 2))
        self.reset_parameters()

    def reset_parameters(self):
        if self.fc is not None:
            with torch.no_grad():
                self.fc.weight.zero_()
                self.fc.bias.copy_(hard_attn_init_bias(self.num_regions))

    def forward(self, x):
        if self.fc is None:
            return self.fixed_theta.unsqueeze(0).expand(x.size(0), -1, -1)
        y = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return torch.tanh(self.fc(y)).view(x.size(0), self.num_regions, 2)


class HarmAttn(nn.Module):
    """Harmonious Attention module (Fig. 3): returns ``(soft map (B,C,H,W),
    theta (B,T,2))``; theta is ``None`` when built with ``hard=False``."""

    def __init__(self, in_channels: int, num_regions: int = 4, reduction: int = 16,
                 hard: bool = True, learn_region: bool = True):
        super().__init__()
        self.soft_attn = SoftAttn(in_channels, reduction)
        self.hard_attn = HardAttn(in_channels, num_regions, learn_region) if hard else None

    def forward(self, x) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        soft = self.soft_attn(x)
        theta = self.hard_attn(x) if self.hard_attn is not None else None
        return soft, theta


# --------------------------------------------------------------------------- #
# Network
# --------------------------------------------------------------------------- #
def check_input_size(height: int, width: int, what: str = "input") -> None:
    if (int(height), int(width)) != INPUT_SIZE:
        raise ValueError(
            f"HA-CNN cannot take a {what} of size {int(height)}x{int(width)} (HxW): it accepts exactly "
            f"{INPUT_SIZE[0]}x{INPUT_SIZE[1]}, because the hard-attention region crops of the local branch "
            f"have fixed sizes {list(LOCAL_CROP_SIZES)} tied to a 160x64 input. Resize the images to 160x64 "
            f"(cfg.INPUT.SIZE_TRAIN = cfg.INPUT.SIZE_TEST = [160, 64])."
        )


class HACNN(nn.Module):
    """HA-CNN feature extractor (Fig. 2).

    ``forward(x)`` with ``x`` normalised images (B, 3, 160, 64) returns a dict:

    * ``global``: (B, feat_dim) global feature (Linear + BN1d + ReLU output);
    * ``local``: (B, feat_dim) local feature, or ``None`` if ``use_local=False``.

    With ``return_attention=True`` it also holds, for visualisation/debugging:

    * ``soft_attn``: list of 3 soft maps (B, C_l, H_l, W_l);
    * ``theta``: list of 3 region translations (B, T, 2), or ``None`` entries;
    * ``stages``: [stem (B,32,80,32), block1 (B,128,40,16),
      block2 (B,256,20,8), block3 (B,384,10,4)] (blocks after soft attention);
    * ``local_stages``: the local stream's maps per block, each a list of T
      tensors ((B,128,12,14), (B,256,6,7), (B,384,3,4)); empty if no local branch.
    """

    def __init__(
        self,
        channels: Sequence[int] = (128, 256, 384),
        feat_dim: int = 512,
        num_regions: int = 4,
        learn_region: bool = True,
        use_local: bool = True,
        reduction: int = 16,
    ):
        super().__init__()
        channels = [int(c) for c in channels]
        if len(channels) != 3:
            raise ValueError(f"HA-CNN has three blocks: channels must have 3 entries, got {channels}")
        if num_regions < 1:
            raise ValueError(f"num_regions must be >= 1, got {num_regions}")
        self.channels = channels
        self.feat_dim = int(feat_dim)
        self.num_regions = int(num_regions)
        self.learn_region = bool(learn_region)
        self.use_local = bool(use_local)

        self.conv = ConvBlock(3, 32, 3, stride=2, padding=1)
        in_chs = [32] + channels[:-1]
        self.inception1 = nn.Sequential(InceptionA(in_chs[0], channels[0]), InceptionB(channels[0], channels[0]))
        self.inception2 = nn.Sequential(InceptionA(in_chs[1], channels[1]), InceptionB(channels[1], channels[1]))
        self.inception3 = nn.Sequential(InceptionA(in_chs[2], channels[2]), InceptionB(channels[2], channels[2]))
        harm = dict(num_regions=num_regions, reduction=reduction, hard=use_local, learn_region=learn_region)
        self.ha1 = HarmAttn(channels[0], **harm)
        self.ha2 = HarmAttn(channels[1], **harm)
        self.ha3 = HarmAttn(channels[2], **harm)

        self.fc_global = nn.Sequential(
            nn.Linear(channels[2], feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True)
        )

        if use_local:
            # fixed affine part [[s_w, 0], [0, s_h]] shared by all regions
            self.register_buffer(
                "region_scale", torch.tensor([[1.0, 0.0], [0.0, 1.0 / num_regions]]), persistent=False
            )
            self.local_conv1 = InceptionB(32, channels[0])
            self.local_conv2 = InceptionB(channels[0], channels[1])
            self.local_conv3 = InceptionB(channels[1], channels[2])
            self.fc_local = nn.Sequential(
                nn.Linear(channels[2] * num_regions, feat_dim), nn.BatchNorm1d(feat_dim), nn.ReLU(inplace=True)
            )
        else:
            self.local_conv1 = self.local_conv2 = self.local_conv3 = self.fc_local = None

        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, HardAttn):
                m.reset_parameters()

    @property
    def out_dim(self) -> int:
        """Dimension of the test feature (global + local when the local branch exists)."""
        return self.feat_dim * (2 if self.use_local else 1)

    def sample_regions(self, x: torch.Tensor, theta: torch.Tensor, size: Tuple[int, int]) -> List[torch.Tensor]:
        """Sample the T regions of ``x`` (B,C,H,W) given translations ``theta``
        (B,T,2) with the affine matrices ``[[1, 0, t_x], [0, 1/T, t_y]]``;
        each region is returned at ``size`` = (h, w): T tensors (B,C,h,w)."""
        b, c = x.shape[:2]
        scale = self.region_scale.to(dtype=x.dtype).unsqueeze(0).expand(b, 2, 2)
        out = []
        for i in range(self.num_regions):
            affine = torch.cat([scale, theta[:, i, :].to(x.dtype).unsqueeze(-1)], dim=2)  # (B,2,3)
            grid = F.affine_grid(affine, [b, c, size[0], size[1]], align_corners=False)
            out.append(F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))
        return out

    def forward(self, x: torch.Tensor, return_attention: bool = False) -> Dict[str, object]:
        if x.dim() != 4 or x.size(1) != 3:
            raise ValueError(f"HA-CNN expects images of shape (B, 3, 160, 64), got {tuple(x.shape)}")
        check_input_size(x.size(2), x.size(3))

        stem = self.conv(x)
        blocks = (self.inception1, self.inception2, self.inception3)
        attns = (self.ha1, self.ha2, self.ha3)
        local_convs = (self.local_conv1, self.local_conv2, self.local_conv3)

        stages, softs, thetas, local_stages = [stem], [], [], []
        prev = stem  # input of the current block (global branch)
        local_prev = None  # local stream maps of the previous block (T tensors)
        for l in range(3):
            y = blocks[l](prev)
            soft, theta = attns[l](y)
            out = y * soft
            softs.append(soft)
            thetas.append(theta)
            if self.use_local:
                # regions of block l are sampled from the block input (cross-attention interaction)
                regions = self.sample_regions(prev, theta, LOCAL_CROP_SIZES[l])
                if local_prev is not None:
                    regions = [r + p for r, p in zip(regions, local_prev)]
                local_prev = [local_convs[l](r) for r in regions]
                local_stages.append(local_prev)
            stages.append(out)
            prev = out

        f_global = self.fc_global(F.adaptive_avg_pool2d(prev, 1).flatten(1))
        f_local = None
        if self.use_local:
            pooled = [F.adaptive_avg_pool2d(r, 1).flatten(1) for r in local_prev]
            f_local = self.fc_local(torch.cat(pooled, dim=1))

        result: Dict[str, object] = {"global": f_global, "local": f_local}
        if return_attention:
            result.update(soft_attn=softs, theta=thetas, stages=stages, local_stages=local_stages)
        return result


def _hacnn_cfg(cfg):
    """``cfg.MODEL.HACNN`` (defaults live in :mod:`fastreid_ext.config`)."""
    if "HACNN" not in cfg.MODEL:
        raise KeyError("cfg.MODEL.HACNN is missing: build the config with "
                       "fastreid_ext.config.get_ext_cfg() or add_ext_config(cfg)")
    return cfg.MODEL.HACNN


def _check_cfg_input_sizes(cfg) -> None:
    inp = getattr(cfg, "INPUT", None)
    if inp is None:
        return
    for key in ("SIZE_TRAIN", "SIZE_TEST"):
        size = inp.get(key, None) if hasattr(inp, "get") else None
        if size is None:
            continue
        size = list(size)
        if len(size) != 2:
            raise ValueError(f"cfg.INPUT.{key} must be [H, W], got {size}")
        check_input_size(size[0], size[1], what=f"cfg.INPUT.{key}")


@BACKBONE_REGISTRY.register()
def build_hacnn_backbone(cfg) -> HACNN:
    """Build :class:`HACNN` from ``cfg.MODEL.HACNN`` (keys and defaults in
    :mod:`fastreid_ext.config`). Raises ``ValueError`` if ``cfg.INPUT.SIZE_TRAIN``/``SIZE_TEST``
    is not [160, 64].
    """
    _check_cfg_input_sizes(cfg)
    h = _hacnn_cfg(cfg)
    return HACNN(channels=h.CHANNELS, feat_dim=h.FEAT_DIM, num_regions=h.NUM_REGIONS,
                 learn_region=h.LEARN_REGION, use_local=h.USE_LOCAL, reduction=h.REDUCTION)

"""Building blocks of NPSM, the Neural Person Search Machine (Liu et al., "Neural Person Search Machines",
ICCV 2017; seed 004 is a short Chinese summary, details are thin and the choices below are ours).

NPSM searches a frame for the query person by shrinking a region of interest step by step. At step
t the Conv-LSTM, whose gates also see the query's feature, reads the current region's ROI-pooled
"primitive memory" (early ResNet layers) and gives a K x K attention map (a 2-D softmax); the
proposals inside the region are grouped by their centres into sub-regions, and the sub-region with
the highest mean attention (the paper; our default: the most attention mass) becomes the next region.
The last region's feature (late ResNet layers) is the person's.

* :class:`QueryConvLSTMCell`: a Conv-LSTM cell (Shi et al., 2015) whose input, forget, output and
  cell gates get, besides the convolutions of x_t and h_{t-1}, a linear map of the query feature q
  broadcast over the map: ``gates = W_x * x_t + W_h * h_{t-1} + (W_q q) 1^T + b``.
* :func:`spatial_softmax`: the attention map, a softmax over all K x K cells.
* :func:`cluster_subregions`: proposals whose centre lies in the region and which cover at most 80 %
  of it, k-means on their centres (``n`` clusters, deterministic init: the centres farthest apart,
  Lloyd iterations), each sub-region = the union box of its cluster **clipped to the region**, so
  every step's region lies inside the previous one (the paper's shrinkage; tested).
* :func:`region_proposals`: the final step's candidates, the proposals themselves (clusters of one) whose
  centres lie in the region, clipped to it (our choice; see :mod:`fastreid_ext.modeling.meta_arch.npsm`).
* :func:`region_attention`: mean attention (or attention mass) inside each sub-region, the K x K map laid
  over the region.
* :func:`box_outside_fraction`: the fraction of the ground-truth box a region leaves outside, what the
  registered ``BoxInsideLoss`` (:mod:`fastreid_ext.modeling.losses.search`) takes in expectation over
  the sub-regions.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["QueryConvLSTMCell", "spatial_softmax", "cluster_subregions", "region_proposals", "region_attention",
           "soft_iou", "cell_coverage", "box_attention_kl", "box_outside_fraction"]


class QueryConvLSTMCell(nn.Module):
    """Conv-LSTM cell with query-conditioned gates (module docstring). ``forward(x, state, q)`` with x
    (B, C_in, K, K), state (h, c) each (B, C_h, K, K) or None (zeros), q (B, D_q) -> (h, c)."""

    def __init__(self, in_channels: int, hidden_channels: int, query_dim: int, kernel_size: int = 3):
        super().__init__()
        p = kernel_size // 2
        self.hidden_channels = int(hidden_channels)
        self.conv_x = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=p)
        self.conv_h = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=p, bias=False)
        self.query = nn.Linear(query_dim, 4 * hidden_channels, bias=False)
        with torch.no_grad():  # forget-gate bias 1: remember by default at the start of training
            self.conv_x.bias.zero_()
            self.conv_x.bias[hidden_channels:2 * hidden_channels] = 1.0

    def forward(self, x: torch.Tensor, state, q: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        b, _, kh, kw = x.shape
        if state is None:
            h = x.new_zeros(b, self.hidden_channels, kh, kw)
            c = x.new_zeros(b, self.hidden_channels, kh, kw)
        else:
            h, c = state
        gates = self.conv_x(x) + self.conv_h(h) + self.query(q)[:, :, None, None]
        i, f, o, g = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


def spatial_softmax(logits: torch.Tensor) -> torch.Tensor:
    """(B, K, K) attention logits -> a distribution over the K x K cells of each map."""
    b, kh, kw = logits.shape
    return logits.reshape(b, -1).softmax(dim=1).reshape(b, kh, kw)


def _kmeans_centres(points: torch.Tensor, n: int, iters: int = 10) -> torch.Tensor:
    """Cluster index of each point (P, 2): farthest-point init from the first point, Lloyd iterations."""
    centres = [points[0]]
    for _ in range(1, n):
        d = torch.cdist(points, torch.stack(centres)).min(dim=1).values
        centres.append(points[int(d.argmax())])
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(points, c).argmin(dim=1)
        new = torch.stack([points[assign == k].mean(0) if (assign == k).any() else c[k] for k in range(len(c))])
        if torch.allclose(new, c):
            break
        c = new
    return torch.cdist(points, c).argmin(dim=1)


def cluster_subregions(proposals: torch.Tensor, region: torch.Tensor, n: int = 4,
                       max_area_fraction: float = 0.8) -> torch.Tensor:
    """Sub-regions of ``region`` (4,) x1y1x2y2 from the ``proposals`` (P, 4) whose centres lie in it:
    (M, 4), M <= n, each inside ``region``. Proposals covering more than ``max_area_fraction`` of the
    region take no part (they cannot shrink it, and one of them in a cluster would make its union the
    whole region). No proposal left: the region itself (M = 1)."""
    region = region.reshape(4).to(torch.float32)
    p = proposals.reshape(-1, 4).to(torch.float32)
    ctr = (p[:, :2] + p[:, 2:]) / 2
    inside = (ctr[:, 0] >= region[0]) & (ctr[:, 0] <= region[2]) & (ctr[:, 1] >= region[1]) & (ctr[:, 1] <= region[3])
    region_area = (region[2] - region[0]) * (region[3] - region[1])
    inside &= (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1]) <= max_area_fraction * region_area
    p, ctr = p[inside], ctr[inside]
    if not len(p):
        return region[None].clone()
    k = min(int(n), len(p))
    assign = _kmeans_centres(ctr, k) if k > 1 else torch.zeros(len(p), dtype=torch.long)
    subs = []
    for j in range(k):
        m = assign == j
        if not m.any():
            continue
        q = p[m]
        box = torch.stack([q[:, 0].min(), q[:, 1].min(), q[:, 2].max(), q[:, 3].max()])
        box = torch.stack([box[0].clamp(region[0], region[2]), box[1].clamp(region[1], region[3]),
                           box[2].clamp(region[0], region[2]), box[3].clamp(region[1], region[3])])
        if box[2] > box[0] and box[3] > box[1]:
            subs.append(box)
    return torch.stack(subs) if subs else region[None].clone()


def region_proposals(proposals: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """The proposals whose centres lie in ``region``, clipped to it and de-duplicated: (M, 4), each inside
    ``region`` (the final step's candidates: clusters of one). None left: the region itself."""
    region = region.reshape(4).to(torch.float32)
    p = proposals.reshape(-1, 4).to(torch.float32)
    ctr = (p[:, :2] + p[:, 2:]) / 2
    inside = (ctr[:, 0] >= region[0]) & (ctr[:, 0] <= region[2]) & (ctr[:, 1] >= region[1]) & (ctr[:, 1] <= region[3])
    p = p[inside]
    if not len(p):
        return region[None].clone()
    p = torch.stack([p[:, 0].clamp(region[0], region[2]), p[:, 1].clamp(region[1], region[3]),
                     p[:, 2].clamp(region[0], region[2]), p[:, 3].clamp(region[1], region[3])], dim=1)
    p = p[(p[:, 2] > p[:, 0]) & (p[:, 3] > p[:, 1])]
    return torch.unique(p, dim=0) if len(p) else region[None].clone()


def region_attention(attention: torch.Tensor, region: torch.Tensor, subregions: torch.Tensor,
                     reduce: str = "mean") -> torch.Tensor:
    """Attention inside each sub-region (M,), the (K, K) ``attention`` map laid over ``region`` (cell (i, j)
    covers the region's i-th row band and j-th column band; a cell counts by the fraction of it the
    sub-region covers): its mean (``reduce="mean"``, the paper's score) or its mass (``"sum"``: the share of
    the attention the sub-region keeps)."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"region_attention: reduce is {reduce!r}; use 'mean' or 'sum'")
    kh, kw = attention.shape[-2:]
    s = subregions.reshape(-1, 4).to(attention.device, torch.float32)
    w = cell_coverage(region.reshape(1, 4).to(s).expand(len(s), 4), s, kh, kw).to(attention.dtype)  # (M, kh, kw)
    mass = (w * attention.reshape(1, kh, kw)).sum(dim=(1, 2))
    return mass if reduce == "sum" else mass / w.sum(dim=(1, 2)).clamp_min(1e-12)


def soft_iou(attention: torch.Tensor, region: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(M,): the IoU of each of ``boxes`` with the person the (K, K) ``attention`` over ``region`` points
    at, read as a soft mask: with ``m`` = the attention mass inside a box and ``G`` = the attention's
    effective area (``cell area / sum(a^2)``: n cells for attention spread evenly over n cells),
    ``IoU = m G / (|box| + G - m G)``. Exact when the attention is uniform over the person's box; unlike the
    mean attention it does not favour the smallest box at the peak (our final-step score)."""
    kh, kw = attention.shape[-2:]
    r = region.reshape(4).to(attention.device, attention.dtype)
    b = boxes.reshape(-1, 4).to(attention.device, attention.dtype)
    cover = cell_coverage(r.expand(len(b), 4), b, kh, kw).to(attention.dtype)  # (M, kh, kw)
    m = (cover * attention.reshape(1, kh, kw)).sum(dim=(1, 2))
    cell = (r[2] - r[0]) * (r[3] - r[1]) / (kh * kw)
    g = cell / (attention.reshape(-1) ** 2).sum().clamp_min(1e-12)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return m * g / (area + g - m * g).clamp_min(1e-12)


def cell_coverage(regions: torch.Tensor, boxes: torch.Tensor, kh: int, kw: int) -> torch.Tensor:
    """(P, kh, kw): the fraction of each cell of region ``regions[p]`` (split into kh x kw cells) that
    ``boxes[p]`` covers. ``(attention * cell_coverage).sum()`` = the attention mass on the box's pixels."""
    r = regions.reshape(-1, 4).to(torch.float32)
    b = boxes.reshape(-1, 4).to(r)
    t = torch.linspace(0, 1, kw + 1, device=r.device)
    xs = r[:, 0:1] + (r[:, 2:3] - r[:, 0:1]) * t  # (P, kw + 1)
    t = torch.linspace(0, 1, kh + 1, device=r.device)
    ys = r[:, 1:2] + (r[:, 3:4] - r[:, 1:2]) * t
    cov_x = (torch.minimum(xs[:, 1:], b[:, 2:3]) - torch.maximum(xs[:, :-1], b[:, 0:1])).clamp(min=0) \
        / (xs[:, 1:] - xs[:, :-1]).clamp_min(1e-12)
    cov_y = (torch.minimum(ys[:, 1:], b[:, 3:4]) - torch.maximum(ys[:, :-1], b[:, 1:2])).clamp(min=0) \
        / (ys[:, 1:] - ys[:, :-1]).clamp_min(1e-12)
    return cov_y[:, :, None] * cov_x[:, None, :]


def box_attention_kl(attention: torch.Tensor, regions: torch.Tensor, boxes: torch.Tensor):
    """``(KL(u || a), valid)`` per row: ``a`` = the (P, K, K) attention over ``regions`` (P, 4), ``u`` = the
    uniform distribution over the part of ``boxes`` (P, 4) inside the region (cells weighted by the
    fraction covered). 0 when the attention covers the box evenly; ``valid`` = the box meets the region."""
    kh, kw = attention.shape[-2:]
    cover = cell_coverage(regions, boxes, kh, kw).to(attention)
    mass = cover.sum(dim=(1, 2))
    u = cover / mass[:, None, None].clamp_min(1e-12)
    kl = (u * (torch.log(u.clamp_min(1e-12)) - torch.log(attention.clamp_min(1e-12)))).sum(dim=(1, 2))
    return kl, mass > 0


def box_outside_fraction(regions: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Fraction of ``box`` (4,) left outside each region (R, 4): 0 when the region contains it, 1 when
    they do not overlap."""
    r = regions.reshape(-1, 4).to(torch.float32)
    b = box.reshape(4).to(torch.float32)
    iw = (torch.minimum(r[:, 2], b[2]) - torch.maximum(r[:, 0], b[0])).clamp(min=0)
    ih = (torch.minimum(r[:, 3], b[3]) - torch.maximum(r[:, 1], b[1])).clamp(min=0)
    area = ((b[2] - b[0]) * (b[3] - b[1])).clamp_min(1e-12)
    return 1 - iw * ih / area

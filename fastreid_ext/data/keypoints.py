"""Per-image COCO-17 keypoints on the torch side: geometric augmentation that keeps them aligned, heatmaps.

The names, flip pairs and the keypoint file format (reader and writer) are the torch-free contract
:mod:`fastreid_ext.data.coco_keypoints`; :mod:`fastreid_ext.data.dataset_keypoints` attaches the
files' keypoints to the items of any registered dataset. Keypoints are pixel coordinates of the
stored crop, visibility 0 (unlabelled/outside), 1 (occluded), 2 (visible).

Training augmentation moves pixels, so it must move keypoints too: :class:`KeypointTransform`
does FastReID's geometric steps itself (resize, pad + random crop, horizontal flip with the
left/right keypoint swap) and then runs FastReID's own photometric pipeline (colour jitter,
ToTensor) on the image, and random erasing itself (an erased joint is masked, heatmap pixels under
the erased rectangle are blanked). Options it cannot follow (random resized crop, affine,
AutoAugment, AugMix, random patch) are refused with a clear error instead of producing misaligned
targets.
"""

from __future__ import annotations

import random
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

# one definition (torch-free contract module); re-exported for existing callers
from .coco_keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS, FLIP_INDEX, read_coco_keypoints

__all__ = ["COCO_FLIP_PAIRS", "COCO_KEYPOINTS", "FLIP_INDEX", "KeypointSample", "KeypointTransform", "erase_maps",
           "flip_keypoints", "load_coco_keypoints", "render_heatmaps"]


def load_coco_keypoints(path: str) -> dict[str, np.ndarray]:
    """``{file_name: (17, 3) float32 array}`` of a keypoint file (:func:`.coco_keypoints.read_coco_keypoints`)."""
    return read_coco_keypoints(path).keypoints


def flip_keypoints(kpts: np.ndarray, width: float) -> np.ndarray:
    """Mirror keypoints horizontally in an image of ``width`` pixels and swap left/right joints."""
    out = kpts[FLIP_INDEX].copy()
    vis = out[:, 2] > 0
    out[vis, 0] = width - 1 - out[vis, 0]
    return out


def render_heatmaps(kpts: np.ndarray, image_size, heatmap_size, sigma: float = 2.0) -> torch.Tensor:
    """(17, h, w) Gaussian heatmaps (peak 1) for keypoints given in ``image_size`` (H, W) pixels.

    Keypoints with visibility 0, or whose centre falls outside the heatmap, give an all-zero map
    (MSRA / mmpose convention).
    """
    H, W = image_size
    h, w = heatmap_size
    sx, sy = w / W, h / H
    ys = torch.arange(h, dtype=torch.float32).view(h, 1)
    xs = torch.arange(w, dtype=torch.float32).view(1, w)
    maps = torch.zeros(len(kpts), h, w)
    for j, (x, y, v) in enumerate(kpts):
        if v <= 0:
            continue
        cx, cy = (x + 0.5) * sx - 0.5, (y + 0.5) * sy - 0.5
        if not (-0.5 <= cx <= w - 0.5 and -0.5 <= cy <= h - 0.5):
            continue
        maps[j] = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2))
    return maps


class KeypointTransform:
    """Joint (image, keypoints[, maps]) training/test transform built from a FastReID config.

    Geometric steps in FastReID's order: resize to INPUT.SIZE_TRAIN, pad + random crop
    (INPUT.PADDING), horizontal flip (INPUT.FLIP); then FastReID's photometric transforms (colour
    jitter, ToTensor); then random erasing (INPUT.REA, FastReID's parameters: torchvision's
    ``RandomErasing`` with its default scale/ratio), done here so that it can follow the pixels.

    ``__call__(img, kpts, maps=None)`` returns a :class:`KeypointSample`: the image tensor, the
    keypoints in the output image's pixels, the optional ``maps`` ((C, h, w) float tensor covering the
    stored image, e.g. a pose model's heatmaps resampled to the crop) moved by the same resize / pad /
    crop / flip (flip also swaps the left/right channels when C = 17), on the output image's grid,
    and the erased rectangles. A keypoint whose pixel is erased gets visibility 0 (its target is
    masked out: the pixels no longer show the joint); :func:`erase_maps` blanks the heatmap pixels
    under the erased rectangles.
    """

    UNSUPPORTED = ("CROP", "AFFINE", "AUTOAUG", "AUGMIX", "RPT")

    def __init__(self, cfg, is_train: bool):
        from .. import compat

        compat.apply()  # before the fastreid.data import
        from fastreid.data.transforms import build_transforms

        self.is_train = is_train
        size = cfg.INPUT.SIZE_TRAIN if is_train else cfg.INPUT.SIZE_TEST
        self.size = (int(size[0]), int(size[1]))
        self.erase_prob, self.erase_value = 0.0, 0.0
        if is_train:
            bad = [k for k in self.UNSUPPORTED if cfg.INPUT[k].ENABLED]
            if bad:
                raise ValueError("keypoint/heatmap fields cannot follow INPUT." + ", INPUT.".join(bad) +
                                 ".ENABLED; disable them or drop 'keypoints'/'heatmaps' from INPUT.EXTRA_FIELDS")
            self.flip_prob = cfg.INPUT.FLIP.PROB if cfg.INPUT.FLIP.ENABLED else 0.0
            self.pad = cfg.INPUT.PADDING.SIZE if cfg.INPUT.PADDING.ENABLED else 0
            self.pad_mode = cfg.INPUT.PADDING.MODE
            if cfg.INPUT.REA.ENABLED:
                self.erase_prob = float(cfg.INPUT.REA.PROB)
                self.erase_value = [float(v) for v in cfg.INPUT.REA.VALUE]
            rest = cfg.clone()
            rest.defrost()
            rest.INPUT.FLIP.ENABLED = False
            rest.INPUT.PADDING.ENABLED = False
            rest.INPUT.REA.ENABLED = False
            self.photometric = build_transforms(rest, is_train=True)  # its Resize is now a no-op
        else:
            self.flip_prob, self.pad = 0.0, 0
            self.photometric = build_transforms(cfg, is_train=False)

    def __call__(self, img: Image.Image, kpts: np.ndarray, maps: torch.Tensor | None = None) -> "KeypointSample":
        import torch.nn.functional as F
        import torchvision.transforms.functional as TF

        H, W = self.size
        kp = kpts.astype(np.float32).copy()
        sx, sy = W / img.width, H / img.height
        vis = kp[:, 2] > 0
        kp[vis, 0] = (kp[vis, 0] + 0.5) * sx - 0.5
        kp[vis, 1] = (kp[vis, 1] + 0.5) * sy - 0.5
        img = img.resize((W, H), Image.BICUBIC)
        if maps is not None:  # the maps cover the stored image: bring them onto the output grid
            maps = F.interpolate(maps[None].float(), size=(H, W), mode="bilinear", align_corners=False)[0]
        if self.pad:
            img = TF.pad(img, self.pad, padding_mode=self.pad_mode)
            top, left = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
            img = TF.crop(img, top, left, H, W)
            kp[vis, 0] += self.pad - left
            kp[vis, 1] += self.pad - top
            out = vis & ((kp[:, 0] < -0.5) | (kp[:, 0] > W - 0.5) | (kp[:, 1] < -0.5) | (kp[:, 1] > H - 0.5))
            kp[out] = 0.0
            if maps is not None:  # zero padding: no joint evidence outside the image
                maps = F.pad(maps, (self.pad,) * 4)[:, top:top + H, left:left + W]
        if self.flip_prob and random.random() < self.flip_prob:
            img = TF.hflip(img)
            kp = flip_keypoints(kp, W)
            if maps is not None:
                maps = maps.flip(-1)
                if maps.shape[0] == len(FLIP_INDEX):
                    maps = maps[list(FLIP_INDEX)]
        tensor = self.photometric(img)
        erased = []
        if self.erase_prob and random.random() < self.erase_prob:
            import torchvision.transforms as T

            i, j, h, w, v = T.RandomErasing.get_params(tensor, scale=(0.02, 0.33), ratio=(0.3, 3.3),
                                                       value=self.erase_value)
            tensor = TF.erase(tensor, i, j, h, w, v)
            erased.append((i, j, h, w))
            px, py = np.floor(kp[:, 0] + 0.5), np.floor(kp[:, 1] + 0.5)
            hit = (kp[:, 2] > 0) & (px >= j) & (px < j + w) & (py >= i) & (py < i + h)
            kp[hit] = 0.0
            if maps is not None:
                maps = erase_maps(maps, erased, (H, W))
        return KeypointSample(tensor, kp, maps, tuple(erased))


class KeypointSample(NamedTuple):
    """Output of :class:`KeypointTransform`: image tensor, (17, 3) keypoints in its pixels, the moved
    maps (or None) and the erased rectangles ``(top, left, height, width)`` in its pixels."""

    image: torch.Tensor
    keypoints: np.ndarray
    maps: torch.Tensor | None
    erased: tuple


def erase_maps(maps: torch.Tensor, erased, image_size) -> torch.Tensor:
    """``maps`` (C, h, w) on a grid covering an image of ``image_size`` (H, W), with the cells whose
    centre lies in an erased rectangle ``(top, left, height, width)`` (image pixels) set to 0."""
    if not erased:
        return maps
    H, W = image_size
    h, w = maps.shape[-2:]
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) * (H / h) - 0.5
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) * (W / w) - 0.5
    keep = torch.ones(h, w, dtype=torch.bool)
    for i, j, eh, ew in erased:
        inside_y = (ys >= i - 0.5) & (ys < i + eh - 0.5)
        inside_x = (xs >= j - 0.5) & (xs < j + ew - 0.5)
        keep &= ~(inside_y[:, None] & inside_x[None, :])
    return maps * keep

"""Per-image COCO-17 keypoints on the torch side: geometric augmentation that keeps them aligned, heatmaps.

The names, flip pairs and the keypoint file format (reader and writer) are the torch-free contract
:mod:`fastreid_ext.data.coco_keypoints`; :mod:`fastreid_ext.data.dataset_keypoints` attaches the
files' keypoints to the items of any registered dataset. Keypoints are pixel coordinates of the
stored crop, visibility 0 (unlabelled/outside), 1 (occluded), 2 (visible).

Training augmentation moves pixels, so it must move keypoints too: :class:`KeypointTransform`
does FastReID's geometric steps itself (resize, pad + random crop, horizontal flip with the
left/right keypoint swap) and then runs FastReID's own photometric pipeline (colour jitter,
ToTensor, random erasing) on the image. Geometric options it cannot follow (random resized crop,
affine, AutoAugment, AugMix) are refused with a clear error instead of producing misaligned targets.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from PIL import Image

# one definition (torch-free contract module); re-exported for existing callers
from .coco_keypoints import COCO_FLIP_PAIRS, COCO_KEYPOINTS, FLIP_INDEX, read_coco_keypoints

__all__ = ["COCO_FLIP_PAIRS", "COCO_KEYPOINTS", "FLIP_INDEX", "KeypointTransform", "flip_keypoints",
           "load_coco_keypoints", "render_heatmaps"]


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
    """Joint (image, keypoints) training/test transform built from a FastReID config.

    Geometric steps in FastReID's order: resize to INPUT.SIZE_TRAIN, pad + random crop
    (INPUT.PADDING), horizontal flip (INPUT.FLIP); then FastReID's photometric transforms.
    Returns ``(image_tensor, keypoints)`` with keypoints in the output image's pixels.
    """

    UNSUPPORTED = ("CROP", "AFFINE", "AUTOAUG", "AUGMIX")

    def __init__(self, cfg, is_train: bool):
        from .. import compat

        compat.apply()  # before the fastreid.data import
        from fastreid.data.transforms import build_transforms

        self.is_train = is_train
        size = cfg.INPUT.SIZE_TRAIN if is_train else cfg.INPUT.SIZE_TEST
        self.size = (int(size[0]), int(size[1]))
        if is_train:
            bad = [k for k in self.UNSUPPORTED if cfg.INPUT[k].ENABLED]
            if bad:
                raise ValueError("keypoint/heatmap fields cannot follow INPUT." + ", INPUT.".join(bad) +
                                 ".ENABLED; disable them or drop 'keypoints'/'heatmaps' from INPUT.EXTRA_FIELDS")
            self.flip_prob = cfg.INPUT.FLIP.PROB if cfg.INPUT.FLIP.ENABLED else 0.0
            self.pad = cfg.INPUT.PADDING.SIZE if cfg.INPUT.PADDING.ENABLED else 0
            self.pad_mode = cfg.INPUT.PADDING.MODE
            rest = cfg.clone()
            rest.defrost()
            rest.INPUT.FLIP.ENABLED = False
            rest.INPUT.PADDING.ENABLED = False
            self.photometric = build_transforms(rest, is_train=True)  # its Resize is now a no-op
        else:
            self.flip_prob, self.pad = 0.0, 0
            self.photometric = build_transforms(cfg, is_train=False)

    def __call__(self, img: Image.Image, kpts: np.ndarray):
        import torchvision.transforms.functional as TF

        H, W = self.size
        kp = kpts.astype(np.float32).copy()
        sx, sy = W / img.width, H / img.height
        vis = kp[:, 2] > 0
        kp[vis, 0] = (kp[vis, 0] + 0.5) * sx - 0.5
        kp[vis, 1] = (kp[vis, 1] + 0.5) * sy - 0.5
        img = img.resize((W, H), Image.BICUBIC)
        if self.pad:
            img = TF.pad(img, self.pad, padding_mode=self.pad_mode)
            top, left = random.randint(0, 2 * self.pad), random.randint(0, 2 * self.pad)
            img = TF.crop(img, top, left, H, W)
            kp[vis, 0] += self.pad - left
            kp[vis, 1] += self.pad - top
            out = vis & ((kp[:, 0] < -0.5) | (kp[:, 0] > W - 0.5) | (kp[:, 1] < -0.5) | (kp[:, 1] > H - 0.5))
            kp[out] = 0.0
        if self.flip_prob and random.random() < self.flip_prob:
            img = TF.hflip(img)
            kp = flip_keypoints(kp, W)
        return self.photometric(img), kp

"""What the runner needs from a pose model, and the pieces both models share.

A :class:`PoseModel` turns re-id crops into COCO-17 keypoints in two steps, so that the runner can
overlap image decoding and preprocessing (thread pool) with inference (main thread):

* :meth:`PoseModel.prepare` (thread-safe, numpy / OpenCV only): one RGB uint8 crop -> a
  :class:`Prepared` sample (the network input plus the affine that maps the model's output back
  to the crop);
* :meth:`PoseModel.predict`: a list of prepared samples -> a :class:`PoseOutput`: per crop 17
  ``(x, y)`` in the crop's pixels (pixel centres at integers, the keypoint contract of
  :mod:`fastreid_ext.data.coco_keypoints`), 17 scores, and optionally the model's own heatmaps
  with, per crop, the 2x3 affine that maps heatmap pixels to crop pixels.

:attr:`PoseModel.identity` is what makes results comparable: the model name, a hash of its weights
file and every setting that changes the output (input size, flip test, margin, ...). The runner
writes it into every file and never mixes results of two identities.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from ..data.coco_keypoints import NUM_KEYPOINTS

__all__ = ["MODEL_NAMES", "PoseModel", "PoseOutput", "Prepared", "build_pose_model", "file_sha256",
           "identity_hash", "to_coco_keypoints"]

#: the models of ``tools/make_keypoints.py --model``
MODEL_NAMES = ("hrnet", "blazepose")


@dataclass
class Prepared:
    """One crop ready for the network: ``input`` (model-specific array), the crop's size and the
    2x3 affine mapping heatmap pixels (u, v) to crop pixels (x, y) (None without heatmaps)."""

    input: Any
    crop_size: tuple  # (height, width)
    affine: Optional[np.ndarray] = None
    meta: dict = field(default_factory=dict)


@dataclass
class PoseOutput:
    """Predictions for a batch of B crops."""

    keypoints: np.ndarray  #: (B, 17, 2) float32, crop pixels
    scores: np.ndarray  #: (B, 17) float32, the model's per-joint confidence
    heatmaps: Optional[np.ndarray] = None  #: (B, 17, h, w) float32, the model's own maps
    affines: Optional[np.ndarray] = None  #: (B, 2, 3) heatmap pixel -> crop pixel


class PoseModel:
    """Interface of the pose models (see the module docstring)."""

    name: str = ""
    #: (h, w) of :attr:`PoseOutput.heatmaps`
    heatmap_size: tuple = (0, 0)
    #: batch size the runner uses unless told otherwise
    default_batch_size: int = 1
    device: str = "cpu"

    @property
    def identity(self) -> dict:
        """Everything that determines the output (JSON-serialisable)."""
        raise NotImplementedError

    def prepare(self, image: np.ndarray) -> Prepared:
        """``image``: (H, W, 3) uint8 RGB crop. Must be thread-safe."""
        raise NotImplementedError

    def predict(self, samples: Sequence[Prepared], heatmaps: bool = False) -> PoseOutput:
        raise NotImplementedError

    def describe(self) -> str:
        """One line for logs and summaries."""
        return f"{self.name} on {self.device}"


def file_sha256(path: str, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file (weights identity)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def identity_hash(identity: dict) -> str:
    """Short stable hash of a model identity (key order does not matter)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def to_coco_keypoints(xy: np.ndarray, scores: np.ndarray, crop_size, threshold: float) -> np.ndarray:
    """(17, 3) x, y, COCO visibility from predictions: 2 (visible) where the score reaches
    ``threshold`` and the point lies inside the crop, else 0 ("not labelled": a training loss
    ignores the joint). The predicted x, y are kept either way; the scores go to the file
    separately, so a user can re-threshold without rerunning the model."""
    h, w = crop_size
    xy = np.asarray(xy, dtype=np.float64).reshape(NUM_KEYPOINTS, 2)
    s = np.asarray(scores, dtype=np.float64).reshape(NUM_KEYPOINTS)
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
    vis = np.where(inside & (s >= threshold), 2.0, 0.0)
    return np.concatenate([xy, vis[:, None]], axis=1)


def build_pose_model(name: str, checkpoint: str = "", device: str = "auto", **kwargs) -> PoseModel:
    """The pose model ``name`` (:data:`MODEL_NAMES`). ``checkpoint``: HRNet weights (``.pth``; empty =
    random init, for tests and pipeline checks only) or a BlazePose ``.tflite`` (empty = the
    installed one). Raises ``ValueError`` / ``FileNotFoundError`` naming what is wrong."""
    if name == "hrnet":
        from .hrnet import HRNetPose

        return HRNetPose(checkpoint or None, device=device, **kwargs)
    if name == "blazepose":
        from .blazepose import BlazePose

        if device not in ("auto", "cpu"):
            raise ValueError(f"--model blazepose runs on the CPU only (LiteRT's XNNPACK), not on '{device}'")
        return BlazePose(checkpoint or None, **kwargs)
    raise ValueError(f"unknown pose model '{name}'; known: {', '.join(MODEL_NAMES)}")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

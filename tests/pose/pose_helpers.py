"""Helpers of the pose tool tests: a fast deterministic stand-in pose model and tiny image folders."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from fastreid_ext.pose.base import PoseModel, PoseOutput, Prepared

HM = (16, 12)  # stub heatmap size (h, w)


class StubPose(PoseModel):
    """Keypoints derived from the image's pixels (so each image gets its own, reproducibly), heatmaps
    with one Gaussian per joint at its keypoint, and a record of every image it was run on.

    ``fail_after``: raise ``KeyboardInterrupt`` (a kill) when that many images have been predicted.
    ``version`` changes the identity (another "model")."""

    name = "stub"
    heatmap_size = HM
    default_batch_size = 3

    def __init__(self, version: int = 1, fail_after: int | None = None, delay: float = 0.0):
        self.version, self.fail_after, self.delay = version, fail_after, delay
        self.seen: list[int] = []  # image fingerprints, one per predicted image
        self._lock = threading.Lock()

    @property
    def identity(self) -> dict:
        return {"model": self.name, "weights_sha256": f"stub-{self.version}", "version": self.version}

    def prepare(self, image: np.ndarray) -> Prepared:
        h, w = image.shape[:2]
        # heatmap pixel (u, v) -> crop pixel: the map covers the crop
        affine = np.array([[w / HM[1], 0.0, 0.5 * w / HM[1] - 0.5], [0.0, h / HM[0], 0.5 * h / HM[0] - 0.5]])
        return Prepared(input=image.astype(np.float32).mean(axis=2), crop_size=(h, w), affine=affine)

    def predict(self, samples, heatmaps: bool = False) -> PoseOutput:
        import time

        if self.delay:
            time.sleep(self.delay)
        kps, scores, maps = [], [], []
        for p in samples:
            with self._lock:
                if self.fail_after is not None and len(self.seen) >= self.fail_after:
                    raise KeyboardInterrupt("simulated kill")
                self.seen.append(int(p.input.sum()))
            h, w = p.crop_size
            rng = np.random.default_rng(int(p.input.sum()) + 7 * self.version)
            xy = np.stack([rng.uniform(0, w - 1, 17), rng.uniform(0, h - 1, 17)], axis=1)
            kps.append(xy)
            scores.append(rng.uniform(0, 1, 17))
            if heatmaps:
                inv = np.linalg.inv(np.vstack([p.affine, [0, 0, 1]]))[:2]
                uv = xy @ inv[:, :2].T + inv[:, 2]
                vs, us = np.mgrid[0:HM[0], 0:HM[1]]
                d2 = (us[None] - uv[:, 0, None, None]) ** 2 + (vs[None] - uv[:, 1, None, None]) ** 2
                maps.append(np.exp(-d2 / 2.0))
        out = PoseOutput(keypoints=np.array(kps, np.float32), scores=np.array(scores, np.float32))
        if heatmaps:
            out.heatmaps = np.array(maps, np.float32)
            out.affines = np.stack([p.affine for p in samples])
        return out


def make_crops(folder: Path, n: int, size=(32, 16), corrupt=()) -> list[str]:
    """``n`` small PNG crops with distinct pixels (names ``img_000.png`` ...); names in ``corrupt``
    are written as truncated files. Returns the names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"img_{i:03d}.png"
        rng = np.random.default_rng(i)
        arr = rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
        if name in corrupt:
            data = (folder / name).read_bytes()
            (folder / name).write_bytes(data[: len(data) // 3])
        names.append(name)
    return names


def fingerprint(path) -> int:
    """What :class:`StubPose` records for an image file."""
    with Image.open(path) as im:
        return int(np.asarray(im.convert("RGB")).astype(np.float32).mean(axis=2).sum())


def env_without_debug() -> dict:
    return {k: v for k, v in os.environ.items() if k != "FASTREID_EXT_DEBUG"}


def tool():
    """``tools/make_keypoints.py`` as a module (its ``main`` / ``argument_parser``), loaded once."""
    import importlib.util
    import sys

    name = "make_keypoints_tool_module"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "tools" / "make_keypoints.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]

"""A pose model's own heatmaps, stored per split, read back in the crop's frame.

``tools/make_keypoints.py --save-heatmaps`` keeps the model's heatmaps (HRNet: 17 x 64 x 48 per crop,
flip-averaged, over the 192x256 network input around the crop) for users who want them as training
targets instead of Gaussians re-rendered from the keypoints.

Format (one pair of files per split folder, next to the keypoint file)
----------------------------------------------------------------------
``<keypoint folder>/heatmaps_<split>.npy``: one float16 array (N, 17, h, w) in numpy's ``.npy``
format, opened memory-mapped (``numpy.load(mmap_mode="r")``): reading one crop's maps touches only
its 17 x h x w x 2 bytes (104 KB for HRNet). float16 keeps 3 significant digits of maps in [0, 1].

``<keypoint folder>/heatmaps_<split>.json``, the index::

    {"format": "fastreid_ext.stored_heatmaps", "version": 1,
     "array": "heatmaps_<split>.npy", "shape": [N, 17, h, w], "dtype": "float16",
     "info": {... which model made it: name, weights hash, settings (the keypoint file's pose_tool) ...},
     "images": [{"file_name": "0002_c1s1_000451_03.jpg", "row": 0, "height": 128, "width": 64,
                 "affine": [[a, b, c], [d, e, f]]}, ...]}

``file_name`` is the image path relative to its split folder (as in the keypoint files);
``affine`` maps heatmap pixel ``(u, v)`` (integer = pixel centre) to crop pixel ``(x, y)`` (integer =
pixel centre): ``x = a u + b v + c``, ``y = d u + e v + f``. The maps are stored as the model made
them, unflipped, left/right in COCO order.

Reading: :meth:`StoredHeatmaps.crop_heatmaps` (or :func:`load_crop_heatmaps`) resamples one image's
maps into the **crop's frame**: a (17, h', w') float tensor whose grid covers exactly the stored crop
(``h' x w'`` cells of ``H / h'`` x ``W / w'`` crop pixels; default half the crop's resolution), so
that the transforms that move the crop's pixels (resize, pad, crop, flip with the left/right swap)
move these maps the same way. Cell ``(i, j)`` samples the stored map (bilinear, 0 outside it) at
the heatmap point whose crop position is the cell centre ``((j + 0.5) W / w' - 0.5, (i + 0.5) H / h'
- 0.5)``: the convention of :func:`fastreid_ext.data.keypoints.render_heatmaps`, so a peak at
keypoint ``(x, y)`` lands where a rendered Gaussian for ``(x, y)`` would.

:func:`heatmap_files_of` names a split's files (same folder rule as the keypoint files,
``DATASETS.KEYPOINTS_DIR``); :func:`locate_stored_heatmaps` finds the index and key of every dataset
item, with errors that name the file and the missing images. The writer (:class:`HeatmapWriter`)
writes to temporary files and moves them into place, so a reader never sees a half-written split.
Everything but :meth:`StoredHeatmaps.crop_heatmaps`' tensor is numpy only.
"""

from __future__ import annotations

import json
import os
import os.path as osp
import uuid
from collections import defaultdict
from typing import Optional, Sequence

import numpy as np

from .coco_keypoints import KEYPOINTS_FOLDER, NUM_KEYPOINTS, normalize_name, read_json
from .dataset_keypoints import _locate, split_folders

__all__ = ["FORMAT", "HeatmapWriter", "StoredHeatmaps", "heatmap_files_of", "load_crop_heatmaps",
           "locate_stored_heatmaps", "resample_to_crop", "write_json_atomic"]

FORMAT = "fastreid_ext.stored_heatmaps"
VERSION = 1


def heatmap_files_of(split_folder: str, keypoints_dir: str = "") -> tuple[str, str]:
    """``(array .npy, index .json)`` of a split folder: ``heatmaps_<split>.npy|json`` in
    ``keypoints_dir`` or, by default, ``<dataset folder>/keypoints/``."""
    folder = keypoints_dir or osp.join(osp.dirname(osp.normpath(split_folder)), KEYPOINTS_FOLDER)
    name = osp.basename(osp.normpath(split_folder))
    return osp.join(folder, f"heatmaps_{name}.npy"), osp.join(folder, f"heatmaps_{name}.json")


def _tmp(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def write_json_atomic(path: str, obj) -> None:
    """``obj`` as JSON at ``path``, through a temporary file and ``os.replace`` (never half-written)."""
    tmp = _tmp(path)
    try:
        with open(tmp, "x") as f:
            json.dump(obj, f)
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class HeatmapWriter:
    """Writes one split's heatmaps (format: module docstring).

    ``HeatmapWriter(index_path, n, size)`` creates the float16 array memory-mapped in a temporary
    file; :meth:`add` puts rows; :meth:`commit` moves array and index into place (array first, index
    last: an index on disk always describes a complete array). :meth:`abort` removes the temporaries.
    """

    def __init__(self, index_path: str, num_images: int, size: Sequence[int], info: Optional[dict] = None,
                 num_joints: int = NUM_KEYPOINTS):
        self.index_path = index_path
        self.array_path = osp.splitext(index_path)[0] + ".npy"
        os.makedirs(osp.dirname(osp.abspath(index_path)), exist_ok=True)
        self.shape = (int(num_images), int(num_joints), int(size[0]), int(size[1]))
        self._tmp_array = _tmp(self.array_path)
        self._array = np.lib.format.open_memmap(self._tmp_array, mode="w+", dtype=np.float16, shape=self.shape)
        self.info = dict(info or {})
        self.images: list[dict] = []

    def add(self, file_name: str, heatmaps: np.ndarray, affine, crop_size) -> None:
        """Row ``len(images)``: ``heatmaps`` (17, h, w), ``affine`` (2, 3) heatmap -> crop pixels,
        ``crop_size`` (height, width) of the stored crop."""
        row = len(self.images)
        if row >= self.shape[0]:
            raise ValueError(f"{self.index_path}: more than the announced {self.shape[0]} images")
        hm = np.asarray(heatmaps)
        if hm.shape != self.shape[1:]:
            raise ValueError(f"{self.index_path}: heatmaps of '{file_name}' have shape {hm.shape}, "
                             f"expected {self.shape[1:]}")
        self._array[row] = hm.astype(np.float16)
        a = np.asarray(affine, dtype=np.float64).reshape(2, 3)
        self.images.append({"file_name": normalize_name(file_name), "row": row, "height": int(crop_size[0]),
                            "width": int(crop_size[1]), "affine": [[float(v) for v in r] for r in a]})

    def commit(self) -> str:
        if len(self.images) != self.shape[0]:
            raise ValueError(f"{self.index_path}: {len(self.images)} of {self.shape[0]} images written")
        self._array.flush()
        del self._array
        os.replace(self._tmp_array, self.array_path)
        write_json_atomic(self.index_path, {
            "format": FORMAT, "version": VERSION, "array": osp.basename(self.array_path), "shape": list(self.shape),
            "dtype": "float16", "info": self.info, "images": self.images})
        return self.index_path

    def abort(self) -> None:
        self._array = None
        if osp.exists(self._tmp_array):
            os.remove(self._tmp_array)


def read_index(index_path: str) -> dict:
    """The index JSON, checked; errors name the file."""
    index = read_json(index_path, "stored heatmap index")
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{index_path} is not a stored heatmap index (format '{FORMAT}')")
    if index.get("version") != VERSION:
        raise ValueError(f"{index_path}: stored heatmap format version {index.get('version')}, this reader "
                         f"knows {VERSION}")
    return index


def resample_to_crop(maps: np.ndarray, affine, crop_size, out_size=None) -> np.ndarray:
    """(K, h', w') float32: ``maps`` (K, h, w) resampled on a grid that covers the crop (see the module
    docstring). ``affine``: heatmap pixel -> crop pixel; ``crop_size``: (H, W); ``out_size``: (h', w'),
    default ``(ceil(H / 2), ceil(W / 2))``."""
    maps = np.asarray(maps, dtype=np.float32)
    K, h, w = maps.shape
    H, W = crop_size
    oh, ow = out_size if out_size is not None else (-(-int(H) // 2), -(-int(W) // 2))
    a = np.asarray(affine, dtype=np.float64).reshape(2, 3)
    inv = np.linalg.inv(np.vstack([a, [0.0, 0.0, 1.0]]))[:2]
    xs = (np.arange(ow) + 0.5) * (W / ow) - 0.5  # cell centres in crop pixels
    ys = (np.arange(oh) + 0.5) * (H / oh) - 0.5
    gx, gy = np.meshgrid(xs, ys)
    u = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
    v = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = (u - u0).astype(np.float32), (v - v0).astype(np.float32)
    out = np.zeros((K, oh, ow), dtype=np.float32)
    for du, dv, wgt in ((0, 0, (1 - fu) * (1 - fv)), (1, 0, fu * (1 - fv)), (0, 1, (1 - fu) * fv), (1, 1, fu * fv)):
        uu, vv = u0 + du, v0 + dv
        ok = (uu >= 0) & (uu < w) & (vv >= 0) & (vv < h)  # 0 outside the stored map
        out[:, ok] += maps[:, vv[ok], uu[ok]] * wgt[ok]
    return out


class StoredHeatmaps:
    """Reader of one split's stored heatmaps (format: module docstring).

    The array is opened memory-mapped on first use (also after pickling into a loader worker, so
    every process maps the file itself). ``keys`` are the image names (paths relative to the split
    folder); :attr:`info` records which model made the maps.
    """

    def __init__(self, index_path: str):
        self.index_path = index_path
        index = read_index(index_path)
        self.info = index.get("info") or {}
        self.shape = tuple(index["shape"])
        self.array_path = osp.join(osp.dirname(index_path), index["array"])
        self._rows = {im["file_name"]: im for im in index["images"]}
        self._array = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_array"] = None
        return state

    @property
    def keys(self) -> list[str]:
        return list(self._rows)

    @property
    def heatmap_size(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

    def __contains__(self, key) -> bool:
        return normalize_name(key) in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def _entry(self, key: str) -> dict:
        entry = self._rows.get(normalize_name(key))
        if entry is None:
            raise KeyError(f"stored heatmaps {self.index_path} have no image '{key}'")
        return entry

    def raw(self, key: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        """``(maps (17, h, w) float16 view, affine (2, 3), crop (H, W))`` of image ``key`` as stored."""
        if self._array is None:
            try:
                self._array = np.load(self.array_path, mmap_mode="r")
            except FileNotFoundError:
                raise FileNotFoundError(f"stored heatmap array not found: {self.array_path} (named by "
                                        f"{self.index_path})") from None
            if tuple(self._array.shape) != self.shape:
                raise ValueError(f"{self.array_path} has shape {tuple(self._array.shape)}, its index "
                                 f"{self.index_path} says {self.shape}")
        e = self._entry(key)
        return self._array[e["row"]], np.asarray(e["affine"], dtype=np.float64), (e["height"], e["width"])

    def crop_heatmaps(self, key: str, size: Optional[Sequence[int]] = None):
        """Heatmaps of image ``key`` in its crop's frame: a float32 torch tensor (17, h', w') whose grid
        covers exactly the stored crop; ``size`` = (h', w'), default half the crop's resolution
        (rounded up). Left/right order as stored (COCO), not flipped."""
        import torch

        maps, affine, crop = self.raw(key)
        return torch.from_numpy(resample_to_crop(maps, affine, crop, tuple(size) if size is not None else None))


_OPEN: dict[str, StoredHeatmaps] = {}


def load_crop_heatmaps(index_path: str, key: str, size: Optional[Sequence[int]] = None):
    """:meth:`StoredHeatmaps.crop_heatmaps` of ``key`` in the split whose index is ``index_path``
    (readers are kept open per index path and process)."""
    reader = _OPEN.get(index_path)
    if reader is None:
        reader = _OPEN[index_path] = StoredHeatmaps(index_path)
    return reader.crop_heatmaps(key, size)


def locate_stored_heatmaps(paths: Sequence[str], dataset=None, keypoints_dir: str = "",
                           name: str = "") -> list[tuple[str, str]]:
    """``(index path, key)`` of the stored heatmaps of each image path, by the matching rule of
    :mod:`fastreid_ext.data.dataset_keypoints` (split folder from ``dataset``'s ``*_dir`` attributes,
    files in ``keypoints_dir`` or ``<dataset folder>/keypoints/``, key = path relative to the split
    folder). Raises ``FileNotFoundError`` for a missing index and ``ValueError`` when images have no
    maps (how many, the first few, the file)."""
    name = name or (type(dataset).__name__ if dataset is not None else "dataset")
    folders = split_folders(dataset) if dataset is not None else []
    groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
    located = [_locate(p, folders) for p in paths]
    out: list = [None] * len(paths)
    for i, (folder, key) in enumerate(located):
        groups[folder].append((i, key))
    for folder, members in groups.items():
        index_path = heatmap_files_of(folder, keypoints_dir)[1]
        if not osp.isfile(index_path):
            raise FileNotFoundError(f"{name}: stored heatmaps not found: {index_path} (for the {len(members)} images "
                                    f"of split folder '{osp.basename(folder)}'); write them with "
                                    "tools/make_keypoints.py --save-heatmaps, or render heatmaps from keypoints")
        keys = {im["file_name"] for im in read_index(index_path)["images"]}
        missing = [k for _, k in members if k not in keys]
        if missing:
            raise ValueError(f"{name}: {len(missing)} of {len(members)} images of split folder "
                             f"'{osp.basename(folder)}' have no stored heatmaps in {index_path} "
                             f"(first: {', '.join(missing[:5])})")
        for i, key in members:
            out[i] = (index_path, key)
    return out

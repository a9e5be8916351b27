"""The per-image keypoint contract: COCO-17 names, flip pairs, and the keypoint file format.

Standard library + numpy only (no torch, no FastReID), so that the synthetic generator and the
offline pose tool can write files that the training side (:mod:`fastreid_ext.data.keypoints`,
:mod:`fastreid_ext.data.dataset_keypoints`) reads, without loading the training stack.

File format (COCO keypoint annotations, one file per split folder)
------------------------------------------------------------------
Location: ``<keypoint folder>/person_keypoints_<split>.json`` where ``<split>`` is the name of the
folder holding the split's images (Market / Duke: ``bounding_box_train``, ``query``,
``bounding_box_test``; MSMT17: ``train``, ``test``) and the keypoint folder is
``<dataset folder>/keypoints/`` (the folder next to the split folders) unless
``DATASETS.KEYPOINTS_DIR`` names another one. Content::

    {"info": {...},                                   # free-form, optional
     "images": [{"id": 1, "file_name": "0002_c1s1_000451_03.jpg", "width": 64, "height": 128}, ...],
     "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                      "keypoints": [x1, y1, v1, ..., x17, y17, v17],     # 51 numbers
                      "keypoint_scores": [s1, ..., s17],                 # optional (pose model output)
                      "num_keypoints": 15, "bbox": [x, y, w, h], "area": ..., "iscrowd": 0}, ...],
     "categories": [{"id": 1, "name": "person", "keypoints": COCO_KEYPOINTS, "skeleton": COCO_SKELETON}]}

* ``file_name`` is the image's path **relative to its split folder**, ``/``-separated: the bare
  file name for flat layouts (Market, Duke, the synthetic sets), ``<pid folder>/<file>`` for
  MSMT17-like layouts. A file that holds only bare names (no ``/``) is also matched to images in
  sub-folders by their base name. Names must be unique within a file.
* ``keypoints``: COCO-17 order (:data:`COCO_KEYPOINTS`), pixel coordinates of the stored crop
  (x right, y down, pixel centres at integers), visibility ``v`` 0 = unlabelled / outside the crop
  (x, y then carry no meaning), 1 = labelled but occluded, 2 = visible.
* ``keypoint_scores`` (mmpose's name): per-joint confidence of a pose model; files written from
  ground truth (the synthetic generator) omit it.
* One annotation (one person) per image; an image listed without an annotation has no keypoints.

:func:`write_coco_keypoints` writes this (atomically) and :func:`read_coco_keypoints` reads it,
with errors that name the file and what is wrong.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

__all__ = [
    "COCO_KEYPOINTS", "COCO_SKELETON", "COCO_FLIP_PAIRS", "FLIP_INDEX", "NUM_KEYPOINTS",
    "KEYPOINTS_FOLDER", "KeypointFile", "KeypointRecord", "keypoint_file_name", "normalize_name",
    "read_coco_keypoints", "write_coco_keypoints",
]

#: COCO-17 keypoint names, in the order of the 17 rows / 51 numbers.
COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_KEYPOINTS = len(COCO_KEYPOINTS)
#: COCO skeleton, 1-based keypoint index pairs (as in the COCO annotation files).
COCO_SKELETON: list[list[int]] = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
    [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
    [4, 6], [5, 7],
]
#: 0-based keypoint index pairs that swap under a horizontal flip.
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
#: index permutation applied on a horizontal flip (left <-> right): ``flipped = kpts[FLIP_INDEX]``.
FLIP_INDEX = np.arange(NUM_KEYPOINTS)
for _a, _b in COCO_FLIP_PAIRS:
    FLIP_INDEX[_a], FLIP_INDEX[_b] = _b, _a
FLIP_INDEX.setflags(write=False)
del _a, _b

#: folder of the keypoint files inside a dataset folder (the default location).
KEYPOINTS_FOLDER = "keypoints"


def keypoint_file_name(split: str) -> str:
    """File name of the keypoints of split folder ``split``: ``person_keypoints_<split>.json``."""
    return f"person_keypoints_{split}.json"


def normalize_name(name: str) -> str:
    """An image key as stored in the file: ``/``-separated, no leading ``./``."""
    name = str(name).replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


class KeypointRecord(NamedTuple):
    """One image for :func:`write_coco_keypoints`.

    ``keypoints``: (17, 3) x, y, visibility; ``scores``: optional (17,) per-joint scores;
    ``bbox``: optional ``(x, y, w, h)`` of the person (default: the whole image when its size is
    known); ``width`` / ``height``: optional image size (default: the writer's arguments).
    """

    file_name: str
    keypoints: Any
    scores: Any = None
    bbox: Optional[Sequence[float]] = None
    width: Optional[int] = None
    height: Optional[int] = None


@dataclass
class KeypointFile:
    """Content of one keypoint file (:func:`read_coco_keypoints`)."""

    path: str
    #: image key (file_name, normalised) -> (17, 3) float32 x, y, visibility
    keypoints: dict[str, np.ndarray] = field(default_factory=dict)
    #: image key -> (17,) float32 per-joint scores, for the annotations that carry them
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    #: image keys listed in ``images`` (with or without an annotation)
    images: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def flat_names(self) -> bool:
        """True when every file_name is a bare file name (no folder part)."""
        return not any("/" in n for n in self.images)

    def __len__(self) -> int:
        return len(self.keypoints)


def _as_record(r) -> KeypointRecord:
    if isinstance(r, KeypointRecord):
        return r
    if isinstance(r, Mapping):
        return KeypointRecord(**r)
    return KeypointRecord(*r)


def _check_keypoints(kps, what: str) -> np.ndarray:
    arr = np.asarray(kps, dtype=np.float64)
    if arr.size != NUM_KEYPOINTS * 3:
        raise ValueError(f"{what}: {arr.size} keypoint values, expected {NUM_KEYPOINTS * 3} "
                         f"({NUM_KEYPOINTS} x (x, y, visibility))")
    arr = arr.reshape(NUM_KEYPOINTS, 3)
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: keypoints hold NaN or infinite values")
    bad = sorted({float(v) for v in arr[:, 2]} - {0.0, 1.0, 2.0})
    if bad:
        raise ValueError(f"{what}: visibility values {bad}; allowed are 0 (unlabelled/outside), "
                         "1 (occluded), 2 (visible)")
    return arr


def _check_scores(scores, what: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size != NUM_KEYPOINTS:
        raise ValueError(f"{what}: {arr.size} keypoint_scores, expected {NUM_KEYPOINTS}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: keypoint_scores hold NaN or infinite values")
    return arr


def write_coco_keypoints(path: str, records: Iterable, split: str = "", *, width: Optional[int] = None,
                         height: Optional[int] = None, info: Optional[dict] = None) -> str:
    """Write the keypoint file ``path`` (format: module docstring); returns ``path``.

    Args:
        records: :class:`KeypointRecord` s, or tuples / dicts with its fields
            (``(file_name, keypoints[, scores[, bbox[, width[, height]]]])``). ``file_name`` is the
            image's path relative to its split folder. Written sorted by file name, ids from 1.
        split: the split folder's name (used in the default ``info`` description).
        width, height: image size for the records that do not give one (optional).
        info: the file's ``info`` block; default ``{"description": "... (<split>)"}``.

    The file is written to a temporary file next to ``path`` and moved into place
    (``os.replace``), so a reader never sees a half-written file.
    """
    recs = sorted((_as_record(r) for r in records), key=lambda r: normalize_name(r.file_name))
    images, annotations, seen = [], [], set()
    for i, rec in enumerate(recs, start=1):
        name = normalize_name(rec.file_name)
        what = f"keypoint record '{name}' (for {path})"
        if not name or name.startswith("/") or name.startswith("../"):
            raise ValueError(f"{what}: file_name must be the image path relative to its split folder")
        if name in seen:
            raise ValueError(f"{what}: duplicate image name")
        seen.add(name)
        kps = _check_keypoints(rec.keypoints, what)
        w = rec.width if rec.width is not None else width
        h = rec.height if rec.height is not None else height
        image = {"id": i, "file_name": name}
        if w is not None and h is not None:
            image.update(width=int(w), height=int(h))
        images.append(image)
        flat = []
        for x, y, v in kps:
            flat += [float(x), float(y), int(v)]
        ann = {"id": i, "image_id": i, "category_id": 1, "keypoints": flat}
        if rec.scores is not None:
            ann["keypoint_scores"] = [float(s) for s in _check_scores(rec.scores, what)]
        ann["num_keypoints"] = int((kps[:, 2] > 0).sum())
        bbox = rec.bbox if rec.bbox is not None else ((0, 0, w, h) if w is not None and h is not None else None)
        if bbox is not None:
            bx, by, bw, bh = (float(b) for b in bbox)
            ann.update(bbox=[bx, by, bw, bh], area=round(bw * bh, 2))
        ann["iscrowd"] = 0
        annotations.append(ann)
    coco = {
        "info": dict(info) if info is not None else
        {"description": f"fastreid_ext re-id keypoints ({split})" if split else "fastreid_ext re-id keypoints"},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "supercategory": "person",
                        "keypoints": list(COCO_KEYPOINTS), "skeleton": COCO_SKELETON}],
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with open(tmp, "x") as f:
            json.dump(coco, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def read_json(path: str, what: str):
    """The JSON content of ``path``; a missing file or invalid JSON is an error naming ``what`` and the file."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{what} {path} is not valid JSON: {e}") from None


def read_coco_keypoints(path: str) -> KeypointFile:
    """Read a keypoint file (format: module docstring).

    Returns a :class:`KeypointFile`: per image key, (17, 3) float32 x, y, visibility and, where the
    annotation has them, (17,) float32 ``keypoint_scores``. Raises ``FileNotFoundError`` /
    ``ValueError`` naming the file and the problem (not JSON, missing keys, wrong number of values,
    bad visibility, duplicate image names or ids, annotations of unknown images, two annotations
    for one image, keypoint names other than COCO-17).
    """
    coco = read_json(path, "keypoint file")

    def fail(msg):
        raise ValueError(f"keypoint file {path}: {msg}")

    if not isinstance(coco, dict):
        fail(f"expected a JSON object with 'images' and 'annotations', got {type(coco).__name__}")
    for key in ("images", "annotations"):
        if key not in coco:
            fail(f"missing key '{key}' (COCO keypoint format: 'images', 'annotations')")
        if not isinstance(coco[key], list):
            fail(f"'{key}' must be a list, got {type(coco[key]).__name__}")
    for cat in coco.get("categories") or []:
        names = cat.get("keypoints") if isinstance(cat, dict) else None
        if names is not None and list(names) != list(COCO_KEYPOINTS):
            fail(f"category {cat.get('name', cat.get('id'))!r} has keypoints {list(names)[:4]}..., "
                 "expected the COCO-17 names in COCO order")

    names_by_id: dict = {}
    out = KeypointFile(path=path, info=coco.get("info") if isinstance(coco.get("info"), dict) else {})
    seen = set()
    for n, im in enumerate(coco["images"]):
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            fail(f"images[{n}] lacks 'id' or 'file_name': {str(im)[:80]}")
        name = normalize_name(im["file_name"])
        if name in seen:
            fail(f"duplicate image name '{name}'")
        if im["id"] in names_by_id:
            fail(f"duplicate image id {im['id']} ('{names_by_id[im['id']]}' and '{name}')")
        seen.add(name)
        names_by_id[im["id"]] = name
        out.images.append(name)
    for n, ann in enumerate(coco["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or "keypoints" not in ann:
            fail(f"annotations[{n}] lacks 'image_id' or 'keypoints'")
        name = names_by_id.get(ann["image_id"])
        if name is None:
            fail(f"annotations[{n}] (id {ann.get('id')}): image id {ann['image_id']} not found in 'images'")
        if name in out.keypoints:
            fail(f"image '{name}' has more than one annotation (one person per re-id crop)")
        what = f"keypoint file {path}: annotation {ann.get('id', n)} of image '{name}'"
        try:
            kps = _check_keypoints(ann["keypoints"], what)
            scores = ann.get("keypoint_scores")
            if scores is not None:
                out.scores[name] = _check_scores(scores, what).astype(np.float32)
        except (TypeError, ValueError) as e:
            msg = str(e)
            raise ValueError(msg if msg.startswith(what) else f"{what}: {msg}") from None
        out.keypoints[name] = kps.astype(np.float32)
    return out

"""Write a synthetic re-id dataset in the on-disk formats of Market-1501 / DukeMTMC-reID.

Layout of ``root`` (both domains)::

    bounding_box_train/   training crops
    bounding_box_test/    gallery crops (+ distractors / junk)
    query/                query crops (at most one per identity and camera)
    attribute/market_attribute.mat | attribute/duke_attribute.mat
    keypoints/person_keypoints_{bounding_box_train,query,bounding_box_test}.json  (fastreid_ext.data.coco_keypoints)
    silhouettes/<split>/<image name>.png   optional (``silhouettes=True``): 0/255 mask of the
                          pedestrian's visible pixels, same size as the crop (RBNet's mask measure)
    meta.json             generator version, arguments and counts

File names:

* market: ``PPPP_cCsS_FFFFFF_NN.jpg`` (pid, camera, sequence 1-6, frame, box
  index).  Distractors use pid ``0000`` (background-only or badly cropped
  boxes), junk boxes use pid ``-1`` (``-1_c3s2_001234_02.jpg``), both only in
  ``bounding_box_test`` -- like the real set.
* duke: ``PPPP_cC_fFFFFFFF.jpg``.  Distractors are extra identities (pids after
  the test pids) with a single gallery image and no query, as in the real set;
  there is no junk.

Identities: train pids are ``1..num_train_ids`` and test pids follow them, so
the two sets are disjoint.  Every identity appears in at least two cameras;
every query image has a gallery image of the same identity from another
camera.

All randomness is derived from ``(seed, domain, pid, camera, index)`` with
``numpy.random.SeedSequence``, so images do not depend on generation order and
the same arguments always give byte-identical files.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io
from PIL import Image

from ..coco_keypoints import KEYPOINTS_FOLDER, KeypointRecord, write_coco_keypoints
from ..coco_keypoints import keypoint_file_name as _split_file_name
from .render import (
    DEFAULT_DIFFICULTY, DEFAULT_NUM_CAMS, DOMAINS,
    DUKE_ATTRIBUTES, DUKE_ATTRIBUTES_TEST_ORDER, MARKET_ATTRIBUTES,
    MARKET_ATTRIBUTES_TEST_ORDER, Appearance, CameraModel, make_camera, render_image,
    sample_appearance, seed_rng,
)

try:  # optional dependency
    from tqdm import tqdm as _tqdm
except ImportError:  # pragma: no cover
    _tqdm = None

__all__ = ["GENERATOR_VERSION", "SILHOUETTES_FOLDER", "SPLITS", "generate", "attribute_file_name",
           "keypoint_file_name", "silhouette_path", "write_attribute_mat"]

GENERATOR_VERSION = "1.0.0"
SPLITS = ("bounding_box_train", "query", "bounding_box_test")

_DOMAIN_CODE = {"market": 1, "duke": 2}
_TAG_PLAN, _TAG_IMG, _TAG_DISTRACTOR, _TAG_JUNK = 0x91A, 0x1A6, 0xD15, 0x7C
_MAX_PID = {"market": 1501, "duke": 9999}  # stock FastReID Market reader asserts pid <= 1501
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: synthetic, Created by: fastreid_ext.data.synthetic"


def attribute_file_name(domain: str) -> str:
    """Relative path of the attribute file of ``domain``."""
    return os.path.join("attribute", f"{domain}_attribute.mat")


SILHOUETTES_FOLDER = "silhouettes"


def silhouette_path(dataset_folder: str, image_path: str) -> str:
    """The silhouette PNG of a synthetic image: ``<dataset>/silhouettes/<split>/<name>.png``."""
    split = os.path.basename(os.path.dirname(image_path))
    name = os.path.splitext(os.path.basename(image_path))[0] + ".png"
    return os.path.join(dataset_folder, SILHOUETTES_FOLDER, split, name)


def keypoint_file_name(split: str) -> str:
    """Relative path of the COCO keypoint file of ``split``."""
    return os.path.join(KEYPOINTS_FOLDER, _split_file_name(split))


@dataclass
class _Job:
    split: str
    fname: str
    pid: int
    cam: int
    kind: str  # normal / background / badcrop / junk
    app: Optional[Appearance]
    key: Tuple[int, ...]  # entropy of the image RNG


def _market_name(pid: int, cam: int, seq: int, frame: int, box: int) -> str:
    p = "-1" if pid < 0 else f"{pid:04d}"
    return f"{p}_c{cam}s{seq}_{frame:06d}_{box:02d}.jpg"


def _duke_name(pid: int, cam: int, frame: int) -> str:
    return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"


def _identity_jobs(seed: int, domain: str, pid: int, app: Appearance, num_cams: int,
                   images_per_cam: Tuple[int, int], test: bool) -> List[_Job]:
    """Cameras, file names and query/gallery assignment of one identity."""
    dc = _DOMAIN_CODE[domain]
    rng = seed_rng(seed, dc, _TAG_PLAN, pid)
    n_cams = 2 + int(rng.binomial(num_cams - 2, 0.5)) if num_cams > 2 else 2
    cams = sorted(int(c) + 1 for c in rng.choice(num_cams, size=n_cams, replace=False))
    lo, hi = images_per_cam
    per_cam: Dict[int, List[str]] = {}
    for cam in cams:
        n = int(rng.integers(lo, hi + 1))
        step = int(rng.integers(5, 26))
        seq = int(rng.integers(1, 7))
        names = []
        if domain == "market":
            base = int(rng.integers(0, 999999 - 26 * n))
            boxes = rng.integers(1, 9, size=n)
            for k in range(n):
                names.append(_market_name(pid, cam, seq, base + k * step, int(boxes[k])))
        else:
            base = int(rng.integers(0, 9999999 - 26 * n))
            for k in range(n):
                names.append(_duke_name(pid, cam, base + k * step))
        per_cam[cam] = names
    query_idx: Dict[int, int] = {}
    if test:
        gallery_left = {c: len(v) for c, v in per_cam.items()}
        for cam in [int(c) for c in rng.permutation(cams)]:
            k = int(rng.integers(len(per_cam[cam])))
            gallery_left[cam] -= 1
            ok = all(any(gallery_left[o] > 0 for o in cams if o != q)
                     for q in list(query_idx) + [cam])
            if ok:
                query_idx[cam] = k
            else:
                gallery_left[cam] += 1
    jobs = []
    for cam in cams:
        for k, name in enumerate(per_cam[cam]):
            if not test:
                split = "bounding_box_train"
            else:
                split = "query" if query_idx.get(cam) == k else "bounding_box_test"
            jobs.append(_Job(split, name, pid, cam, "normal", app, (dc, _TAG_IMG, pid, cam, k)))
    return jobs


def _extra_jobs(seed: int, domain: str, num_cams: int, num_distractors: int, num_junk: int,
                first_pid: int) -> Tuple[List[_Job], List[Appearance]]:
    """Market distractors (pid 0000) and junk (pid -1); Duke gallery-only identities."""
    dc = _DOMAIN_CODE[domain]
    jobs: List[_Job] = []
    extra_apps: List[Appearance] = []
    for k in range(num_distractors):
        rng = seed_rng(seed, dc, _TAG_DISTRACTOR, k)
        cam = int(rng.integers(1, num_cams + 1))
        if domain == "market":
            kind = "background" if rng.uniform() < 0.5 else "badcrop"
            app = sample_appearance(domain, 0, rng=rng)
            name = _market_name(0, cam, int(rng.integers(1, 7)), 1000 + 150 * k +
                                int(rng.integers(150)), int(rng.integers(1, 9)))
            jobs.append(_Job("bounding_box_test", name, 0, cam, kind, app,
                             (dc, _TAG_DISTRACTOR, k)))
        else:
            pid = first_pid + k
            app = sample_appearance(domain, pid, seed)
            extra_apps.append(app)
            name = _duke_name(pid, cam, int(rng.integers(0, 9999999)))
            jobs.append(_Job("bounding_box_test", name, pid, cam, "normal", app,
                             (dc, _TAG_DISTRACTOR, k)))
    for k in range(num_junk):
        rng = seed_rng(seed, dc, _TAG_JUNK, k)
        cam = int(rng.integers(1, num_cams + 1))
        app = sample_appearance(domain, 0, rng=rng)
        name = _market_name(-1, cam, int(rng.integers(1, 7)), 1000 + 150 * k +
                            int(rng.integers(150)), int(rng.integers(1, 9)))
        jobs.append(_Job("bounding_box_test", name, -1, cam, "junk", app, (dc, _TAG_JUNK, k)))
    return jobs, extra_apps


def write_attribute_mat(path: str, domain: str, train: Sequence[Appearance],
                        test: Sequence[Appearance]) -> None:
    """Write ``{domain}_attribute.mat`` with the struct layout of the real file.

    Top-level variable ``market_attribute`` / ``duke_attribute``: a 1x1 struct
    with ``test``/``train`` (market) or ``train``/``test`` (duke) 1x1 sub-structs
    whose fields (in the real files' per-split order) hold 1xN uint8 rows, plus
    ``image_index``, a 1xN cell of 4-digit id strings.  The MAT header text is
    fixed so that the file is byte-reproducible.
    """
    if domain == "market":
        orders = {"train": MARKET_ATTRIBUTES, "test": MARKET_ATTRIBUTES_TEST_ORDER}
        split_order = ("test", "train")
    else:
        orders = {"train": DUKE_ATTRIBUTES, "test": DUKE_ATTRIBUTES_TEST_ORDER}
        split_order = ("train", "test")
    apps = {"train": list(train), "test": list(test)}
    top = np.empty((1, 1), dtype=[(s, object) for s in split_order])
    for split in split_order:
        order = orders[split]
        rows = [a.market_attributes() if domain == "market" else a.duke_attributes()
                for a in apps[split]]
        st = np.empty((1, 1), dtype=[(n, object) for n in order] + [("image_index", object)])
        for n in order:
            st[0, 0][n] = np.array([[r[n] for r in rows]], dtype=np.uint8).reshape(1, len(rows))
        idx = np.empty((1, len(rows)), dtype=object)
        for i, a in enumerate(apps[split]):
            idx[0, i] = f"{a.pid:04d}"
        st[0, 0]["image_index"] = idx
        top[0, 0][split] = st
    buf = io.BytesIO()
    scipy.io.savemat(buf, {f"{domain}_attribute": top}, format="5", do_compression=False,
                     oned_as="row")
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_HEADER.ljust(116, b" ")[:116]  # replace the timestamped header text
    with open(path, "wb") as f:
        f.write(bytes(data))


def _resolve_args(domain, num_train_ids, num_test_ids, num_cams, images_per_cam,
                  num_distractors, num_junk, height, width, difficulty, seed) -> dict:
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    num_cams = DEFAULT_NUM_CAMS[domain] if num_cams is None else int(num_cams)
    if not 2 <= num_cams <= DEFAULT_NUM_CAMS[domain]:
        raise ValueError(f"num_cams must be in [2, {DEFAULT_NUM_CAMS[domain]}] for {domain} "
                         f"(the stock FastReID reader checks the camera id), got {num_cams}")
    if num_junk is None:
        num_junk = max(1, num_test_ids // 4) if domain == "market" else 0
    if num_distractors is None:
        num_distractors = max(1, num_test_ids // 2)
    if domain == "duke" and num_junk:
        raise ValueError("duke has no junk images (pid -1); pass num_junk=0 or None")
    lo, hi = (int(v) for v in images_per_cam)
    if not 1 <= lo <= hi <= 500:
        raise ValueError(f"images_per_cam must be (min, max) with 1 <= min <= max, got {images_per_cam}")
    if num_train_ids < 1 or num_test_ids < 1:
        raise ValueError("num_train_ids and num_test_ids must be >= 1")
    if not (0 <= num_distractors <= 5000 and 0 <= num_junk <= 5000):
        raise ValueError("num_distractors and num_junk must be in [0, 5000]")
    last = num_train_ids + num_test_ids + (num_distractors if domain == "duke" else 0)
    if last > _MAX_PID[domain]:
        raise ValueError(f"too many identities for {domain}: the largest pid would be {last} "
                         f"(> {_MAX_PID[domain]})")
    if int(seed) < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not float(difficulty) >= 0:
        raise ValueError(f"difficulty must be >= 0, got {difficulty}")
    if height < 32 or width < 16:
        raise ValueError("height must be >= 32 and width >= 16")
    return {
        "domain": domain, "num_train_ids": int(num_train_ids), "num_test_ids": int(num_test_ids),
        "num_cams": num_cams, "images_per_cam": [lo, hi], "num_distractors": int(num_distractors),
        "num_junk": int(num_junk), "height": int(height), "width": int(width),
        "difficulty": float(difficulty), "seed": int(seed),
    }


def generate(root: str, domain: str = "market", num_train_ids: int = 100,
             num_test_ids: int = 100, num_cams: Optional[int] = None,
             images_per_cam: Tuple[int, int] = (2, 5), num_distractors: Optional[int] = None,
             num_junk: Optional[int] = None, height: int = 128, width: int = 64,
             difficulty: float = DEFAULT_DIFFICULTY, seed: int = 0, progress: bool = True,
             overwrite: bool = False, silhouettes: bool = False) -> dict:
    """Generate a synthetic Market-1501 / DukeMTMC-reID style dataset in ``root``.

    Args:
        root: output folder (created; written via ``root.tmp-XXXX`` + rename).
        domain: ``"market"`` (6 cameras, bright summer style) or ``"duke"``
            (8 cameras, darker winter style).
        num_train_ids / num_test_ids: identities in the train / test split.
        num_cams: cameras (default 6 market / 8 duke); each id is seen by >= 2.
        images_per_cam: (min, max) images of an identity per camera.
        num_distractors: market: pid-0000 gallery boxes (background-only or
            badly cropped); duke: gallery-only identities with one image each.
            Default ``num_test_ids // 2``.
        num_junk: market only: pid -1 gallery boxes (default ``num_test_ids // 4``).
        height, width: crop size in pixels.
        difficulty: nuisance strength (0 clean, 1 default, ~2 very hard); see
            :mod:`fastreid_ext.data.synthetic.render`.
        seed: master seed.
        progress: show a tqdm progress bar.
        overwrite: replace an existing ``root`` generated with other arguments.
        silhouettes: also write each crop's pedestrian mask (``silhouettes/<split>/<name>.png``,
            0/255, the visible person minus occluders); images and keypoints are unchanged.

    Returns:
        summary dict: ``root``, ``skipped`` (True when an identical dataset was
        already there), ``seconds`` and the counts stored in ``meta.json``.

    Raises:
        FileExistsError: ``root`` exists with different arguments (or is not a
            synthetic dataset) and ``overwrite`` is False.
    """
    args = _resolve_args(domain, num_train_ids, num_test_ids, num_cams, images_per_cam,
                         num_distractors, num_junk, height, width, difficulty, seed)
    if silhouettes:  # only then recorded, so sets made before the option still match their arguments
        args["silhouettes"] = True
    root = os.path.abspath(os.path.expanduser(os.fspath(root)))
    meta_path = os.path.join(root, "meta.json")
    if os.path.isdir(root) and os.listdir(root):
        meta = None
        if os.path.isfile(meta_path):
            try:
                with open(meta_path) as f:
                    meta = json.load(f)
            except (OSError, ValueError):
                meta = None
        same = (meta is not None and meta.get("version") == GENERATOR_VERSION
                and meta.get("args") == args)
        if same and not overwrite:
            print(f"[synthetic] {root} already holds this dataset (same arguments); not regenerating")
            return {"root": root, "skipped": True, "seconds": 0.0, **meta["counts"]}
        if not overwrite:
            what = ("was generated with different arguments or generator version"
                    if meta is not None else "exists and is not a synthetic dataset (no meta.json)")
            raise FileExistsError(
                f"dataset folder {root} {what}; remove it or pass overwrite=True "
                f"(--overwrite) to regenerate. Existing args: "
                f"{meta.get('args') if meta else None}; requested: {args}")
    elif os.path.exists(root) and not os.path.isdir(root):
        raise FileExistsError(f"{root} exists and is not a folder")

    t0 = time.time()
    a = args
    dom, nc = a["domain"], a["num_cams"]
    train_pids = list(range(1, a["num_train_ids"] + 1))
    test_pids = list(range(a["num_train_ids"] + 1, a["num_train_ids"] + a["num_test_ids"] + 1))
    apps = {pid: sample_appearance(dom, pid, a["seed"]) for pid in train_pids + test_pids}
    jobs: List[_Job] = []
    for pid in train_pids:
        jobs += _identity_jobs(a["seed"], dom, pid, apps[pid], nc, tuple(a["images_per_cam"]), False)
    for pid in test_pids:
        jobs += _identity_jobs(a["seed"], dom, pid, apps[pid], nc, tuple(a["images_per_cam"]), True)
    extra, extra_apps = _extra_jobs(a["seed"], dom, nc, a["num_distractors"], a["num_junk"],
                                    test_pids[-1] + 1)
    jobs += extra

    parent = os.path.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        for split in SPLITS:
            os.makedirs(os.path.join(tmp, split))
        os.makedirs(os.path.join(tmp, "attribute"))
        os.makedirs(os.path.join(tmp, "keypoints"))
        if silhouettes:
            for split in SPLITS:
                os.makedirs(os.path.join(tmp, SILHOUETTES_FOLDER, split))
        cameras: Dict[int, CameraModel] = {}
        records: Dict[str, list] = {s: [] for s in SPLITS}
        bar = None
        if progress and _tqdm is not None:
            bar = _tqdm(total=len(jobs), desc=f"synthetic {dom}", unit="img", leave=False)
        for job in jobs:
            cam = cameras.get(job.cam)
            if cam is None:
                cam = cameras[job.cam] = make_camera(dom, job.cam, a["seed"], a["height"],
                                                     a["width"], a["difficulty"])
            rng = seed_rng(a["seed"], *[k if k >= 0 else 0 for k in job.key])
            res = render_image(job.app, cam, rng, a["difficulty"], kind=job.kind, silhouette=silhouettes)
            res.image.save(os.path.join(tmp, job.split, job.fname), "JPEG",
                           quality=cam.jpeg_quality)
            if silhouettes:
                Image.fromarray(res.silhouette, "L").save(silhouette_path(tmp, os.path.join(tmp, job.split, job.fname)))
            records[job.split].append((job.fname, res.keypoints, res.bbox))
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()

        write_attribute_mat(os.path.join(tmp, attribute_file_name(dom)), dom,
                            [apps[p] for p in train_pids],
                            [apps[p] for p in test_pids] + extra_apps)
        for split in SPLITS:  # the keypoint contract's writer (fastreid_ext.data.coco_keypoints)
            write_coco_keypoints(
                os.path.join(tmp, keypoint_file_name(split)),
                [KeypointRecord(fname, kps, bbox=bbox) for fname, kps, bbox in records[split]],
                split, width=a["width"], height=a["height"],
                info={"description": f"fastreid_ext synthetic re-id keypoints ({split})",
                      "version": GENERATOR_VERSION})

        def ids(split):
            return sorted({j.pid for j in jobs if j.split == split and j.pid > 0 and
                           j.kind == "normal"})
        counts = {
            "num_images": len(jobs),
            "bounding_box_train": len(records["bounding_box_train"]),
            "query": len(records["query"]),
            "bounding_box_test": len(records["bounding_box_test"]),
            "train_ids": len(ids("bounding_box_train")),
            "query_ids": len(ids("query")),
            "gallery_ids": len(ids("bounding_box_test")),
            "distractor_images": a["num_distractors"],
            "junk_images": a["num_junk"],
            "train_pid_range": [train_pids[0], train_pids[-1]],
            "test_pid_range": [test_pids[0], test_pids[-1]],
        }
        meta = {
            "generator": "fastreid_ext.data.synthetic",
            "version": GENERATOR_VERSION,
            "args": args,
            "counts": counts,
            "format": dom,
            "attribute_file": attribute_file_name(dom).replace(os.sep, "/"),
            "keypoint_files": {s: keypoint_file_name(s).replace(os.sep, "/") for s in SPLITS},
        }
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
            f.write("\n")
        if os.path.isdir(root):
            if os.listdir(root):
                shutil.rmtree(root)  # only reached with overwrite=True
            else:
                os.rmdir(root)
        os.rename(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.time() - t0
    if progress:
        print(f"[synthetic] wrote {counts['num_images']} {dom} images to {root} in {seconds:.1f}s",
              file=sys.stderr)
    return {"root": root, "skipped": False, "seconds": seconds, **counts}

"""Synthetic whole scenes for person search, written in PRW's on-disk format (issue 12).

Each frame is one camera's background (the same camera model as the crop set's: background family,
light, noise) with several pedestrians pasted at perspective-consistent positions and scales: the
person's foot row sets its height (farther = higher and smaller), nearer people are drawn last and
occlude the farther ones, and unlabelled distractor people (id -2, as PRW marks them) walk among
them. The labelled people are the **same identities as the crop set** of
:func:`fastreid_ext.data.synthetic.generate` with the same ``domain`` and ``seed`` (train ids
``1..num_train_ids``, test ids after them), rendered by the same renderer, so a re-id model trained
on the crops searches the scenes for the same people.

Each pedestrian is rendered as a crop by :func:`~.render.render_image` (its viewpoint, pose, clothes,
the camera's optics) with its silhouette, resized to its height in the frame and pasted through the
silhouette (the crop's own background and occluders stay out). Its ground-truth box is the drawn
person's extent in the frame, clipped to it; a person whose visible part (after the people in front)
falls below ``MIN_VISIBLE`` of its silhouette is left unannotated, like a person hidden in a real frame.

Splits: train frames show train ids only, test frames test ids only (PRW's split is by frames, its
identities disjoint). Every identity appears in ``>= 2`` cameras. Queries (``query_info.txt``): one
per test identity, its box in one test frame; the frame is excluded from that query's gallery by the
protocol. ``query_box/<id>_<frame>.jpg``: the query crops, cut from the frames. Files: see
:mod:`fastreid_ext.data.search.prw`; ``meta.json`` records the arguments and counts. Deterministic in
its arguments; a folder holding the same scenes is not regenerated.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import scipy.io
from PIL import Image

from ..search.prw import UNLABELLED, write_prw_annotation
from .render import (_DOMAIN_CODE, DEFAULT_DIFFICULTY, DEFAULT_NUM_CAMS, make_camera, render_image, sample_appearance,
                     seed_rng)

__all__ = ["SCENES_VERSION", "MIN_VISIBLE", "generate_scenes"]

SCENES_VERSION = "1.0.0"
#: fraction of its silhouette a person must keep visible to be annotated
MIN_VISIBLE = 0.3
_TAG_SCENE, _TAG_PERSON, _TAG_BG = 0x5CE, 0x9E5, 0xB6


def _background(domain: str, cam: int, seed: int, frame: int, h: int, w: int) -> Image.Image:
    """The camera's scene (its background model), a frame-specific window of it at (w, h)."""
    cam_model = make_camera(domain, cam, seed, height=h, width=max(16, w // 2))
    bg = cam_model.background  # 2.6 h x 2.5 (w / 2), canvas resolution (x2)
    rng = seed_rng(seed, _DOMAIN_CODE[domain], _TAG_BG, cam, frame)
    bw, bh = bg.size
    cw, ch = min(bw, 2 * w), min(bh, 2 * h)
    ox, oy = int(rng.integers(0, bw - cw + 1)), int(rng.integers(0, max(1, (bh - ch) // 4) + 1))
    return bg.crop((ox, oy, ox + cw, oy + ch)).resize((w, h), Image.BILINEAR)


def _plan(domain: str, seed: int, pids: Sequence[int], num_cams: int, appearances: Tuple[int, int],
          per_frame: Tuple[int, int]) -> List[Tuple[int, List[int]]]:
    """(camera, [pids]) of each frame: every identity in >= 2 cameras, ``appearances`` frames per camera
    it is seen by, packed into frames of ``per_frame`` distinct people."""
    rng = seed_rng(seed, _DOMAIN_CODE[domain], _TAG_SCENE, len(pids), pids[0] if pids else 0)
    by_cam: Dict[int, List[int]] = {c: [] for c in range(1, num_cams + 1)}
    for pid in pids:
        k = int(rng.integers(2, min(num_cams, 3) + 1))
        for c in sorted(rng.choice(num_cams, size=k, replace=False) + 1):
            by_cam[int(c)].extend([pid] * int(rng.integers(appearances[0], appearances[1] + 1)))
    frames = []
    for cam, items in by_cam.items():
        items = list(rng.permutation(items)) if items else []
        while items:
            n = int(rng.integers(per_frame[0], per_frame[1] + 1))
            frame, rest = [], []
            for p in items:
                (frame if len(frame) < n and p not in frame else rest).append(int(p))
            frames.append((cam, frame))
            items = rest
    return frames


def _render_frame(domain: str, seed: int, cam: int, frame_idx: int, pids: Sequence[int], num_distractors: int,
                  size: Tuple[int, int], crop: Tuple[int, int], difficulty: float):
    """(image, boxes x1y1x2y2, ids) of one frame."""
    H, W = size
    img = _background(domain, cam, seed, frame_idx, H, W)
    rng = seed_rng(seed, _DOMAIN_CODE[domain], _TAG_PERSON, cam, frame_idx)
    crop_cam = make_camera(domain, cam, seed, crop[0], crop[1])
    people = [(p, sample_appearance(domain, p, seed)) for p in pids]
    people += [(UNLABELLED, sample_appearance(domain, 0, rng=rng)) for _ in range(num_distractors)]
    # foot rows: far (small, high) .. near (large, low); spread across the width
    placed = []
    xs = (rng.permutation(len(people)) + rng.uniform(0.15, 0.85, len(people))) / max(1, len(people))
    for (pid, app), xf in zip(people, xs):
        foot = rng.uniform(0.62, 0.98) * H
        height = (0.38 + 0.5 * (foot / H - 0.62) / 0.36) * H  # perspective: lower foot = nearer = taller
        placed.append((foot, height, xf * W, pid, app))
    placed.sort(key=lambda t: t[0])  # far first: nearer people are pasted over them
    canvas = np.asarray(img, dtype=np.uint8).copy()
    owner = np.full((H, W), -1, np.int32)  # which person each pixel shows
    extents, masks_area = [], []
    for k, (foot, height, cx, pid, app) in enumerate(placed):
        r = render_image(app, crop_cam, np.random.default_rng(rng.integers(0, 2 ** 63 - 1)), difficulty=difficulty,
                         silhouette=True)
        bx, by, bw, bh = r.bbox
        if bw <= 0 or bh <= 0:
            extents.append(None)
            masks_area.append(0)
            continue
        s = height / bh  # crop -> frame scale, so that the person is `height` tall
        cw_, ch_ = max(1, int(round(crop[1] * s))), max(1, int(round(crop[0] * s)))
        person = np.asarray(r.image.resize((cw_, ch_), Image.BILINEAR))
        sil = np.asarray(Image.fromarray(r.silhouette).resize((cw_, ch_), Image.NEAREST)) > 127
        ox = int(round(cx - (bx + bw / 2) * s))
        oy = int(round(foot - (by + bh) * s))
        x0, y0, x1, y1 = max(0, ox), max(0, oy), min(W, ox + cw_), min(H, oy + ch_)
        if x1 <= x0 or y1 <= y0:
            extents.append(None)
            masks_area.append(0)
            continue
        sub = sil[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
        canvas[y0:y1, x0:x1][sub] = person[y0 - oy:y1 - oy, x0 - ox:x1 - ox][sub]
        owner[y0:y1, x0:x1][sub] = k
        masks_area.append(int(sil.sum()))
        ex = (ox + bx * s, oy + by * s, ox + (bx + bw) * s, oy + (by + bh) * s)
        extents.append((max(0.0, ex[0]), max(0.0, ex[1]), min(float(W), ex[2]), min(float(H), ex[3])))
    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(placed))
    boxes, ids = [], []
    for k, (foot, height, cx, pid, app) in enumerate(placed):
        ex = extents[k]
        if ex is None or masks_area[k] == 0 or visible[k] < MIN_VISIBLE * masks_area[k]:
            continue
        if ex[2] - ex[0] < 2 or ex[3] - ex[1] < 4:
            continue
        boxes.append(ex)
        ids.append(pid)
    return (Image.fromarray(canvas), np.array(boxes, dtype=np.float64).reshape(-1, 4),
            np.array(ids, dtype=np.int64))


def generate_scenes(root: str, domain: str = "market", num_train_ids: int = 30, num_test_ids: int = 30,
                    num_cams: Optional[int] = None, appearances: Tuple[int, int] = (1, 2),
                    people_per_frame: Tuple[int, int] = (2, 4), distractors_per_frame: Tuple[int, int] = (0, 2),
                    frame_size: Tuple[int, int] = (192, 384), crop_size: Tuple[int, int] = (128, 64),
                    difficulty: float = DEFAULT_DIFFICULTY, seed: int = 0, overwrite: bool = False,
                    progress: bool = False) -> dict:
    """Write synthetic scenes in PRW's format to ``root`` (see the module docstring). Returns the counts
    (also in ``meta.json``)."""
    if domain not in _DOMAIN_CODE:
        raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(_DOMAIN_CODE)}")
    num_cams = int(num_cams or DEFAULT_NUM_CAMS[domain])
    if num_cams < 2:
        raise ValueError("person search needs >= 2 cameras (every identity is seen by two)")
    args = dict(version=SCENES_VERSION, domain=domain, num_train_ids=num_train_ids, num_test_ids=num_test_ids,
                num_cams=num_cams, appearances=list(appearances), people_per_frame=list(people_per_frame),
                distractors_per_frame=list(distractors_per_frame), frame_size=list(frame_size),
                crop_size=list(crop_size), difficulty=float(difficulty), seed=int(seed))
    root = os.path.abspath(os.path.expanduser(root))
    meta_path = os.path.join(root, "meta.json")
    if os.path.isfile(meta_path) and not overwrite:
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("args") == args:
            return {"root": root, "skipped": True, **meta["counts"]}
        raise FileExistsError(f"{root} holds scenes made with other arguments: pass overwrite=True (--overwrite)")
    if os.path.exists(root) and os.listdir(root) and not os.path.isfile(meta_path) and not overwrite:
        raise FileExistsError(f"{root} exists and is not a synthetic scene set (no meta.json)")
    tmp = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
    for sub in ("frames", "annotations", "query_box"):
        os.makedirs(os.path.join(tmp, sub))
    train_pids = list(range(1, num_train_ids + 1))
    test_pids = list(range(num_train_ids + 1, num_train_ids + num_test_ids + 1))
    rng = seed_rng(seed, _DOMAIN_CODE[domain], _TAG_SCENE, 0xF)
    names = {"train": [], "test": []}
    annotations = {}
    counter = {c: 0 for c in range(1, num_cams + 1)}
    jobs = [("train", f) for f in _plan(domain, seed, train_pids, num_cams, appearances, people_per_frame)]
    jobs += [("test", f) for f in _plan(domain, seed + 7919, test_pids, num_cams, appearances, people_per_frame)]
    it = jobs
    if progress:
        from tqdm import tqdm

        it = tqdm(jobs, desc="scenes")
    for split, (cam, pids) in it:
        counter[cam] += 1
        idx = counter[cam]
        name = f"c{cam}s1_{idx * 25:06d}"
        nd = int(rng.integers(distractors_per_frame[0], distractors_per_frame[1] + 1))
        image, boxes, ids = _render_frame(domain, seed, cam, idx, pids, nd, tuple(frame_size), tuple(crop_size),
                                          difficulty)
        image.save(os.path.join(tmp, "frames", name + ".jpg"), quality=92)
        write_prw_annotation(os.path.join(tmp, "annotations", name + ".jpg.mat"), boxes, ids)
        names[split].append(name)
        annotations[name] = (boxes, ids)
    scipy.io.savemat(os.path.join(tmp, "frame_train.mat"), {"img_index_train": np.array(names["train"], dtype=object)[:, None]})
    scipy.io.savemat(os.path.join(tmp, "frame_test.mat"), {"img_index_test": np.array(names["test"], dtype=object)[:, None]})
    # identities actually visible (a hidden person is unannotated)
    seen = {s: sorted({int(i) for n in names[s] for i in annotations[n][1] if i >= 0}) for s in names}
    scipy.io.savemat(os.path.join(tmp, "ID_train.mat"), {"ID_train": np.array(seen["train"], dtype=np.float64)[None]})
    scipy.io.savemat(os.path.join(tmp, "ID_test.mat"), {"ID_test": np.array(seen["test"], dtype=np.float64)[None]})
    # queries: per test id, its first annotated box in a frame when it also appears in another frame
    lines, nq = [], 0
    for pid in seen["test"]:
        where = [(n, k) for n in names["test"] for k, i in enumerate(annotations[n][1]) if i == pid]
        if len(where) < 2:
            continue  # nothing to search for in the other frames
        n, k = where[0]
        x1, y1, x2, y2 = annotations[n][0][k]
        lines.append(f"{pid} {x1:.1f} {y1:.1f} {x2 - x1:.1f} {y2 - y1:.1f} {n}")
        with Image.open(os.path.join(tmp, "frames", n + ".jpg")) as frame:  # the frame as written (not kept in memory)
            frame.crop((int(x1), int(y1), int(np.ceil(x2)), int(np.ceil(y2)))).save(
                os.path.join(tmp, "query_box", f"{pid:04d}_{n}.jpg"), quality=95)
        nq += 1
    with open(os.path.join(tmp, "query_info.txt"), "w") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))
    counts = {"train_frames": len(names["train"]), "test_frames": len(names["test"]), "queries": nq,
              "train_ids": len(seen["train"]), "test_ids": len(seen["test"]),
              "boxes": int(sum(len(a[1]) for a in annotations.values())),
              "unlabelled_boxes": int(sum((a[1] == UNLABELLED).sum() for a in annotations.values()))}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
        json.dump({"args": args, "counts": counts}, f, indent=1)
    if os.path.exists(root):
        shutil.rmtree(root)
    os.replace(tmp, root)
    return {"root": root, "skipped": False, **counts}

"""CUHK-SYSU (Xiao et al., CVPR 2017, "Joint Detection and Identification Feature Learning for Person
Search") in its on-disk format.

Layout of the dataset folder::

    Image/SSM/s1.jpg ...                       the scene images (street snaps and movie frames)
    annotation/Images.mat                      ``Img``: 1 x N struct (imname, nAppear, box); box: 1 x nAppear
                                               struct (idlocate = [x, y, w, h]): EVERY person of every image
    annotation/pool.mat                        ``pool``: the test images (cell of names); train = the others
    annotation/test/train_test/Train.mat       ``Train``: cell of 1 x 1 structs (idname, nAppear, scene);
                                               scene: 1 x nAppear struct (imname, idlocate, ishard)
    annotation/test/train_test/TestG50.mat     ``TestG50``: 1 x Q struct (Query, Gallery); Query: 1 x 1 struct
    ... TestG100/500/1000/2000/4000.mat        (imname, idlocate, ishard, idname); Gallery: 1 x G struct
                                               (imname, idlocate, ishard), idlocate empty where the person
                                               is not in that image

Identities (the files have none per box): a box of ``Images.mat`` that equals a train identity's box in
``Train.mat`` gets that identity (1..), one that equals a query's or its gallery ground truth in the
chosen ``TestG<N>.mat`` gets the query's identity (after the train ones); every other box is an
unlabelled person (-2, as in PRW). This is how the published readers (OIM, SeqNet) label it. Boxes of
zero width or height in ``Images.mat`` (a few exist) are dropped. A box named in Train / TestG that no
box of its image equals is an error naming both files.

:func:`write_cuhk_sysu` writes the same layout (test fixtures); :func:`convert_to_cuhk_sysu` writes any
:class:`SearchSet` (PRW, the synthetic scenes) in it, with CUHK-SYSU's gallery protocol (below).
"""

from __future__ import annotations

import os
import shutil
from typing import Dict, Sequence, Tuple

import numpy as np

from .common import load_mat
from .prw import UNLABELLED, SceneFrame, SearchQuery, SearchSet

__all__ = ["GALLERY_SIZES", "convert_to_cuhk_sysu", "read_cuhk_sysu", "write_cuhk_sysu"]

#: the gallery sizes of the benchmark's protocol files TestG<N>.mat
GALLERY_SIZES = (50, 100, 500, 1000, 2000, 4000)


def _loadmat(path: str) -> dict:
    return load_mat(path, "CUHK-SYSU")


def _var(mat: dict, key: str, path: str):
    if key not in mat:
        raise ValueError(f"CUHK-SYSU: {path} has no variable {key!r} (has {sorted(k for k in mat if not k.startswith('__'))})")
    return mat[key]


def _s(v) -> str:
    v = np.asarray(v).reshape(-1)
    return str(v[0]) if v.size else ""


def _xywh(v) -> np.ndarray:
    return np.asarray(v, dtype=np.float64).reshape(-1)


def _xyxy(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b[:2], b[:2] + b[2:4]])


def _assign(frames: Dict[str, SceneFrame], name: str, box_xywh: np.ndarray, pid: int, where: str) -> np.ndarray:
    if name not in frames:
        raise ValueError(f"CUHK-SYSU: {where} names image {name}, which annotation/Images.mat does not have")
    f = frames[name]
    box = _xyxy(box_xywh)
    hit = np.nonzero(np.all(np.abs(f.boxes - box) < 0.5, axis=1))[0]
    if not len(hit):
        raise ValueError(f"CUHK-SYSU: {where}: box {box_xywh.tolist()} of {name} equals no box of that image in "
                         "annotation/Images.mat")
    f.pids[hit[0]] = pid
    return f.boxes[hit[0]].copy()


def read_cuhk_sysu(root: str, gallery_size: int = 100) -> SearchSet:
    """CUHK-SYSU in ``root`` with the queries and galleries of ``TestG<gallery_size>.mat``."""
    if gallery_size not in GALLERY_SIZES:
        raise ValueError(f"CUHK-SYSU gallery size must be one of {GALLERY_SIZES}, got {gallery_size}")
    root = os.path.abspath(os.path.expanduser(root))
    ann = os.path.join(root, "annotation")
    img_dir = os.path.join(root, "Image", "SSM")
    if not os.path.isdir(img_dir):
        raise FileNotFoundError(f"CUHK-SYSU: {img_dir} not found (expected Image/SSM/ and annotation/)")
    p_images = os.path.join(ann, "Images.mat")
    frames: Dict[str, SceneFrame] = {}
    # by position, as the published readers do (the field names of Images.mat are not part of its contract):
    # (image name, number of people, struct array of people whose first field is [x, y, w, h])
    for item in np.asarray(_var(_loadmat(p_images), "Img", p_images)).reshape(-1):
        name = _s(item[0])
        boxes = [_xywh(b[0]) for b in np.asarray(item[2]).reshape(-1)]
        boxes = np.array([b for b in boxes if b.size == 4 and b[2] > 0 and b[3] > 0]).reshape(-1, 4)
        frames[name] = SceneFrame(name=name, path=os.path.join(img_dir, name), cam=0,
                                  boxes=np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1),
                                  pids=np.full(len(boxes), UNLABELLED, dtype=np.int64))
    absent = [f.path for f in frames.values() if not os.path.isfile(f.path)]
    if absent:
        raise FileNotFoundError(f"CUHK-SYSU: {len(absent)} images of annotation/Images.mat are missing, e.g. {absent[0]}")
    p_pool = os.path.join(ann, "pool.mat")
    test = [_s(v) for v in np.asarray(_var(_loadmat(p_pool), "pool", p_pool)).reshape(-1)]
    missing = [n for n in test if n not in frames]
    if missing:
        raise ValueError(f"CUHK-SYSU: {p_pool} lists {len(missing)} images that Images.mat lacks, e.g. {missing[0]}")
    test_set = set(test)
    train = [n for n in frames if n not in test_set]
    p_train = os.path.join(ann, "test", "train_test", "Train.mat")
    persons = np.asarray(_var(_loadmat(p_train), "Train", p_train)).reshape(-1)
    for i, cell in enumerate(persons):  # by position: (idname, nAppear, scene); scene: (imname, idlocate, ishard)
        person = np.asarray(cell).reshape(-1)[0]
        for sc in np.asarray(person[2]).reshape(-1):
            _assign(frames, _s(sc[0]), _xywh(sc[1]), i + 1, f"{p_train} (person {i + 1})")
    n_train = len(persons)
    p_test = os.path.join(ann, "test", "train_test", f"TestG{gallery_size}.mat")
    queries = []
    for j, item in enumerate(np.asarray(_var(_loadmat(p_test), f"TestG{gallery_size}", p_test)).reshape(-1)):
        pid = n_train + j + 1
        q = np.asarray(item["Query"]).reshape(-1)[0]
        qname = _s(q["imname"])
        qbox = _assign(frames, qname, _xywh(q["idlocate"]), pid, f"{p_test} (query {j + 1})")
        gallery = []
        for g in np.asarray(item["Gallery"]).reshape(-1):
            gname = _s(g["imname"])
            gallery.append(gname)
            box = _xywh(g["idlocate"])
            if box.size == 4:
                _assign(frames, gname, box, pid, f"{p_test} (query {j + 1}, gallery)")
            elif gname not in frames:
                raise ValueError(f"CUHK-SYSU: {p_test} (query {j + 1}) names gallery image {gname}, which Images.mat lacks")
        if qname in gallery:
            raise ValueError(f"CUHK-SYSU: {p_test} (query {j + 1}): the gallery contains the query's own image {qname}")
        if len(gallery) != gallery_size:
            raise ValueError(f"CUHK-SYSU: {p_test} (query {j + 1}) has {len(gallery)} gallery images, not {gallery_size}")
        queries.append(SearchQuery(pid=pid, frame=qname, box=qbox, gallery=gallery))
    return SearchSet(root=root, frames=frames, train=train, test=test, queries=queries)


# ---------------------------------------------------------------------------------------------------
# writer (the same MATLAB layout; test fixtures)
# ---------------------------------------------------------------------------------------------------
def _struct(rows: Sequence[dict], fields: Sequence[str]) -> np.ndarray:
    """A 1 x N MATLAB struct array."""
    arr = np.zeros((1, len(rows)), dtype=[(f, object) for f in fields])
    for i, r in enumerate(rows):
        for f in fields:
            arr[0, i][f] = r[f]
    return arr


def write_cuhk_sysu(root: str, images: Dict[str, Sequence[Sequence[float]]], pool: Sequence[str],
                    train_persons: Sequence[Sequence[Tuple[str, Sequence[float]]]],
                    tests: Dict[int, Sequence[Tuple[Tuple[str, Sequence[float]], Sequence[Tuple[str, Sequence[float]]]]]]) -> None:
    """Write annotation/ in CUHK-SYSU's layout. ``images``: name -> its people's [x, y, w, h];
    ``train_persons``: per train identity, its (image, box) appearances; ``tests``: gallery size ->
    per query ((image, box), [(gallery image, box or [] when absent), ...]). Image files are the caller's."""
    import scipy.io

    ann = os.path.join(root, "annotation")
    os.makedirs(os.path.join(ann, "test", "train_test"), exist_ok=True)
    img_rows = [{"imname": n, "nAppear": float(len(b)),
                 "box": _struct([{"idlocate": np.asarray(x, dtype=np.float64)[None]} for x in b], ["idlocate"])}
                for n, b in images.items()]
    scipy.io.savemat(os.path.join(ann, "Images.mat"), {"Img": _struct(img_rows, ["imname", "nAppear", "box"])})
    cell = np.empty((len(pool), 1), dtype=object)
    for i, n in enumerate(pool):
        cell[i, 0] = n
    scipy.io.savemat(os.path.join(ann, "pool.mat"), {"pool": cell})
    train = np.empty((len(train_persons), 1), dtype=object)
    for i, apps in enumerate(train_persons):
        scene = _struct([{"imname": n, "idlocate": np.asarray(b, dtype=np.float64)[None], "ishard": 0.0} for n, b in apps],
                        ["imname", "idlocate", "ishard"])
        train[i, 0] = _struct([{"idname": f"p{i + 1}", "nAppear": float(len(apps)), "scene": scene}],
                              ["idname", "nAppear", "scene"])
    scipy.io.savemat(os.path.join(ann, "test", "train_test", "Train.mat"), {"Train": train})
    for size, queries in tests.items():
        rows = []
        for k, ((qn, qb), gal) in enumerate(queries):
            q = _struct([{"imname": qn, "idlocate": np.asarray(qb, dtype=np.float64)[None], "ishard": 0.0,
                          "idname": f"q{k + 1}"}], ["imname", "idlocate", "ishard", "idname"])
            g = _struct([{"imname": n, "idlocate": (np.asarray(b, dtype=np.float64)[None] if len(b) else np.zeros((0, 0))),
                          "ishard": 0.0} for n, b in gal], ["imname", "idlocate", "ishard"])
            rows.append({"Query": q, "Gallery": g})
        scipy.io.savemat(os.path.join(ann, "test", "train_test", f"TestG{size}.mat"),
                         {f"TestG{size}": _struct(rows, ["Query", "Gallery"])})


def convert_to_cuhk_sysu(search_set: SearchSet, root: str, gallery_sizes: Sequence[int] = (50,), seed: int = 0,
                         link: bool = True) -> Dict[str, int]:
    """Write ``search_set`` (e.g. the synthetic scenes, or PRW) to ``root`` in CUHK-SYSU's layout, so that
    ``read_cuhk_sysu`` / ``CUHKSYSUSearch`` and the CUHK-SYSU configs run on it. Returns the counts.

    * ``Image/SSM/``: the frames under their own names (hard links when ``link`` and the file system allows,
      else copies).
    * ``Images.mat``: every box of every frame (labelled and unlabelled); ``pool.mat``: the test frames.
    * ``Train.mat``: every training identity with all its appearances in the training frames.
    * ``TestG<N>.mat`` for each of ``gallery_sizes``: one query per query of ``search_set`` (its frame and
      box); its gallery, as in CUHK-SYSU's protocol, holds every other test frame showing the person and
      is filled up to N with test frames not showing it, drawn with ``seed`` (the same draw nests: the
      gallery of a smaller N is a prefix of a larger one). A set whose test frames cannot fill N is an
      error naming N and the count: the reader demands exactly N; so is a person shown in more other test
      frames than the smallest gallery holds. Test people without a query of their
      own are unlabelled in CUHK-SYSU's files (identities come from Train.mat and the queries only).
    """
    sizes = sorted({int(n) for n in gallery_sizes})
    bad = [n for n in sizes if n not in GALLERY_SIZES]
    if bad or not sizes:
        raise ValueError(f"CUHK-SYSU gallery sizes must be among {GALLERY_SIZES}, got {list(gallery_sizes)}")
    test_frames = list(search_set.test)
    if len(test_frames) - 1 < sizes[-1]:
        raise ValueError(f"CUHK-SYSU: a gallery of {sizes[-1]} frames needs at least {sizes[-1] + 1} test frames; "
                         f"{search_set.root} has {len(test_frames)}")
    root = os.path.abspath(os.path.expanduser(root))
    img_dir = os.path.join(root, "Image", "SSM")
    os.makedirs(img_dir, exist_ok=True)
    for name, f in search_set.frames.items():
        dst = os.path.join(img_dir, name)
        if os.path.exists(dst):
            continue
        try:
            if not link:
                raise OSError
            os.link(f.path, dst)
        except OSError:
            shutil.copyfile(f.path, dst)

    def xywh(b) -> list:
        b = np.asarray(b, dtype=np.float64).reshape(4)
        return [b[0], b[1], b[2] - b[0], b[3] - b[1]]

    images = {n: [xywh(b) for b in f.boxes] for n, f in search_set.frames.items()}
    train_set = set(search_set.train)
    by_pid: Dict[int, list] = {}
    for n in search_set.train:
        f = search_set.frames[n]
        for b, pid in zip(f.boxes, f.pids):
            if pid >= 0:
                by_pid.setdefault(int(pid), []).append((n, xywh(b)))
    train_persons = [by_pid[p] for p in sorted(by_pid)]
    frames_of: Dict[int, list] = {}  # test identity -> the test frames showing it, in test order
    for n in test_frames:
        for pid in set(search_set.frames[n].pids.tolist()):
            frames_of.setdefault(int(pid), []).append(n)
    rng = np.random.default_rng(seed)
    tests: Dict[int, list] = {n: [] for n in sizes}
    for q in search_set.queries:
        if q.frame in train_set:
            raise ValueError(f"CUHK-SYSU: query of identity {q.pid} is in training frame {q.frame}")
        own = np.nonzero(search_set.frames[q.frame].pids == q.pid)[0]
        if not len(own):
            raise ValueError(f"CUHK-SYSU: the query of identity {q.pid} has no annotated box in its frame {q.frame}")
        shows = [n for n in frames_of.get(int(q.pid), []) if n != q.frame]
        if len(shows) > sizes[0]:
            raise ValueError(f"CUHK-SYSU: identity {q.pid} is in {len(shows)} other test frames, more than a gallery "
                             f"of {sizes[0]} holds")
        skip = set(shows) | {q.frame}
        others = [n for n in test_frames if n not in skip]
        order = shows + [others[i] for i in rng.permutation(len(others))]
        for size in sizes:
            gallery = []
            for n in order[:size]:
                f = search_set.frames[n]
                hit = np.nonzero(f.pids == q.pid)[0]
                gallery.append((n, xywh(f.boxes[hit[0]]) if len(hit) else []))
            # the frame's own annotated box (CUHK-SYSU names a query by a box of Images.mat; PRW's query_info
            # box may differ from the annotation by rounding)
            tests[size].append(((q.frame, xywh(search_set.frames[q.frame].boxes[own[0]])), gallery))
    write_cuhk_sysu(root, images, test_frames, train_persons, tests)
    return {"frames": len(images), "train_frames": len(search_set.train), "test_frames": len(test_frames),
            "train_ids": len(train_persons), "queries": len(search_set.queries)}

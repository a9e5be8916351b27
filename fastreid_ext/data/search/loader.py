"""Person-search datasets and loaders for FastReID's trainer (NPSM, issue 12).

``ExtTrainer`` builds these instead of the crop loaders when ``DATASETS.NAMES`` / ``DATASETS.TESTS``
name a person-search dataset (:data:`SEARCH_DATASETS`, registered in FastReID's ``DATASET_REGISTRY``
by :mod:`fastreid_ext.data.datasets.search`).

* **Training** (:class:`SearchTrainSet`): one item per training frame with labelled people: the frame
  (resized to ``INPUT.SEARCH.FRAME_SIZE``, flipped with ``INPUT.SEARCH.FLIP_PROB``), its proposals and
  the people's boxes moved with it, and for **every labelled person a query crop of that person cut from
  another frame** (any other frame that shows the identity, drawn at random each time; the frame itself
  when there is none) through FastReID's training transforms (``INPUT.SIZE_TRAIN``, flip, padding,
  erasing, ...): one (frame, query) pair per person, so a frame's early layers run once for all its
  people. Targets: the training identities relabelled 0..N-1. FastReID's infinite ``TrainingSampler``
  (distributed-aware); ``SOLVER.IMS_PER_BATCH`` = **frames** per step.
* **Test** (:class:`SearchTestSet`): the protocol's (query, gallery frame) pairs, grouped by frame:
  each item is one batch of ``TEST.SEARCH.FRAMES_PER_BATCH`` gallery frames, their proposals, the crops
  of every query whose gallery holds one of them (cut from the query's frame, FastReID's test transform)
  and the pairs. Galleries: CUHK-SYSU's per-query lists (``DATASETS.SEARCH.GALLERY_SIZE``), PRW's every
  test frame but the query's own (``DATASETS.SEARCH.MULTI_CAMERA``: other cameras only). Query crops are
  kept in memory as uint8 at ``INPUT.SIZE_TEST`` (PRW's 2057 at 256x128: 200 MB).
* Proposals: selective search, computed once into ``DATASETS.SEARCH.PROPOSALS_DIR`` (default
  ``<dataset folder>/proposals``) with a progress bar, resumable (:mod:`.proposals`).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from .prw import SearchSet

logger = logging.getLogger(__name__)

__all__ = ["SEARCH_DATASETS", "is_search_dataset", "load_search_set", "SearchTrainSet", "SearchTestSet",
           "search_collate", "SearchBatches", "search_frame_size", "build_search_train_loader",
           "build_search_test_loader", "frame_tensor"]

#: registered names of the person-search datasets (fastreid_ext.data.datasets.search)
SEARCH_DATASETS = ("SyntheticScenes", "PRWSearch", "CUHKSYSUSearch")


def is_search_dataset(name: str) -> bool:
    return name in SEARCH_DATASETS


def load_search_set(cfg, name: str):
    """(the registered dataset object, its :class:`SearchSet`) of ``name`` under ``DATASETS.ROOT``."""
    from ..build import load_dataset

    data = load_dataset(cfg, name, gallery_size=int(cfg.DATASETS.SEARCH.GALLERY_SIZE))
    return data, data.search_set


def _proposals(cfg, data, frames: Sequence[str]) -> Dict[str, np.ndarray]:
    from .proposals import compute_proposals

    cache = cfg.DATASETS.SEARCH.PROPOSALS_DIR or os.path.join(data.dataset_folder, "proposals")
    from fastreid.utils import comm

    return compute_proposals(data.search_set, cache, frames=frames, progress=comm.is_main_process())


def search_frame_size(cfg):
    size = [int(v) for v in cfg.INPUT.SEARCH.FRAME_SIZE]
    if len(size) != 2 or min(size) < 0 or (0 in size and size != [0, 0]):
        raise ValueError(f"INPUT.SEARCH.FRAME_SIZE is {size}; [H, W] in pixels, or [0, 0] for the stored size")
    return None if size == [0, 0] else tuple(size)


def frame_tensor(path: str, size=None):
    """(3, H, W) float 0-255 frame resized (bilinear) to ``size`` (H, W) and its (sx, sy) scale."""
    img = Image.open(path).convert("RGB")
    w0, h0 = img.size
    if size is not None and (h0, w0) != tuple(size):
        img = img.resize((size[1], size[0]), Image.BILINEAR)
    w, h = img.size
    t = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
    return t, (w / w0, h / h0)


def _scale(boxes: np.ndarray, s) -> np.ndarray:
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([s[0], s[1], s[0], s[1]], np.float32)


class SearchTrainSet(Dataset):
    """Training frames (module docstring): one item = a training frame with every labelled person in it as
    a (frame, query) pair, each query crop drawn from another frame per access."""

    def __init__(self, search_set: SearchSet, proposals: Dict[str, np.ndarray], crop_transform, frame_size=None,
                 flip_prob: float = 0.5):
        self.s = search_set
        self.proposals = proposals
        self.crop_transform = crop_transform
        self.frame_size = frame_size
        self.flip_prob = float(flip_prob)
        self.frames = [f for f in search_set.train if (search_set.frames[f].pids >= 0).any()]
        if not self.frames:
            raise ValueError(f"{search_set.root}: the training frames have no labelled person")
        self.where = defaultdict(list)
        for f in self.frames:
            for k, p in enumerate(search_set.frames[f].pids):
                if p >= 0:
                    self.where[int(p)].append((f, k))
        self.pids = sorted(self.where)
        self.pid_index = {p: i for i, p in enumerate(self.pids)}
        self.num_people = sum(len(v) for v in self.where.values())
        single = sum(1 for v in self.where.values() if len({f for f, _ in v}) < 2)
        if single:
            logger.info("person search: %d of %d training identities appear in one frame only; their query crop "
                        "comes from the same frame", single, len(self.where))

    @property
    def num_classes(self) -> int:
        return len(self.pids)

    def __len__(self):
        return len(self.frames)

    def query_crop(self, pid: int, frame: str, k: int):
        """A crop of ``pid`` from another frame than ``frame`` (drawn at random), through the crop transform."""
        others = [(f, j) for f, j in self.where[pid] if f != frame] or [(frame, k)]
        qf, qk = others[int(torch.randint(len(others), ()))]
        qframe = self.s.frames[qf]
        x1, y1, x2, y2 = (int(round(v)) for v in qframe.boxes[qk])
        crop = Image.open(qframe.path).convert("RGB").crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)))
        return self.crop_transform(crop)

    def __getitem__(self, i):
        name = self.frames[i]
        fr = self.s.frames[name]
        people = [k for k, p in enumerate(fr.pids) if p >= 0]
        image, sc = frame_tensor(fr.path, self.frame_size)
        gt = _scale(fr.boxes[people], sc)
        props = _scale(self.proposals[name], sc)
        if torch.rand(()) < self.flip_prob:
            w = image.shape[-1]
            image = image.flip(-1)
            gt = np.stack([w - gt[:, 2], gt[:, 1], w - gt[:, 0], gt[:, 3]], 1)
            props = np.stack([w - props[:, 2], props[:, 1], w - props[:, 0], props[:, 3]], 1) if len(props) else props
        return {"images": image, "proposals": torch.from_numpy(np.ascontiguousarray(props)), "frames": name,
                "query_images": torch.stack([self.query_crop(int(fr.pids[k]), name, k) for k in people]),
                "targets": torch.tensor([self.pid_index[int(fr.pids[k])] for k in people], dtype=torch.long),
                "gt_boxes": torch.from_numpy(np.ascontiguousarray(gt, dtype=np.float32))}


#: per-pair fields of a training item, concatenated over the batch's frames
_PAIR_FIELDS = ("query_images", "targets", "gt_boxes")


def search_collate(items: List[dict]) -> dict:
    """A training batch of frames: ``images`` stacked, ``proposals`` / ``frames`` as lists, the per-pair
    fields concatenated, and ``pairs`` (P, 2) = (pair row, frame row)."""
    shapes = {tuple(it["images"].shape) for it in items}
    if len(shapes) > 1:
        raise ValueError(f"person search batch: frames of different sizes {sorted(shapes)} "
                         f"({[it['frames'] for it in items]}): set INPUT.SEARCH.FRAME_SIZE [H, W]")
    out = {"images": torch.stack([it["images"] for it in items]),
           "proposals": [it["proposals"] for it in items], "frames": [it["frames"] for it in items]}
    for key in _PAIR_FIELDS:
        out[key] = torch.cat([it[key] for it in items])
    rows = torch.cat([torch.full((len(it["targets"]),), j, dtype=torch.long) for j, it in enumerate(items)])
    out["pairs"] = torch.stack([torch.arange(len(rows)), rows], 1)
    return out


class SearchTestSet(Dataset):
    """The protocol's (query, frame) pairs in batches of gallery frames (module docstring)."""

    def __init__(self, search_set: SearchSet, proposals: Dict[str, np.ndarray], crop_size, frame_size=None,
                 frames_per_batch: int = 4, multi_camera: bool = False):
        from ...evaluation.search_evaluation import cuhk_sysu_gallery, prw_gallery

        self.s = search_set
        self.proposals = proposals
        self.frame_size = frame_size
        if not search_set.queries:
            raise ValueError(f"{search_set.root}: no query to evaluate")
        self.galleries = []
        for q in search_set.queries:
            g = cuhk_sysu_gallery(q.gallery, q.frame) if q.gallery is not None else \
                prw_gallery(q.frame, search_set.test, multi_camera=multi_camera)
            self.galleries.append(g)
        by_frame = defaultdict(list)
        for qi, g in enumerate(self.galleries):
            for f in g:
                by_frame[f].append(qi)
        order = [f for f in search_set.test if f in by_frame] + sorted(set(by_frame) - set(search_set.test))
        n = max(1, int(frames_per_batch))
        self.chunks = [order[i:i + n] for i in range(0, len(order), n)]
        self.by_frame = by_frame
        self.num_pairs = sum(len(g) for g in self.galleries)
        h, w = (int(v) for v in crop_size)
        crops = []
        for q in search_set.queries:
            x1, y1, x2, y2 = (int(round(v)) for v in q.box)
            img = Image.open(search_set.frames[q.frame].path).convert("RGB")
            crop = img.crop((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1))).resize((w, h), Image.BICUBIC)
            crops.append(torch.from_numpy(np.asarray(crop, dtype=np.uint8).copy()).permute(2, 0, 1))
        self.query_crops = torch.stack(crops)

    def __len__(self):  # FastReID's inference log: "Start inference on N images" = the pairs
        return self.num_pairs

    def batches(self) -> int:
        return len(self.chunks)

    def batch(self, i: int) -> dict:
        names = self.chunks[i]
        frames, scales, props = [], [], []
        for name in names:
            t, sc = frame_tensor(self.s.frames[name].path, self.frame_size)
            frames.append(t)
            scales.append(sc)
            props.append(torch.from_numpy(_scale(self.proposals[name], sc)))
        qids = sorted({qi for f in names for qi in self.by_frame[f]})
        local = {qi: j for j, qi in enumerate(qids)}
        pairs = [(local[qi], fj) for fj, f in enumerate(names) for qi in self.by_frame[f]]
        shapes = {tuple(t.shape) for t in frames}
        if len(shapes) > 1:
            raise ValueError(f"person search: frames {names} have different sizes {sorted(shapes)}: set "
                             "INPUT.SEARCH.FRAME_SIZE [H, W]")
        return {"images": torch.stack(frames), "proposals": props,
                "query_images": self.query_crops[qids].float(), "pairs": torch.tensor(pairs, dtype=torch.long),
                "pair_queries": torch.tensor([qids[q] for q, _ in pairs], dtype=torch.long),
                "pair_frames": [names[f] for _, f in pairs], "scales": torch.tensor(scales, dtype=torch.float32)}


class SearchBatches(Dataset):
    """The test set's batches as a map-style dataset (one item = one batch)."""

    def __init__(self, test_set: SearchTestSet):
        self.test_set = test_set

    def __len__(self):
        return self.test_set.batches()

    def __getitem__(self, i):
        return self.test_set.batch(i)


def _check_model(cfg):
    from fastreid.modeling.meta_arch.build import META_ARCH_REGISTRY

    name = cfg.MODEL.META_ARCHITECTURE
    if not getattr(META_ARCH_REGISTRY.get(name), "SEARCH", False):
        raise ValueError(f"{list(cfg.DATASETS.NAMES)} is a person-search dataset (whole frames); "
                         f"MODEL.META_ARCHITECTURE {name} is a crop re-id model: use NPSM "
                         f"(configs/Synthetic/npsm_R18.yml), or a crop dataset for {name}")


def build_search_train_loader(cfg):
    """FastReID-style infinite training loader of :class:`SearchTrainSet` pairs (one dataset)."""
    from fastreid.data.build import DataLoaderX
    from fastreid.data.samplers import TrainingSampler
    from fastreid.data.transforms import build_transforms
    from fastreid.utils import comm

    _check_model(cfg)
    names = list(cfg.DATASETS.NAMES)
    if len(names) != 1:
        raise ValueError(f"person search trains on one dataset; DATASETS.NAMES is {names}")
    data, s = load_search_set(cfg, names[0])
    props = _proposals(cfg, data, s.train)
    train_set = SearchTrainSet(s, props, build_transforms(cfg, is_train=True), search_frame_size(cfg),
                               cfg.INPUT.SEARCH.FLIP_PROB)
    logger.info("person search: %d training frames with %d labelled people, %d identities", len(train_set),
                train_set.num_people, train_set.num_classes)
    mini = cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size()
    sampler = torch.utils.data.sampler.BatchSampler(TrainingSampler(len(train_set), seed=None), mini, True)
    return DataLoaderX(comm.get_local_rank(), dataset=train_set, num_workers=cfg.DATALOADER.NUM_WORKERS,
                       batch_sampler=sampler, collate_fn=search_collate, pin_memory=False)


def build_search_test_loader(cfg, name: str):
    """(loader of :class:`SearchTestSet` batches, the test set): each process gets its share of the batches."""
    from fastreid.data.samplers import InferenceSampler

    if cfg.TEST.FLIP.ENABLED:
        raise ValueError("TEST.FLIP.ENABLED: flip-averaged features are not defined for person search (a frame's "
                         "regions move with the flip); set it to False")
    data, s = load_search_set(cfg, name)
    props = _proposals(cfg, data, sorted({f for f in s.test} | {f for q in s.queries for f in (q.gallery or [])}))
    test_set = SearchTestSet(s, props, cfg.INPUT.SIZE_TEST, search_frame_size(cfg), cfg.TEST.SEARCH.FRAMES_PER_BATCH,
                             cfg.DATASETS.SEARCH.MULTI_CAMERA)
    batches = SearchBatches(test_set)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, sampler=InferenceSampler(len(batches)),
                                         num_workers=cfg.DATALOADER.NUM_WORKERS)
    return loader, test_set

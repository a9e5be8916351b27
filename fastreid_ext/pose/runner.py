"""Keypoints for every image of a dataset: splits, chunks, shards, resume, merge, summary.

Work layout
-----------
A run covers the **splits** of one dataset (every split folder of a registered FastReID dataset, or
one folder of crops). A split's images are all image files under its folder (recursively; Market:
``bounding_box_train``, ``query``, ``bounding_box_test``, 36,036 files), plus any image the reader
lists outside its split folders, sorted by their key (the path relative to the split folder, the
keypoint files' ``file_name``). Each split is cut into **chunks** of :data:`CHUNK` images; the chunks
of all splits, numbered in order, are dealt to shards round-robin: ``--shard i/n`` takes the chunks
whose number ``% n == i``, so shards get equal work and together cover every image exactly once.

A finished chunk is a **part** in ``<keypoint folder>/.pose_parts/<split>/``: ``chunk_NNNNN.json``
(keys, raw x / y, scores, crop sizes, unreadable images with their reason; the model's identity)
and, with ``--save-heatmaps``, ``chunk_NNNNN.npy`` (float16 heatmaps) plus the affines in the JSON.
Each file is written to a temporary name and renamed; the JSON is written last and is the chunk's
commit, so a process killed at any point leaves whole parts or nothing.

When all chunks of a split exist (whichever process finishes the last one, or a rerun), they are
**merged** under a lock (``flock`` on ``.merge.lock``: released by the kernel if its holder dies) into
the final files - the stored heatmaps first
(:mod:`fastreid_ext.data.stored_heatmaps`), the keypoint file last
(:func:`fastreid_ext.data.coco_keypoints.write_coco_keypoints`, atomic) - and the parts are deleted.
A split is done when its keypoint file records this model's identity and this split's image list
(and, with ``--save-heatmaps``, its heatmap index does too).

Resume and mixing: a rerun skips done splits and existing parts. Every part and final file records
the model's identity (name, hash of the weights, settings); a part or file of another identity (or a
keypoint file not written by this tool, e.g. ground truth) stops the run with an error naming it,
unless ``overwrite`` is set: results of two models are never mixed in one file. Parts whose image
list no longer matches (images added or removed) are recomputed. Only the visibility threshold
changing rewrites a done file from its own x / y / scores, without the model. To redo a done split
with the same model (e.g. after repairing unreadable images), delete its keypoint file. Shards of one
run must be given the same model, settings and ``--overwrite``.

Unreadable images are reported by name with the reason (:func:`fastreid_ext.data.image_check.check_image`)
and skipped: they get an entry with every joint at visibility 0 and score 0 (so a training run that
drops unreadable images itself still finds every other image), and the file's ``info`` lists them.

Threads: a pool decodes and prepares images (PIL, OpenCV release the GIL) while the main thread runs
the model on batches; at most a few batches are in flight, so memory stays flat on any dataset size.
"""

from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import shutil
import sys
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Optional

import numpy as np

from ..data.coco_keypoints import NUM_KEYPOINTS, KeypointRecord, read_coco_keypoints, write_coco_keypoints
from ..data.dataset_keypoints import _locate, keypoint_file_of, split_folders
from ..data.stored_heatmaps import HeatmapWriter, heatmap_files_of, read_index, write_json_atomic
from ..errors import UserError
from .base import PoseModel, identity_hash, to_coco_keypoints

__all__ = ["CHUNK", "IMAGE_EXTENSIONS", "RunSummary", "Split", "dataset_splits", "folder_splits", "list_images",
           "parse_shard", "run"]

#: images per chunk (the unit of sharding and resuming)
CHUNK = 256
#: image files a split folder is scanned for (case-insensitive)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
#: the folder of unfinished work inside the keypoint folder
PARTS_FOLDER = ".pose_parts"
#: schema version of parts and of the ``pose_tool`` block in the files
TOOL_VERSION = 1
#: default visibility threshold on the model's score
DEFAULT_THRESHOLD = 0.3


@dataclass
class Split:
    """One split folder: its images (keys relative to the folder) and output files."""

    name: str
    folder: str
    keys: list[str]
    keypoint_file: str
    heatmap_index: str

    @property
    def parts_dir(self) -> str:
        return osp.join(osp.dirname(self.keypoint_file), PARTS_FOLDER, self.name)

    def path(self, key: str) -> str:
        return osp.join(self.folder, *key.split("/"))

    def chunks(self, size: int) -> list[list[str]]:
        return [self.keys[i:i + size] for i in range(0, len(self.keys), size)]

    @property
    def keys_sha1(self) -> str:
        return hashlib.sha1("\n".join(self.keys).encode("utf-8", "surrogatepass")).hexdigest()


# ------------------------------------------------------------------------------------------------
# what to run on
# ------------------------------------------------------------------------------------------------
def list_images(folder: str) -> list[str]:
    """Keys (``/``-separated paths relative to ``folder``) of every image file under it, sorted."""
    keys = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = osp.relpath(dirpath, folder)
        for f in filenames:
            if f.lower().endswith(IMAGE_EXTENSIONS) and not f.startswith("."):
                keys.append(f if rel == "." else f"{rel}/{f}".replace(os.sep, "/"))
    return sorted(keys)


def _make_split(folder: str, keys: Iterable[str], out: str) -> Split:
    folder = osp.normpath(osp.abspath(folder))
    return Split(name=osp.basename(folder), folder=folder, keys=sorted(set(keys)),
                 keypoint_file=keypoint_file_of(folder, out), heatmap_index=heatmap_files_of(folder, out)[1])


def folder_splits(folder: str, out: str = "") -> list[Split]:
    """One split: every image under ``folder`` (a folder of crops). Output: ``keypoint_file_of(folder,
    out)``, i.e. ``<parent>/keypoints/person_keypoints_<folder name>.json`` by default."""
    if not osp.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    split = _make_split(folder, list_images(folder), out)
    if not split.keys:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {folder}")
    return [split]


def dataset_splits(dataset, out: str = "", name: str = "") -> list[Split]:
    """The splits of a dataset reader (a FastReID ``ImageDataset``): its split folders
    (:func:`fastreid_ext.data.dataset_keypoints.split_folders`) with every image file under each,
    plus the images its ``train`` / ``query`` / ``gallery`` lists hold outside them (grouped by
    parent folder, the matching rule of the training side)."""
    folders = split_folders(dataset)
    keys: dict[str, set] = {f: set(list_images(f)) for f in folders if osp.isdir(f)}
    for attr in ("train", "query", "gallery"):
        for item in getattr(dataset, attr, None) or []:
            folder, key = _locate(item[0], folders)
            keys.setdefault(folder, set()).add(key)
    splits = [_make_split(f, k, out) for f, k in keys.items() if k]
    if not splits:
        raise ValueError(f"dataset {name or type(dataset).__name__}: no images in its split folders {folders}")
    seen: dict[str, str] = {}
    for s in splits:  # two split folders of one name would write the same file
        if s.keypoint_file in seen:
            raise ValueError(f"split folders {seen[s.keypoint_file]} and {s.folder} would both write {s.keypoint_file}")
        seen[s.keypoint_file] = s.folder
    return sorted(splits, key=lambda s: s.folder)


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with 0 <= i < n."""
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4 (shard i of n, counted from 0)") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need n >= 1 and 0 <= i < n")
    return i, n


# ------------------------------------------------------------------------------------------------
# files: identity checks, parts
# ------------------------------------------------------------------------------------------------
def _tool_block(path: str) -> Optional[dict]:
    """The ``pose_tool`` block of a keypoint file's ``info``, ``{}`` when the file has none (not
    written by this tool), None when there is no file."""
    if not osp.isfile(path):
        return None
    try:
        with open(path) as f:
            info = json.load(f).get("info") or {}
    except (OSError, ValueError, AttributeError):
        return {"unreadable": True}
    block = info.get("pose_tool") if isinstance(info, dict) else None
    return block if isinstance(block, dict) else {}


def _describe_identity(block: dict) -> str:
    ident = block.get("identity") or {}
    if not ident:
        return "not written by the pose tool (ground truth, or another program)"
    w = ident.get("weights_sha256", "?")
    return f"made by model '{ident.get('model', '?')}' (weights {w[:12]}, settings {block.get('identity_hash', '?')})"


def _part_paths(split: Split, chunk: int) -> tuple[str, str]:
    base = osp.join(split.parts_dir, f"chunk_{chunk:05d}")
    return base + ".json", base + ".npy"


def _read_part(path: str) -> Optional[dict]:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # torn or foreign: recomputed


@dataclass
class _Plan:
    split: Split
    chunks: list[list[str]]
    done: bool = False
    rethreshold: bool = False  # done, but written with another visibility threshold
    have: set = field(default_factory=set)  # chunk numbers with a valid part


class _Conflict(UserError):
    pass


def _is_done(split: Split, block: Optional[dict], ident_hash: str, want_heatmaps: bool) -> bool:
    """A split is done when its keypoint file records this identity and this image list and, when
    heatmaps are wanted, its heatmap index records this identity and this image list too."""
    if not block or block.get("identity_hash") != ident_hash or block.get("keys_sha1") != split.keys_sha1:
        return False
    if not want_heatmaps:
        return True
    try:
        tool = read_index(split.heatmap_index).get("info") or {}
    except (FileNotFoundError, ValueError):
        return False
    return tool.get("identity_hash") == ident_hash and tool.get("keys_sha1") == split.keys_sha1


def _check_split(split: Split, ident_hash: str, want_heatmaps: bool, threshold: float, chunk_size: int,
                 overwrite: bool) -> _Plan:
    chunks = split.chunks(chunk_size)
    plan = _Plan(split, chunks)
    block = _tool_block(split.keypoint_file)
    if block is not None and block.get("identity_hash") != ident_hash and not overwrite:
        raise _Conflict(f"{split.keypoint_file} exists and was {_describe_identity(block)}; this run's model has "
                        f"settings {ident_hash}. Results of different models are never mixed: pass --overwrite "
                        "to replace it, or --out to write elsewhere")
    if _is_done(split, block, ident_hash, want_heatmaps):
        plan.done = True
        plan.rethreshold = float(block.get("visibility_threshold", threshold)) != float(threshold)
        if osp.isdir(split.parts_dir):  # killed between the final write and the clean-up
            shutil.rmtree(split.parts_dir, ignore_errors=True)
        return plan
    if osp.isdir(split.parts_dir):
        for n, keys in enumerate(chunks):
            jpath, npath = _part_paths(split, n)
            part = _read_part(jpath)
            if part is None:
                continue
            if part and part.get("identity_hash") != ident_hash:
                if not overwrite:
                    raise _Conflict(f"unfinished results in {split.parts_dir} were {_describe_identity(part)}; this "
                                    f"run's model has settings {ident_hash}. Finish them with that model, or pass "
                                    "--overwrite to discard them")
                part = {}
            valid = (part and part.get("keys") == keys and part.get("version") == TOOL_VERSION
                     and (not want_heatmaps or (part.get("heatmaps") and osp.isfile(npath))))
            if valid:
                plan.have.add(n)
            else:
                for p in (jpath, npath):
                    if osp.exists(p):
                        os.remove(p)
        for n in range(len(chunks), 10 ** 5):  # parts beyond the current chunk count: the split shrank
            jpath, npath = _part_paths(split, n)
            if not osp.exists(jpath):
                break
            for p in (jpath, npath):
                if osp.exists(p):
                    os.remove(p)
    return plan


# ------------------------------------------------------------------------------------------------
# images
# ------------------------------------------------------------------------------------------------
def _load(model: PoseModel, path: str):
    """``(Prepared, None)`` or ``(None, reason)`` for one image file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except Exception as e:  # noqa: BLE001 - PIL raises many kinds; the reason names it
        from ..data.image_check import check_image

        return None, check_image(path) or f"cannot decode: {e}"
    try:
        return model.prepare(arr), None
    except Exception as e:  # noqa: BLE001 - e.g. a degenerate image size
        return None, f"cannot preprocess ({arr.shape[1]}x{arr.shape[0]}): {e}"


def _bounded_map(pool: ThreadPoolExecutor, fn: Callable, items: Iterable, ahead: int):
    """``map(fn, items)`` in order, with at most ``ahead`` calls in flight."""
    pending: deque = deque()
    for it in items:
        pending.append(pool.submit(fn, it))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


# ------------------------------------------------------------------------------------------------
# one chunk
# ------------------------------------------------------------------------------------------------
def _write_part(split: Split, n: int, keys: list[str], ident: dict, ident_hash: str, results: dict,
                unreadable: dict, heatmaps: Optional[np.ndarray], hm_rows: list[str]) -> None:
    os.makedirs(split.parts_dir, exist_ok=True)
    jpath, npath = _part_paths(split, n)
    if heatmaps is not None:
        tmp = f"{npath}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}.npy"
        np.save(tmp, heatmaps)
        os.replace(tmp, npath)
    write_json_atomic(jpath, {
        "version": TOOL_VERSION, "identity_hash": ident_hash, "identity": ident, "split": split.name, "chunk": n,
        "keys": keys, "results": results, "unreadable": unreadable, "heatmaps": heatmaps is not None,
        "heatmap_rows": hm_rows})


# ------------------------------------------------------------------------------------------------
# merge
# ------------------------------------------------------------------------------------------------
@contextmanager
def _merge_lock(split: Split):
    """Hold ``<parts>/.merge.lock`` with ``flock`` (yields True), or yield False when another process
    holds it. The kernel drops the lock when its holder exits or is killed: no stale locks."""
    import fcntl

    path = osp.join(split.parts_dir, ".merge.lock")
    with open(path, "a") as f:  # (the lock file itself goes with the parts folder)
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _records_from_parts(split: Split, n_chunks: int):
    for n in range(n_chunks):
        part = _read_part(_part_paths(split, n)[0])
        if not part:
            raise FileNotFoundError(f"part {n} of split '{split.name}' vanished from {split.parts_dir} "
                                    "during the merge")
        yield n, part


def _final_records(keys, results: dict, unreadable: dict, threshold: float):
    for key in keys:
        if key in unreadable:
            yield KeypointRecord(key, np.zeros((NUM_KEYPOINTS, 3)), np.zeros(NUM_KEYPOINTS))
            continue
        r = results[key]
        h, w = r["size"]
        kp = to_coco_keypoints(np.asarray(r["xy"]), np.asarray(r["scores"]), (h, w), threshold)
        yield KeypointRecord(key, kp, r["scores"], width=w, height=h)


def _tool_info(split: Split, ident: dict, ident_hash: str, threshold: float, unreadable: dict, describe: str) -> dict:
    return {"description": f"fastreid_ext pose tool keypoints ({split.name}): {describe}",
            "pose_tool": {"version": TOOL_VERSION, "identity": ident, "identity_hash": ident_hash,
                          "visibility_threshold": float(threshold), "keys_sha1": split.keys_sha1,
                          "images": len(split.keys), "unreadable": unreadable, "model": describe,
                          "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}}


def _merge(split: Split, n_chunks: int, ident: dict, ident_hash: str, threshold: float, want_heatmaps: bool,
           heatmap_size, describe: str, log) -> bool:
    """Merge a split's parts into its final files (see the module docstring); False when another
    process holds the merge lock."""
    if not osp.isdir(split.parts_dir):  # another process merged and cleaned up meanwhile
        return _is_done(split, _tool_block(split.keypoint_file), ident_hash, want_heatmaps)
    with _merge_lock(split) as held:
        if not held:
            log(f"split '{split.name}': being merged by another process")
            return False
        if not _is_done(split, _tool_block(split.keypoint_file), ident_hash, want_heatmaps):  # or another did
            parts = list(_records_from_parts(split, n_chunks))
            results, unreadable = {}, {}
            for _, part in parts:
                results.update(part["results"])
                unreadable.update(part["unreadable"])
            info = _tool_info(split, ident, ident_hash, threshold, unreadable, describe)
            if want_heatmaps:  # first: the keypoint file, written last, marks the split done
                _merge_heatmaps(split, parts, results, heatmap_size, info["pose_tool"])
            write_coco_keypoints(split.keypoint_file, _final_records(split.keys, results, unreadable, threshold),
                                 split.name, info=info)
    shutil.rmtree(split.parts_dir, ignore_errors=True)
    parent = osp.dirname(split.parts_dir)
    try:
        os.rmdir(parent)  # the .pose_parts folder, once no split has parts left
    except OSError:
        pass
    return True


def _merge_heatmaps(split: Split, parts, results: dict, heatmap_size, tool: dict) -> None:
    """One float16 array + index for the split from the parts' arrays, in the split's key order;
    an unreadable image gets zeros (and crop size 0 x 0 in the index)."""
    where: dict[str, tuple[np.ndarray, int]] = {}
    for n, part in parts:
        if part["heatmap_rows"]:
            arr = np.load(_part_paths(split, n)[1], mmap_mode="r")
            for i, key in enumerate(part["heatmap_rows"]):
                where[key] = (arr, i)
    writer = HeatmapWriter(split.heatmap_index, len(split.keys), heatmap_size, info=tool)
    try:
        zeros = np.zeros((NUM_KEYPOINTS, *heatmap_size), dtype=np.float16)
        for key in split.keys:
            if key in where:
                arr, i = where[key]
                writer.add(key, arr[i], results[key]["affine"], results[key]["size"])
            else:
                writer.add(key, zeros, [[1, 0, 0], [0, 1, 0]], (0, 0))
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def _rethreshold(split: Split, threshold: float, log) -> None:
    """Rewrite a done split's visibility flags for another threshold from its own x, y and scores."""
    kf = read_coco_keypoints(split.keypoint_file)
    with open(split.keypoint_file) as f:
        sizes = {im["file_name"]: (im.get("height"), im.get("width")) for im in json.load(f)["images"]}
    info = dict(kf.info)
    tool = info["pose_tool"] = dict(info["pose_tool"], visibility_threshold=float(threshold))
    unreadable = tool.get("unreadable") or {}
    results = {k: {"xy": kp[:, :2].tolist(), "scores": kf.scores[k].tolist(), "size": sizes[k]}
               for k, kp in kf.keypoints.items() if k not in unreadable}
    write_coco_keypoints(split.keypoint_file, _final_records(split.keys, results, unreadable, threshold),
                         split.name, info=info)
    log(f"split '{split.name}': visibility flags rewritten for threshold {threshold} (no model run)")


# ------------------------------------------------------------------------------------------------
# the run
# ------------------------------------------------------------------------------------------------
@dataclass
class SplitStats:
    name: str
    file: str
    images: int = 0
    unreadable: int = 0
    mean_score: float = float("nan")
    joints_below: int = 0
    joints: int = 0
    state: str = "done"


@dataclass
class RunSummary:
    """What :func:`run` did."""

    model: str
    processed: int = 0  #: images run through the model now
    skipped: int = 0  #: images of this shard already done (resumed)
    unreadable: list = field(default_factory=list)  #: ``(path, reason)`` met now
    seconds: float = 0.0
    splits: list = field(default_factory=list)  #: :class:`SplitStats`
    threshold: float = DEFAULT_THRESHOLD

    @property
    def images_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else float("nan")

    def table(self) -> str:
        lines = [f"pose tool: {self.model}",
                 f"  this run: {self.processed} images in {self.seconds:.1f} s ({self.images_per_s:.1f} img/s), "
                 f"{self.skipped} already done, {len(self.unreadable)} unreadable (skipped)"]
        head = f"  {'split':<22} {'images':>7} {'unreadable':>10} {'mean score':>10} {'joints < thr':>14}  file"
        lines.append(head)
        for s in self.splits:
            if s.state != "done":
                lines.append(f"  {s.name:<22} {s.state}")
                continue
            pct = 100.0 * s.joints_below / s.joints if s.joints else float("nan")
            lines.append(f"  {s.name:<22} {s.images:>7} {s.unreadable:>10} {s.mean_score:>10.3f} "
                         f"{pct:>13.1f}%  {s.file}")
        lines.append(f"  (joints < thr: joints whose score is below the visibility threshold {self.threshold} or that "
                     "lie outside the crop: visibility 0 in the file)")
        return "\n".join(lines)


def _split_stats(split: Split) -> SplitStats:
    kf = read_coco_keypoints(split.keypoint_file)
    unreadable = (kf.info.get("pose_tool") or {}).get("unreadable") or {}
    readable = [k for k in kf.keypoints if k not in unreadable]
    scores = np.array([kf.scores[k] for k in readable]) if readable else np.zeros((0, NUM_KEYPOINTS))
    vis = np.array([kf.keypoints[k][:, 2] for k in readable]) if readable else np.zeros((0, NUM_KEYPOINTS))
    return SplitStats(split.name, split.keypoint_file, images=len(kf.keypoints), unreadable=len(unreadable),
                      mean_score=float(scores.mean()) if scores.size else float("nan"),
                      joints_below=int((vis == 0).sum()), joints=int(vis.size))


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class _Chunk:
    """The results of one chunk while it is being computed."""

    def __init__(self, plan: _Plan, n: int):
        self.plan, self.n = plan, n
        self.results: dict = {}
        self.unreadable: dict = {}
        self.heatmaps: list = []
        self.rows: list = []

    def add(self, out, i: int, key: str, prep, with_heatmaps: bool) -> None:
        r = {"xy": out.keypoints[i].astype(float).round(3).tolist(),
             "scores": out.scores[i].astype(float).round(5).tolist(), "size": list(prep.crop_size)}
        if with_heatmaps:
            r["affine"] = np.asarray(out.affines[i], dtype=float).tolist()
            self.heatmaps.append(out.heatmaps[i].astype(np.float16))
            self.rows.append(key)
        self.results[key] = r

    def write(self, ident: dict, ident_hash: str, with_heatmaps: bool, heatmap_size) -> None:
        hm = None
        if with_heatmaps:
            hm = (np.stack(self.heatmaps) if self.heatmaps
                  else np.zeros((0, NUM_KEYPOINTS, *heatmap_size), np.float16))
        _write_part(self.plan.split, self.n, self.plan.chunks[self.n], ident, ident_hash, self.results,
                    self.unreadable, hm, self.rows)
        self.plan.have.add(self.n)


def run(model: PoseModel, splits: list[Split], *, shard: tuple[int, int] = (0, 1), save_heatmaps: bool = False,
        threshold: float = DEFAULT_THRESHOLD, overwrite: bool = False, batch_size: Optional[int] = None,
        workers: Optional[int] = None, chunk_size: int = CHUNK, progress: bool = True,
        log: Callable[[str], None] = print) -> RunSummary:
    """Run ``model`` on this shard's chunks of ``splits``, merge every split whose chunks are all there,
    and return the summary (see the module docstring). Raises :class:`fastreid_ext.errors.UserError`
    when existing results come from another model (unless ``overwrite``).

    ``progress``: a tqdm bar (images, img/s) when stderr is a terminal, else a log line every 30 s.
    """
    t0 = time.perf_counter()
    if save_heatmaps and not all(model.heatmap_size):
        raise UserError(f"--save-heatmaps: model {model.name} gives no heatmaps")
    ident = model.identity
    ident_hash = identity_hash(ident)
    describe = model.describe()
    bs = int(batch_size or model.default_batch_size)
    if bs < 1:
        raise UserError(f"--batch-size must be >= 1, got {bs}")
    shard_i, shard_n = shard
    summary = RunSummary(model=describe, threshold=threshold)

    plans = [_check_split(s, ident_hash, save_heatmaps, threshold, chunk_size, overwrite) for s in splits]
    todo: list[tuple[_Plan, int]] = []
    for g, (plan, n) in enumerate((p, n) for p in plans for n in range(len(p.chunks))):
        if g % shard_n != shard_i:
            continue
        if plan.done or n in plan.have:
            summary.skipped += len(plan.chunks[n])
        else:
            todo.append((plan, n))
    total = sum(len(p.chunks[n]) for p, n in todo)
    log(f"pose tool: {describe}; {len(splits)} split(s), {sum(len(s.keys) for s in splits)} images; shard "
        f"{shard_i}/{shard_n}: {total} to do, {summary.skipped} already done")

    from tqdm import tqdm

    bar = tqdm(total=total, unit="img", desc="pose", dynamic_ncols=True, disable=not (progress and _stderr_is_tty()))
    next_line, seen = t0 + 30.0, 0

    def advance(k: int) -> None:
        nonlocal next_line, seen
        bar.update(k)
        seen += k
        if progress and bar.disable and time.perf_counter() >= next_line:
            log(f"  {seen}/{total} images, {summary.processed / (time.perf_counter() - t0):.1f} img/s")
            next_line = time.perf_counter() + 30.0

    def predict(chunk: _Chunk, pending: list) -> None:
        if pending:
            out = model.predict([prep for _, prep in pending], heatmaps=save_heatmaps)
            for i, (key, prep) in enumerate(pending):
                chunk.add(out, i, key, prep, save_heatmaps)
            summary.processed += len(pending)
            advance(len(pending))
            pending.clear()

    try:
        with ThreadPoolExecutor(max_workers=workers or min(8, max(2, os.cpu_count() or 2)),
                                thread_name_prefix="pose-load") as pool:
            jobs = ((plan, n, key) for plan, n in todo for key in plan.chunks[n])
            loaded = _bounded_map(pool, lambda j: (j, _load(model, j[0].split.path(j[2]))), jobs, ahead=4 * bs + 8)
            chunk, pending = None, []
            for (plan, n, key), (prep, reason) in loaded:
                if chunk is None or chunk.plan is not plan or chunk.n != n:
                    if chunk is not None:
                        predict(chunk, pending)
                        chunk.write(ident, ident_hash, save_heatmaps, model.heatmap_size)
                    chunk = _Chunk(plan, n)
                if prep is None:
                    chunk.unreadable[key] = reason
                    summary.unreadable.append((plan.split.path(key), reason))
                    log(f"unreadable image skipped: {plan.split.path(key)}: {reason}")
                    advance(1)
                    continue
                pending.append((key, prep))
                if len(pending) >= bs:
                    predict(chunk, pending)
            if chunk is not None:
                predict(chunk, pending)
                chunk.write(ident, ident_hash, save_heatmaps, model.heatmap_size)
    finally:
        bar.close()

    for plan in plans:
        complete = plan.done or len(plan.have) == len(plan.chunks)
        if not plan.done and complete:
            plan.done = _merge(plan.split, len(plan.chunks), ident, ident_hash, threshold, save_heatmaps,
                               model.heatmap_size, describe, log)
        elif plan.done and plan.rethreshold:
            _rethreshold(plan.split, threshold, log)
        if plan.done:
            summary.splits.append(_split_stats(plan.split))
        else:
            state = ("being merged by another process" if complete else
                     f"{len(plan.have)} of {len(plan.chunks)} chunks done (other shards pending)")
            summary.splits.append(SplitStats(plan.split.name, plan.split.keypoint_file, state=state))
    summary.seconds = time.perf_counter() - t0
    return summary



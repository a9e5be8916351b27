"""Keypoints for the items of any registered dataset, read from keypoint files.

The file format is the contract of :mod:`fastreid_ext.data.coco_keypoints`. Which file and which
entry belong to an image (the matching rule):

* **Split folder**: the dataset reader's folder the image lies in. FastReID's readers (and ours)
  keep their folders in ``*_dir`` attributes (``train_dir``, ``query_dir``, ``gallery_dir``,
  MSMT17's ``train_dir`` / ``test_dir``, ...); the split folders are those that hold no other such
  folder (``dataset_dir`` / ``data_dir``, the dataset folder, is dropped), and an image's split
  folder is the deepest one it lies under. An image outside all of them uses its parent folder.
* **File**: ``person_keypoints_<split folder name>.json`` in ``DATASETS.KEYPOINTS_DIR`` when set,
  else in ``<dataset folder>/keypoints/`` where the dataset folder is the split folder's parent
  (the layout of the synthetic sets and of the offline pose tool's output). Market / Duke:
  ``person_keypoints_bounding_box_train.json``, ``..._query.json``, ``..._bounding_box_test.json``;
  MSMT17: ``..._train.json`` / ``..._test.json`` (query and gallery share the ``test`` folder).
* **Entry**: the image's path relative to its split folder (``/``-separated; the bare file name for
  flat layouts). A file holding only bare file names also matches images in sub-folders by base
  name (an error if two such images share one).

Every image must have an entry: missing files and images without keypoints are errors that name
the file, the number of images and the first few. Torch-free and FastReID-free.
"""

from __future__ import annotations

import os
import os.path as osp
from collections import defaultdict

from .coco_keypoints import KEYPOINTS_FOLDER, KeypointFile, keypoint_file_name, read_coco_keypoints

__all__ = ["attach_keypoints", "keypoint_file_of", "split_folders"]

_SHOW = 5  # image names shown in an error


def split_folders(dataset) -> list[str]:
    """Absolute split folders of a dataset reader (its ``*_dir`` attributes that hold no other one),
    deepest first."""
    cands = {osp.normpath(osp.abspath(v)) for k, v in vars(dataset).items()
             if k.endswith("_dir") and isinstance(v, str) and v}
    leaves = [c for c in cands if not any(o != c and o.startswith(c.rstrip(os.sep) + os.sep) for o in cands)]
    return sorted(leaves, key=lambda c: (-len(c), c))


def _locate(path: str, folders: list[str]) -> tuple[str, str]:
    """``(split folder, key)`` of image ``path``: the key is its path relative to the folder."""
    p = osp.normpath(osp.abspath(path))
    for f in folders:
        if p.startswith(f.rstrip(os.sep) + os.sep):
            return f, osp.relpath(p, f).replace(os.sep, "/")
    return osp.dirname(p), osp.basename(p)


def keypoint_file_of(split_folder: str, keypoints_dir: str = "") -> str:
    """Keypoint file of a split folder: ``<keypoints_dir or <parent>/keypoints>/person_keypoints_<name>.json``."""
    folder = keypoints_dir or osp.join(osp.dirname(split_folder), KEYPOINTS_FOLDER)
    return osp.join(folder, keypoint_file_name(osp.basename(split_folder)))


def _where(keypoints_dir: str) -> str:
    return (f"DATASETS.KEYPOINTS_DIR = '{keypoints_dir}'" if keypoints_dir else
            f"the default location <dataset folder>/{KEYPOINTS_FOLDER}/ (DATASETS.KEYPOINTS_DIR is '')")


def _lookup(kf: KeypointFile, keys: list[str], where: str):
    """Keypoints of ``keys`` in ``kf`` (None where absent), with the bare-name fallback."""
    out, by_base = [], {}
    for key in keys:
        kp = kf.keypoints.get(key)
        if kp is None and "/" in key and kf.flat_names:
            base = key.rsplit("/", 1)[1]
            kp = kf.keypoints.get(base)
            if kp is not None:
                other = by_base.setdefault(base, key)
                if other != key:
                    raise ValueError(f"keypoint file {kf.path} holds bare file names, and '{base}' names two "
                                     f"images of {where} ('{other}' and '{key}'): write file_name as the "
                                     "path relative to the split folder")
        out.append(kp)
    return out


def _make_command(dataset, name: str, split_folder: str, keypoints_dir: str) -> str:
    """The offline pose tool's command line that writes the keypoint files of this dataset."""
    if dataset is not None and name:
        # FastReID's readers keep the root they were given (DATASETS.ROOT)
        root = getattr(dataset, "root", None) or osp.dirname(osp.dirname(split_folder))
        src = f"--dataset {name} --root {root}"
    else:
        src = f"--images {split_folder}"
    out = f" --out {keypoints_dir}" if keypoints_dir else ""
    return f"python tools/make_keypoints.py {src} --model blazepose{out} (or --model hrnet --checkpoint <file>)"


def attach_keypoints(items, dataset=None, keypoints_dir: str = "", name: str = ""):
    """Items with ``"keypoints"`` ((17, 3) float32) added to their extras dict, from keypoint files.

    Args:
        items: ``(path, pid, camid[, extras])`` tuples of ``dataset``; FastReID's 3-tuples become
            ``(path, pid, camid, {"keypoints": ...})``, existing extras (attributes) are kept.
        dataset: the reader the items come from (its ``*_dir`` attributes give the split folders);
            ``None``: every image's parent folder is its split folder.
        keypoints_dir: folder of the keypoint files (``DATASETS.KEYPOINTS_DIR``); ``""`` =
            ``<dataset folder>/keypoints/``.
        name: dataset name for error messages.

    Raises ``FileNotFoundError`` for a missing keypoint file and ``ValueError`` when images have no
    entry in their file (how many, the first few, the file).
    """
    name = name or (type(dataset).__name__ if dataset is not None else "dataset")
    folders = split_folders(dataset) if dataset is not None else []
    groups: dict[tuple[str, str], list[tuple[int, str]]] = defaultdict(list)
    for i, it in enumerate(items):
        folder, key = _locate(it[0], folders)
        groups[(folder, keypoint_file_of(folder, keypoints_dir))].append((i, key))
    out = list(items)
    for (folder, path), members in groups.items():
        split = osp.basename(folder)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f"{name}: keypoint file not found: {path} (looked at {_where(keypoints_dir)}); it must hold "
                f"the keypoints of the {len(members)} images of split folder '{split}' ({folder}), because "
                "INPUT.EXTRA_FIELDS asks for keypoints/heatmaps. Write it with the offline pose tool: "
                f"{_make_command(dataset, name, folder, keypoints_dir)}; or set DATASETS.KEYPOINTS_DIR to the "
                f"folder holding {keypoint_file_name(split)}.")
        kf = read_coco_keypoints(path)
        where = f"{name} '{split}'"
        found = _lookup(kf, [key for _, key in members], where)
        missing = [key for (_, key), kp in zip(members, found) if kp is None]
        if missing:
            example = f"; its entries look like '{kf.images[0]}'" if kf.images else "; it lists no images"
            raise ValueError(
                f"{name}: {len(missing)} of {len(members)} images of split folder '{split}' have no keypoints "
                f"in {path} (first: {', '.join(missing[:_SHOW])}){example}. Entries are matched by the image "
                "path relative to the split folder (the bare file name for flat layouts). Rewrite the file "
                f"for this dataset with: {_make_command(dataset, name, folder, keypoints_dir)}")
        for (i, _), kp in zip(members, found):
            it = items[i]
            extras = dict(it[3]) if len(it) > 3 and it[3] else {}
            extras["keypoints"] = kp
            out[i] = (it[0], it[1], it[2], extras, *it[4:])
    return out

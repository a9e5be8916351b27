"""Dataset and collator that carry per-image extra fields (attributes, keypoints, heatmaps).

Dataset items are FastReID's ``(img_path, pid, camid)`` tuples, optionally with a fourth element:
a dict of per-image numpy arrays (``"attributes"``: int64 class indices with -1 = unlabelled;
``"keypoints"``: (17, 3) COCO keypoints in the stored image's pixels). :class:`ExtCommDataset`
turns the requested ones into tensors in the sample dict, so they reach the model in the batch.
"""

from __future__ import annotations

from .. import compat  # FastReID compatibility patches before any fastreid import

compat.apply()

import torch  # noqa: E402
from fastreid.data.common import CommDataset  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from .keypoints import KeypointTransform, erase_maps, render_heatmaps  # noqa: E402
from .stored_heatmaps import load_crop_heatmaps  # noqa: E402


def read_image(path: str) -> Image.Image:
    """RGB PIL image, or an error that names the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise OSError(f"cannot read image {path}: {e}") from None


class ExtCommDataset(CommDataset):
    """FastReID's ``CommDataset`` plus the extra fields named in ``extra_fields``.

    Args:
        img_items: ``(path, pid, camid[, extras])`` tuples.
        transform: image-only transform (FastReID's ``build_transforms``).
        relabel: relabel pids/camids to contiguous ints (training).
        extra_fields: subset of ``("attributes", "keypoints", "heatmaps")``.
        keypoint_transform: joint (image, keypoints) transform; required for keypoints/heatmaps.
        heatmap_size: (h, w) of heatmaps; ``sigma`` their Gaussian width in heatmap pixels.
        heatmap_source: ``"render"`` (Gaussians at the transformed keypoints) or ``"stored"`` (a pose
            model's own maps, ``extras["heatmap_ref"]`` = (index file, key) of
            :mod:`fastreid_ext.data.stored_heatmaps`, moved by the same transform as the pixels).
    """

    def __init__(self, img_items, transform=None, relabel=True, extra_fields=(),
                 keypoint_transform: KeypointTransform | None = None, heatmap_size=(0, 0), sigma=2.0,
                 heatmap_source: str = "render"):
        super().__init__(img_items, transform, relabel)
        self.extra_fields = tuple(extra_fields)
        needs_kp = bool({"keypoints", "heatmaps"} & set(self.extra_fields))
        if needs_kp and keypoint_transform is None:
            raise ValueError("keypoints/heatmaps fields need a keypoint_transform")
        self.keypoint_transform = keypoint_transform if needs_kp else None
        self.heatmap_size = tuple(heatmap_size)
        self.sigma = sigma
        if heatmap_source not in ("render", "stored"):
            raise ValueError(f"INPUT.HEATMAP.SOURCE is {heatmap_source!r}; use 'render' or 'stored'")
        self.stored = heatmap_source == "stored" and "heatmaps" in self.extra_fields
        if self.stored:
            missing = [it[0] for it in img_items if len(it) < 4 or it[3].get("heatmap_ref") is None]
            if missing:
                raise ValueError(f"INPUT.HEATMAP.SOURCE is 'stored', but {len(missing)} of {len(img_items)} images "
                                 f"have no stored heatmaps (first: {missing[0]})")
        for field in self.extra_fields:  # fail at build time, not after an hour of training
            src = "keypoints" if field == "heatmaps" else field
            missing = [it[0] for it in img_items if len(it) < 4 or it[3].get(src) is None]
            if missing:
                hint = ("; keypoints come from person_keypoints_<split folder>.json in DATASETS.KEYPOINTS_DIR "
                        "(default <dataset folder>/keypoints/), attached by fastreid_ext.data.build_* or "
                        "fastreid_ext.data.dataset_keypoints.attach_keypoints" if src == "keypoints" else "")
                raise ValueError(f"INPUT.EXTRA_FIELDS asks for '{field}', but the dataset gives none for "
                                 f"{len(missing)} of {len(img_items)} images (first: {missing[0]}){hint}")

    def __getitem__(self, index):
        item = self.img_items[index]
        path, pid, camid = item[0], item[1], item[2]
        extras = item[3] if len(item) > 3 else {}
        img = read_image(path)
        erased, maps = (), None
        if self.keypoint_transform is not None:
            if self.stored:
                maps = load_crop_heatmaps(*extras["heatmap_ref"])
            img, kpts, maps, erased = self.keypoint_transform(img, extras["keypoints"], maps)
        else:
            kpts = None
            if self.transform is not None:
                img = self.transform(img)
        if self.relabel:
            pid = self.pid_dict[pid]
            camid = self.cam_dict[camid]
        out = {"images": img, "targets": pid, "camids": camid, "img_paths": path}
        if "attributes" in self.extra_fields:
            out["attributes"] = torch.as_tensor(extras["attributes"], dtype=torch.long)
        if "keypoints" in self.extra_fields:
            out["keypoints"] = torch.as_tensor(kpts, dtype=torch.float32)
        if "heatmaps" in self.extra_fields:
            size = self.keypoint_transform.size
            hm = self.heatmap_size if all(self.heatmap_size) else (size[0] // 2, size[1] // 2)
            if maps is not None:  # stored maps, already moved (and erased) like the pixels: onto the heatmap grid
                out["heatmaps"] = F.interpolate(maps[None], size=hm, mode="bilinear", align_corners=False)[0]
            else:  # rendered after the geometric steps; blanked where random erasing removed the pixels
                out["heatmaps"] = erase_maps(render_heatmaps(kpts, size, hm, self.sigma), erased, size)
        return out


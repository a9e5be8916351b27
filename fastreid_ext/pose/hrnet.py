"""mmpose's top-down HRNet-w32 (COCO, 256x192) as a pose model for re-id crops, batched.

The network, its config and its flip test are mmpose's own: the model is built from the config
inside the installed mmpose package (``.mim/configs/body_2d_keypoint/topdown_heatmap/coco/
td-hm_hrnet-w32_8xb64-210e_coco-256x192.py``) with ``mmpose.apis.init_model``, after
:mod:`.mmcv_ops_placeholder` has answered ``mmcv.ops`` (mmcv-lite has no compiled operators). The
backbone's ``init_cfg`` (ImageNet weights from a URL) is removed and nothing calls ``init_weights``:
**nothing is downloaded, ever**. Without a checkpoint the weights are random (tests, pipeline
checks); with one they come from the local file.

What runs per crop equals ``mmpose.apis.inference_topdown(model, crop)`` (tested on random weights:
same keypoints, scores and heatmaps), reorganised for throughput:

* ``prepare`` (loader threads, numpy + OpenCV): mmpose's ``GetBBoxCenterScale`` (box = the whole
  crop, padding 1.25) and ``TopdownAffine`` (aspect fixed to 192/256, ``get_warp_matrix``,
  ``cv2.warpAffine`` bilinear). A 64x128 Market crop becomes a 120x160 region scaled to 192x256.
* ``predict`` (one batch on the device): normalisation (the config's mean/std, RGB), the backbone
  and head on the batch and on its mirror (flip test, on by default as in mmpose: ``flip_heatmaps``
  with the COCO flip indices and the one-pixel shift, then the mean), and the ``MSRAHeatmap`` decoding
  (argmax, quarter-pixel step towards the higher neighbour, x4) vectorised on the device, then
  mapped back to crop pixels as ``TopdownPoseEstimator.add_pred_to_datasample`` does.

Heatmap pixel (u, v) maps to crop pixel ``(u * 4 / 192 * sw + cx - sw / 2, v * 4 / 256 * sh + cy - sh / 2)``
(``(cx, cy)`` the box centre, ``(sw, sh)`` its scale): the affine stored with ``--save-heatmaps``.

Checkpoints: official mmpose checkpoints are ``{"meta": {...}, "state_dict": {...}}`` whose ``meta``
holds numpy arrays (dataset metadata), which ``torch.load(weights_only=True)`` - torch's default, and
what mmengine 0.10.7's loader calls - refuses. :func:`load_checkpoint` keeps ``weights_only=True`` and
allows only numpy's array, scalar and dtype reconstructors (no code can run); anything else in the file
is refused with the global's name unless the caller trusts the file (``--trust-checkpoint``).
mmpose 0.x key names (``keypoint_head.*``) are renamed by mmpose's own load hook.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional, Sequence

import numpy as np

from ..data.coco_keypoints import FLIP_INDEX, NUM_KEYPOINTS
from .base import PoseModel, PoseOutput, Prepared, file_sha256, resolve_device

__all__ = ["CONFIG", "HRNetPose", "config_path", "load_checkpoint", "import_mmpose"]

#: the mmpose config, relative to the package's ``.mim/configs``
CONFIG = "body_2d_keypoint/topdown_heatmap/coco/td-hm_hrnet-w32_8xb64-210e_coco-256x192.py"
BBOX_PADDING = 1.25  # mmpose's GetBBoxCenterScale default


def import_mmpose():
    """``mmpose`` with the ``mmcv.ops`` placeholder in place; ``ImportError`` says what to install."""
    from . import mmcv_ops_placeholder

    # mmengine 0.10.7 imports pkg_resources inside its package helpers (hence setuptools < 80): known, harmless
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated as an API", category=DeprecationWarning)
    try:
        mmcv_ops_placeholder.install()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            import mmpose
            import mmpose.apis  # noqa: F401  (registers models, imports every head)
    except ImportError as e:
        raise ImportError(f"--model hrnet needs mmpose 1.3.2 with mmengine, mmcv-lite and mmdet (installed by "
                          f"`make venv` from requirements.txt): {e}") from e
    return mmpose


def config_path() -> str:
    """The HRNet-w32 COCO 256x192 config inside the installed mmpose package."""
    mmpose = import_mmpose()
    path = os.path.join(os.path.dirname(mmpose.__file__), ".mim", "configs", CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mmpose config not found: {path} (is mmpose {mmpose.__version__} installed "
                                "from its wheel?)")
    return path


def _numpy_globals():
    """numpy's reconstructors under their numpy-1 (``numpy.core``) and numpy-2 (``numpy._core``) names."""
    from numpy._core import multiarray

    out = [np.ndarray, np.dtype]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        out += [(multiarray._reconstruct, f"{mod}._reconstruct"), (multiarray.scalar, f"{mod}.scalar")]
    out += [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return out


def load_checkpoint(path: str, trust: bool = False) -> dict:
    """The state dict of an mmpose checkpoint (see the module docstring). ``trust``: the file is the
    user's own, load it fully (pickle can run code: only for files you trust)."""
    import pickle

    import torch

    if not os.path.isfile(path):
        raise FileNotFoundError(f"HRNet checkpoint not found: {path}")
    try:
        if trust:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        else:
            with torch.serialization.safe_globals(_numpy_globals()):
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "Unsupported global" in msg or "weights_only" in msg.lower():
            bad = msg.split("Unsupported global:", 1)[1].split("was not", 1)[0].strip() \
                if "Unsupported global:" in msg else "?"
            raise ValueError(f"checkpoint {path} holds an object other than tensors and numpy arrays ({bad}); it is "
                             "loaded with torch's weights_only=True, which refuses it. Keep only its 'state_dict' "
                             "(torch.save({'state_dict': ckpt['state_dict']}, ...)) or, if you trust the file, pass "
                             "--trust-checkpoint") from None
        raise ValueError(f"checkpoint {path} cannot be read: {msg.splitlines()[0] if msg else e}") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"checkpoint {path} cannot be read (not a torch checkpoint, or truncated): {e}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        what = list(ckpt)[:6] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} holds no state dict of tensors (it holds: {what})")
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    dataset = (meta or {}).get("dataset_meta") if isinstance(meta, dict) else None
    if isinstance(dataset, dict):
        n = dataset.get("num_keypoints")
        flip = dataset.get("flip_indices")
        if (n is not None and int(n) != NUM_KEYPOINTS) or (flip is not None and list(flip) != FLIP_INDEX.tolist()):
            raise ValueError(f"checkpoint {path} was trained on {dataset.get('dataset_name', 'another dataset')} "
                             f"({n} keypoints), not COCO-17")
    return {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}


class HRNetPose(PoseModel):
    """mmpose HRNet-w32 COCO 256x192 (see the module docstring).

    Args:
        checkpoint: local ``.pth`` (official mmpose format or a bare state dict); None = random init.
        device: ``auto`` (CUDA when present), ``cpu``, ``cuda``, ``cuda:N``.
        flip_test: average with the mirrored crop's heatmaps (mmpose's default; 2x the compute).
        trust_checkpoint: load the checkpoint with full pickle (see :func:`load_checkpoint`).
        batch_size: default batch of the runner (64 on CUDA, 8 on CPU).
    """

    name = "hrnet"

    def __init__(self, checkpoint: Optional[str] = None, device: str = "auto", flip_test: bool = True,
                 trust_checkpoint: bool = False, batch_size: Optional[int] = None):
        import torch

        self.device = resolve_device(device)
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError(f"--device {device}: no CUDA device is visible")
        import_mmpose()
        from mmengine.config import Config
        from mmpose.apis import init_model

        self.config = config_path()
        cfg = Config.fromfile(self.config)
        cfg.model.backbone.init_cfg = None  # the ImageNet URL: never downloaded
        cfg.model.test_cfg.flip_test = bool(flip_test)
        state = load_checkpoint(checkpoint, trust_checkpoint) if checkpoint else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "metainfo config file ... will be used instead"
            model = init_model(cfg, None, device="cpu")
        if state is not None:
            missing, unexpected = model.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise ValueError(f"checkpoint {checkpoint} does not fit HRNet-w32 COCO 256x192: "
                                 f"{len(missing)} missing keys (first: {missing[:3]}), {len(unexpected)} unexpected "
                                 f"(first: {unexpected[:3]})")
        self.model = model.to(self.device).eval()
        self.checkpoint = os.path.abspath(checkpoint) if checkpoint else None
        self.sha256 = file_sha256(checkpoint) if checkpoint else None
        self.flip_test = bool(flip_test)
        codec = cfg.codec
        self.input_size = tuple(int(v) for v in codec.input_size)  # (w, h) = (192, 256)
        self.heatmap_size = (int(codec.heatmap_size[1]), int(codec.heatmap_size[0]))  # (h, w) = (64, 48)
        self.scale_factor = np.array(self.input_size, dtype=np.float64) / np.array(codec.heatmap_size)
        self.shift_heatmap = bool(cfg.model.test_cfg.get("shift_heatmap", False))
        pre = self.model.data_preprocessor
        self._mean = pre.mean.to(self.device).view(1, 3, 1, 1)  # RGB order (bgr_to_rgb in the config)
        self._std = pre.std.to(self.device).view(1, 3, 1, 1)
        self.flip_indices = list(self.model.dataset_meta["flip_indices"])
        self.default_batch_size = batch_size or (64 if self.device.startswith("cuda") else 8)
        if self.device.startswith("cuda"):
            torch.backends.cudnn.benchmark = True

    @property
    def identity(self) -> dict:
        return {"model": self.name, "config": CONFIG, "weights_sha256": self.sha256 or "random-init",
                "flip_test": self.flip_test, "input": list(self.input_size), "bbox_padding": BBOX_PADDING}

    def describe(self) -> str:
        w = os.path.basename(self.checkpoint) if self.checkpoint else "RANDOM weights (no checkpoint)"
        return f"HRNet-w32 COCO 256x192 ({w}, flip test {'on' if self.flip_test else 'off'}) on {self.device}"

    # ------------------------------------------------------------------ preprocessing (thread-safe)
    def prepare(self, image: np.ndarray) -> Prepared:
        import cv2
        from mmpose.datasets.transforms import TopdownAffine
        from mmpose.structures.bbox import bbox_xyxy2cs, get_warp_matrix

        h, w = image.shape[:2]
        center, scale = bbox_xyxy2cs(np.array([[0, 0, w, h]], dtype=np.float32), padding=BBOX_PADDING)
        iw, ih = self.input_size
        scale = TopdownAffine._fix_aspect_ratio(scale, aspect_ratio=iw / ih)
        center, scale = center[0], scale[0]
        warp = get_warp_matrix(center, scale, 0.0, output_size=(iw, ih))
        inp = cv2.warpAffine(image, warp, (int(iw), int(ih)), flags=cv2.INTER_LINEAR)
        # heatmap (u, v) -> input (4u, 4v) -> crop (add_pred_to_datasample)
        k = self.scale_factor * scale / np.array(self.input_size)
        affine = np.array([[k[0], 0.0, center[0] - 0.5 * scale[0]], [0.0, k[1], center[1] - 0.5 * scale[1]]])
        return Prepared(input=inp, crop_size=(h, w), affine=affine, meta={"center": center, "scale": scale})

    # ------------------------------------------------------------------ inference
    def heatmaps_of(self, x):
        """Flip-averaged heatmaps (B, 17, 64, 48) of a normalised input batch, as mmpose's
        ``TopdownPoseEstimator.predict`` / ``HeatmapHead.predict`` compute them."""
        from mmpose.models.utils.tta import flip_heatmaps

        hm = self.model.head.forward(self.model.extract_feat(x))
        if self.flip_test:
            hm_flip = flip_heatmaps(self.model.head.forward(self.model.extract_feat(x.flip(-1))), flip_mode="heatmap",
                                    flip_indices=self.flip_indices, shift_heatmap=self.shift_heatmap)
            hm = (hm + hm_flip) * 0.5
        return hm

    def predict(self, samples: Sequence[Prepared], heatmaps: bool = False) -> PoseOutput:
        import torch

        batch = torch.from_numpy(np.stack([p.input for p in samples])).to(self.device, non_blocking=True)
        with torch.inference_mode():
            x = (batch.permute(0, 3, 1, 2).float() - self._mean) / self._std
            hm = self.heatmaps_of(x)
            xy, scores = decode_msra(hm)
        xy = xy.double().cpu().numpy() * self.scale_factor  # input pixels
        centers = np.stack([p.meta["center"] for p in samples])[:, None]
        scales = np.stack([p.meta["scale"] for p in samples])[:, None]
        xy = xy / np.array(self.input_size) * scales + centers - 0.5 * scales
        out = PoseOutput(keypoints=xy.astype(np.float32), scores=scores.float().cpu().numpy())
        if heatmaps:
            out.heatmaps = hm.float().cpu().numpy()
            out.affines = np.stack([p.affine for p in samples])
        return out


def decode_msra(hm):
    """mmpose's ``MSRAHeatmap.decode`` (unbiased=False) on a (B, K, H, W) tensor, on its device:
    ``get_heatmap_maximum`` (argmax; location -1 where the maximum is <= 0) and ``refine_keypoints``
    (a quarter pixel towards the higher neighbour, with mmpose's border conditions). Returns heatmap
    coordinates (B, K, 2) and scores (B, K)."""
    import torch

    B, K, H, W = hm.shape
    flat = hm.reshape(B, K, H * W)
    vals, idx = flat.max(dim=-1)
    x = (idx % W).float()
    y = torch.div(idx, W, rounding_mode="floor").float()
    neg = vals <= 0
    x[neg], y[neg] = -1.0, -1.0
    xi, yi = x.long(), y.long()

    def at(yy, xx):
        return flat.gather(-1, (yy.clamp(0, H - 1) * W + xx.clamp(0, W - 1)).unsqueeze(-1)).squeeze(-1)

    okx = (xi > 1) & (xi < W - 1) & (yi > 0) & (yi < H)
    oky = (yi > 1) & (yi < H - 1) & (xi > 0) & (xi < W)
    dx = torch.where(okx, at(yi, xi + 1) - at(yi, xi - 1), torch.zeros_like(vals))
    dy = torch.where(oky, at(yi + 1, xi) - at(yi - 1, xi), torch.zeros_like(vals))
    xy = torch.stack([x + torch.sign(dx) * 0.25, y + torch.sign(dy) * 0.25], dim=-1)
    return xy, vals

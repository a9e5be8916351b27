"""BlazePose (MediaPipe Pose, "full" landmark model) as a COCO-17 pose model for re-id crops.

Why this model
--------------
It is a real pretrained pose network that needs no download beyond the package registry: the
``mediapipe==0.10.21`` wheel on PyPI ships ``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``
(6.4 MB). We take that one file, not the package (mediapipe 0.10.21's metadata needs numpy < 2; newer
wheels ship no ``.tflite``), and run it with ``ai-edge-litert`` (LiteRT, TFLite's successor), which
works with numpy 2. :func:`install` (called by ``make venv``) downloads the wheel with pip, extracts
the file into ``<venv>/share/fastreid-ext/`` and checks its SHA-256; :func:`find_model` looks there.

Licence: the model file ships inside the mediapipe wheel, which is released under the Apache
License 2.0 (the wheel's ``LICENSE`` and metadata); MediaPipe's model card (BlazePose GHUM 3D)
describes its intended uses and limits. fastreid-ext does not redistribute the file: each machine
extracts it from the PyPI wheel.

Network (checked on the file): input ``1 x 256 x 256 x 3`` float RGB in [0, 1]; outputs
``Identity`` (1 x 195 = 39 x [x, y, z, visibility, presence], x/y in input pixels, 33 body landmarks
+ 6 auxiliary), ``Identity_1`` (1 x 1 pose presence), ``Identity_2`` (segmentation), ``Identity_3``
(1 x 64 x 64 x 39 heatmap logits), ``Identity_4`` (world landmarks). We use the landmarks and the
heatmaps; not the pose-presence flag, with which MediaPipe drops a frame without a person: a re-id
crop is a person box, and each joint's visibility score carries the doubt. The batch dimension can
be resized, but a batch is barely faster per image than one image: throughput comes from running
one single-thread interpreter per core in parallel (``threads``).

Preprocessing and decoding follow MediaPipe's landmark graph (``pose_landmark_by_roi_cpu``,
``tensors_to_pose_landmarks_and_segmentation``): the region of interest is letterboxed into 256 x 256
(aspect kept, zero border), score = sigmoid of the visibility logit, and each landmark is refined with the
sigmoid-weighted mean of the 7 x 7 heatmap window around it when the window's maximum reaches 0.5.
MediaPipe's region of interest comes from its person detector: a square of 1.5 x the body's
enclosing circle, so the person fills about 2/3 of the input height. A re-id crop already is a
person box (the person fills ~90% of its height), so the crop's longer side is scaled to
``256 / margin`` pixels and centred (default ``margin`` 1.25: measured best of 1.0 / 1.25 / 1.5 on the
synthetic set, see README "Offline keypoints"), then the rest is padded.

COCO-17 from 33 landmarks: :data:`COCO_FROM_BLAZEPOSE` (nose, the two eye *centres*, ears,
shoulders, elbows, wrists, hips, knees, ankles). "Left" is the person's left in both topologies,
so COCO's flip order is BlazePose's own left/right pairing restricted to the subset (tested).

Geometry differs from COCO's annotation rules (what a user of the keypoints should know): the points
are BlazePose's own definitions - eye points are eye centres (it also has inner and outer corners), ear
points its own, hips the body model's hip joints rather than COCO's annotated hip points - and it always
predicts all 33 landmarks, including joints it cannot see (low visibility) and ones outside the image.
Measured against our synthetic renderer's COCO-like joints (README "Offline keypoints"): head within
1.3 px, hips ~3.8 px, knees ~5 px and wrists ~8 px higher on 64x128 crops.

Runs on the CPU only (LiteRT's XNNPACK delegate); there is no GPU path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..data.coco_keypoints import COCO_KEYPOINTS
from .base import PoseModel, PoseOutput, Prepared, file_sha256

__all__ = ["BLAZEPOSE_LANDMARKS", "COCO_FROM_BLAZEPOSE", "BlazePose", "MODEL_FILE", "find_model", "install"]

#: file name of the model inside the mediapipe wheel, and on disk
MODEL_FILE = "pose_landmark_full.tflite"
#: where it lies inside the wheel
WHEEL_MEMBER = f"mediapipe/modules/pose_landmark/{MODEL_FILE}"
#: SHA-256 of the file per mediapipe version (the pin itself lives in requirements.txt)
KNOWN_SHA256 = {"0.10.21": "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f"}
#: environment variable naming the .tflite (overrides the search)
ENV = "FASTREID_EXT_BLAZEPOSE"

#: BlazePose's 33 landmarks in output order (MediaPipe's pose_landmark_topology)
BLAZEPOSE_LANDMARKS: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye",
    "right_eye_outer", "left_ear", "right_ear", "mouth_left", "mouth_right",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_pinky", "right_pinky", "left_index", "right_index", "left_thumb", "right_thumb",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)
#: BlazePose index of each COCO-17 keypoint, in COCO order (same names in both topologies)
COCO_FROM_BLAZEPOSE = np.array([BLAZEPOSE_LANDMARKS.index(n) for n in COCO_KEYPOINTS])
COCO_FROM_BLAZEPOSE.setflags(write=False)

INPUT_SIZE = 256
HEATMAP_SIZE = 64
REFINE_KERNEL = 7  # MediaPipe's RefineLandmarksFromHeatmapCalculator options in the landmark graph
REFINE_MIN_CONFIDENCE = 0.5
DEFAULT_MARGIN = 1.25


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def default_dirs() -> list[Path]:
    """Folders searched for the model, in order: the venv's ``share/fastreid-ext`` (where ``make
    venv`` puts it), then ``$FASTREID_EXT_CACHE`` or ``~/.cache/fastreid_ext`` ``/models``."""
    cache = Path(os.environ.get("FASTREID_EXT_CACHE") or Path.home() / ".cache" / "fastreid_ext")
    return [Path(sys.prefix) / "share" / "fastreid-ext", cache / "models"]


def find_model(path: Optional[str] = None) -> str:
    """The BlazePose ``.tflite``: ``path`` if given, else ``$FASTREID_EXT_BLAZEPOSE``, else the first
    of :func:`default_dirs` that holds it. ``FileNotFoundError`` says how to install it."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"BlazePose model file not found: {path}")
        return path
    env = os.environ.get(ENV)
    if env:
        if not os.path.isfile(env):
            raise FileNotFoundError(f"${ENV} names a missing file: {env}")
        return env
    for d in default_dirs():
        if (d / MODEL_FILE).is_file():
            return str(d / MODEL_FILE)
    raise FileNotFoundError(
        f"BlazePose model {MODEL_FILE} not found (looked in {', '.join(str(d) for d in default_dirs())}). "
        "Install it with `make venv`, or `python -m fastreid_ext.pose.blazepose install mediapipe==0.10.21`, "
        f"or point ${ENV} / --checkpoint at the file")


def install(requirement: str, dest: Optional[str] = None, wheel_dir: Optional[str] = None) -> str:
    """Extract :data:`MODEL_FILE` from the mediapipe wheel ``requirement`` (e.g. ``mediapipe==0.10.21``)
    into ``dest`` (default: the first of :func:`default_dirs`); returns the file's path.

    The wheel is fetched with ``pip download --no-deps`` (pip's cache makes reruns free) unless
    ``wheel_dir`` already holds it; only the one member is extracted. The SHA-256 is checked against
    :data:`KNOWN_SHA256` for known versions. A file already in place with the right hash is kept.
    """
    version = requirement.split("==", 1)[1] if "==" in requirement else ""
    want = KNOWN_SHA256.get(version)
    dest_dir = Path(dest) if dest else default_dirs()[0]
    target = dest_dir / MODEL_FILE
    if target.is_file() and want and file_sha256(str(target)) == want:
        return str(target)
    with tempfile.TemporaryDirectory(prefix="blazepose-") as tmp:
        src_dir = wheel_dir or tmp
        wheels = sorted(Path(src_dir).glob("mediapipe-*.whl")) if wheel_dir else []
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            "-q", "-d", tmp, requirement], check=True)
            wheels = sorted(Path(tmp).glob("mediapipe-*.whl"))
        if not wheels:
            raise FileNotFoundError(f"pip download {requirement} produced no mediapipe wheel")
        with zipfile.ZipFile(wheels[-1]) as z:
            try:
                info = z.getinfo(WHEEL_MEMBER)
            except KeyError:
                raise FileNotFoundError(f"{wheels[-1].name} holds no {WHEEL_MEMBER} (mediapipe wheels after "
                                        "0.10.21 ship no .tflite; pin mediapipe==0.10.21)") from None
            dest_dir.mkdir(parents=True, exist_ok=True)
            part = dest_dir / f".{MODEL_FILE}.{os.getpid()}.part"
            with z.open(info) as src, open(part, "wb") as out:
                shutil.copyfileobj(src, out)
    got = file_sha256(str(part))
    if want and got != want:
        part.unlink()
        raise ValueError(f"{WHEEL_MEMBER} from {requirement} has SHA-256 {got}, expected {want}")
    os.replace(part, target)
    return str(target)


class BlazePose(PoseModel):
    """BlazePose full landmark model on re-id crops (see the module docstring).

    Args:
        model_path: the ``.tflite`` (default: :func:`find_model`).
        margin: the crop's longer side fills ``256 / margin`` input pixels.
        threads: parallel interpreters, one CPU thread each (default: all CPUs, at most 8). A batch
            is split across them; LiteRT releases the GIL while it runs, and on a loaded 2-core
            machine two single-thread interpreters gave more images/s than one with two threads.
        refine: MediaPipe's heatmap refinement of the landmarks.
    """

    name = "blazepose"
    heatmap_size = (HEATMAP_SIZE, HEATMAP_SIZE)
    device = "cpu"

    def __init__(self, model_path: Optional[str] = None, margin: float = DEFAULT_MARGIN,
                 threads: Optional[int] = None, refine: bool = True):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as e:  # pragma: no cover - installed by make venv
            raise ImportError(f"--model blazepose needs ai-edge-litert (pinned in requirements.txt): {e}") from None
        if not margin >= 1.0:
            raise ValueError(f"BlazePose margin must be >= 1 (the crop must fit the input), got {margin}")
        self.path = find_model(model_path)
        self.sha256 = file_sha256(self.path)
        self.margin = float(margin)
        self.refine = bool(refine)
        self.threads = int(threads or min(8, os.cpu_count() or 1))
        if self.threads < 1:
            raise ValueError(f"BlazePose threads must be >= 1, got {threads}")
        try:
            self._runners = [_Interpreter(Interpreter(model_path=self.path, num_threads=1), self.path)
                             for _ in range(self.threads)]
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{self.path} is not a TFLite model LiteRT can load: {e}") from None
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="litert") if self.threads > 1 else None
        self.default_batch_size = 4 * self.threads

    @property
    def identity(self) -> dict:
        return {"model": self.name, "weights_sha256": self.sha256, "input": [INPUT_SIZE, INPUT_SIZE],
                "margin": self.margin, "heatmap_refinement": self.refine}

    def describe(self) -> str:
        return (f"BlazePose full ({os.path.basename(self.path)}, margin {self.margin:g}) on cpu, "
                f"{self.threads} interpreter(s)")

    # ------------------------------------------------------------------ preprocessing
    def letterbox(self, crop_size) -> tuple[float, float, float]:
        """``(s, ox, oy)``: crop pixel-corner coordinates map to input ones as ``X = s x + ox``."""
        h, w = crop_size
        s = INPUT_SIZE / (self.margin * max(h, w))
        return s, (INPUT_SIZE - s * w) / 2.0, (INPUT_SIZE - s * h) / 2.0

    def prepare(self, image: np.ndarray) -> Prepared:
        import cv2

        h, w = image.shape[:2]
        s, ox, oy = self.letterbox((h, w))
        # cv2's warpAffine maps pixel centres: X_c = s (x + 0.5) + ox  ->  X = s x + (0.5 s + ox - 0.5)
        m = np.array([[s, 0.0, 0.5 * s + ox - 0.5], [0.0, s, 0.5 * s + oy - 0.5]])
        inp = cv2.warpAffine(image, m, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # heatmap column u is input x = 4 u (MediaPipe's refinement: x = col / 64); back to crop pixels
        k = INPUT_SIZE / HEATMAP_SIZE / s
        affine = np.array([[k, 0.0, -ox / s - 0.5], [0.0, k, -oy / s - 0.5]])
        return Prepared(input=inp.astype(np.float32) * (1.0 / 255.0), crop_size=(h, w), affine=affine,
                        meta={"s": s, "ox": ox, "oy": oy})

    # ------------------------------------------------------------------ inference
    def _raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (B, 39, 5) and heatmap logits (B, 64, 64, 39) of an input batch, the batch split
        across the interpreters."""
        parts = np.array_split(x, min(len(x), len(self._runners)))
        if self._pool is None or len(parts) == 1:
            outs = [r(p) for r, p in zip(self._runners, parts)]
        else:
            outs = list(self._pool.map(lambda rp: rp[0](rp[1]), zip(self._runners, parts)))
        return np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs])

    def predict(self, samples: Sequence[Prepared], heatmaps: bool = False) -> PoseOutput:
        x = np.stack([p.input for p in samples]).astype(np.float32, copy=False)
        lms, hm = self._raw(x)
        lms, hm = lms[:, COCO_FROM_BLAZEPOSE], hm[..., COCO_FROM_BLAZEPOSE]
        xy = lms[..., :2].astype(np.float64)  # input pixels (corner convention, MediaPipe's x * 256)
        if self.refine:
            xy = refine_from_heatmaps(xy, hm)
        scores = _sigmoid(lms[..., 3].astype(np.float64))
        out_xy = np.empty_like(xy)
        for i, p in enumerate(samples):
            out_xy[i, :, 0] = (xy[i, :, 0] - p.meta["ox"]) / p.meta["s"] - 0.5
            out_xy[i, :, 1] = (xy[i, :, 1] - p.meta["oy"]) / p.meta["s"] - 0.5
        out = PoseOutput(keypoints=out_xy.astype(np.float32), scores=scores.astype(np.float32))
        if heatmaps:
            out.heatmaps = _sigmoid(hm.transpose(0, 3, 1, 2).astype(np.float32))
            out.affines = np.stack([p.affine for p in samples])
        return out


class _Interpreter:
    """One LiteRT interpreter, resized to the batch it is given, used by one thread at a time."""

    def __init__(self, interp, path: str):
        self.interp, self.path, self.batch = interp, path, 0
        self.lock = threading.Lock()
        self._resize(1)

    def _resize(self, batch: int) -> None:
        it = self.interp
        it.resize_tensor_input(it.get_input_details()[0]["index"], [batch, INPUT_SIZE, INPUT_SIZE, 3])
        it.allocate_tensors()
        outs = {}
        for d in it.get_output_details():  # identified by shape, not by the converter's names
            shape = tuple(d["shape"][1:])
            if shape == (195,):
                outs["landmarks"] = d["index"]
            elif shape == (HEATMAP_SIZE, HEATMAP_SIZE, 39):
                outs["heatmaps"] = d["index"]
        if len(outs) != 2:
            raise ValueError(f"{self.path}: outputs {[tuple(d['shape']) for d in it.get_output_details()]} are not "
                             "BlazePose full's (1x195 landmarks, 1x64x64x39 heatmaps)")
        self.outs, self.input, self.batch = outs, it.get_input_details()[0]["index"], batch

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            if len(x) != self.batch:
                self._resize(len(x))
            self.interp.set_tensor(self.input, x)
            self.interp.invoke()
            lms = self.interp.get_tensor(self.outs["landmarks"]).reshape(len(x), 39, 5)
            return lms, self.interp.get_tensor(self.outs["heatmaps"])


def refine_from_heatmaps(xy: np.ndarray, logits: np.ndarray, kernel: int = REFINE_KERNEL,
                         min_confidence: float = REFINE_MIN_CONFIDENCE) -> np.ndarray:
    """MediaPipe's ``RefineLandmarksFromHeatMap`` for a batch: ``xy`` (B, K, 2) in input pixels,
    ``logits`` (B, h, w, K). A landmark moves to the sigmoid-weighted mean position of the
    ``kernel`` x ``kernel`` window around it (clipped at the border) when the window's maximum
    confidence is at least ``min_confidence``; landmarks outside the heatmap stay."""
    B, h, w, K = logits.shape
    out = xy.copy()
    col = np.trunc(xy[..., 0] / INPUT_SIZE * w).astype(int)  # C++ int conversion truncates
    row = np.trunc(xy[..., 1] / INPUT_SIZE * h).astype(int)
    off = (kernel - 1) // 2
    d = np.arange(-off, off + 1)
    for b in range(B):
        for k in range(K):
            c, r = col[b, k], row[b, k]
            if not (0 <= c < w and 0 <= r < h):
                continue
            rows = r + d
            cols = c + d
            rows, cols = rows[(rows >= 0) & (rows < h)], cols[(cols >= 0) & (cols < w)]
            conf = _sigmoid(logits[b][np.ix_(rows, cols, [k])][..., 0].astype(np.float64))
            total = conf.sum()
            if conf.max() >= min_confidence and total > 0:
                out[b, k, 0] = (conf.sum(axis=0) @ cols) / total / w * INPUT_SIZE
                out[b, k, 1] = (conf.sum(axis=1) @ rows) / total / h * INPUT_SIZE
    return out


def _main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m fastreid_ext.pose.blazepose",
                                description="Install the BlazePose model file from the mediapipe wheel.")
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("install", help="extract pose_landmark_full.tflite from a mediapipe wheel")
    i.add_argument("requirement", help="e.g. mediapipe==0.10.21 (the pin in requirements.txt)")
    i.add_argument("--dest", default=None, help=f"folder (default {default_dirs()[0]})")
    sub.add_parser("where", help="print the model file's path, or fail")
    a = p.parse_args(argv)
    print(install(a.requirement, a.dest) if a.cmd == "install" else find_model())
    return 0


if __name__ == "__main__":
    sys.exit(_main())

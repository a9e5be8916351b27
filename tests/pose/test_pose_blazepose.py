"""BlazePose in the pose tool (fastreid_ext/pose/blazepose.py): the COCO-17 subset and its flip order, real
keypoints on real Market crops (inside the crop; head above hips above ankles), left/right right on the
synthetic set whose true keypoints the renderer knows, heatmaps that sit on the keypoints."""

import importlib
import os

import numpy as np
import pytest
from PIL import Image

from fastreid_ext.data.coco_keypoints import COCO_KEYPOINTS, FLIP_INDEX
from fastreid_ext.pose.blazepose import BLAZEPOSE_LANDMARKS, COCO_FROM_BLAZEPOSE

pytestmark = pytest.mark.usefixtures("one_thread")

# the COCO-17 subset of BlazePose's 33 landmarks (MediaPipe's pose_landmark_topology)
REFERENCE_SUBSET = [0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


def test_coco_subset_and_flip_order():
    assert COCO_FROM_BLAZEPOSE.tolist() == REFERENCE_SUBSET
    assert [BLAZEPOSE_LANDMARKS[i] for i in COCO_FROM_BLAZEPOSE] == list(COCO_KEYPOINTS)
    # BlazePose's own left/right pairing, restricted to the subset, is COCO's flip order
    mirror = {n: n.replace("left", "@").replace("right", "left").replace("@", "right") for n in BLAZEPOSE_LANDMARKS}
    flip33 = [BLAZEPOSE_LANDMARKS.index(mirror[n]) for n in BLAZEPOSE_LANDMARKS]
    subset = COCO_FROM_BLAZEPOSE.tolist()
    assert [subset.index(flip33[i]) for i in subset] == FLIP_INDEX.tolist()


@pytest.fixture(scope="module")
def blazepose():
    from fastreid_ext.pose.blazepose import BlazePose, find_model

    try:
        find_model()
        importlib.import_module("ai_edge_litert")
    except (FileNotFoundError, ImportError) as e:
        pytest.skip(f"BlazePose not installed (make venv extracts it): {e}")
    return BlazePose(threads=1)


def _load(folder, names):
    return [np.asarray(Image.open(os.path.join(folder, n)).convert("RGB")) for n in names]


HEAD, HIPS, ANKLES = [0, 1, 2, 3, 4], [11, 12], [15, 16]


def test_real_crops_keypoints_inside_and_upright(blazepose, mini_market_root):
    folder = mini_market_root / "query"
    names = sorted(os.listdir(folder))[:16]
    images = _load(folder, names)
    out = blazepose.predict([blazepose.prepare(im) for im in images])
    for name, im, kp, s in zip(names, images, out.keypoints, out.scores):
        h, w = im.shape[:2]
        conf = s >= 0.5
        assert conf.sum() >= 10, (name, s.round(2))
        inside = (kp[:, 0] >= -0.5) & (kp[:, 0] <= w - 0.5) & (kp[:, 1] >= -0.5) & (kp[:, 1] <= h - 0.5)
        assert inside[conf].all(), (name, kp[conf & ~inside])
        head, hips, ankles = (kp[j, 1].mean() for j in (HEAD, HIPS, ANKLES))
        assert head < hips < ankles, (name, head, hips, ankles)
        assert ankles - head > 0.5 * h  # a person-sized skeleton, not a collapsed one
    assert float(out.scores.mean()) > 0.7


def test_left_and_right_match_the_true_keypoints_of_the_synthetic_set(blazepose, synthetic_root):
    from fastreid_ext.data.coco_keypoints import read_coco_keypoints

    root = synthetic_root / "synthetic_market"
    gt = read_coco_keypoints(str(root / "keypoints" / "person_keypoints_query.json"))
    names = sorted(gt.keypoints)[:16]
    out = blazepose.predict([blazepose.prepare(im) for im in _load(root / "query", names)])

    def pck(pred):
        hit = tot = 0
        for n, kp in zip(names, pred):
            g = gt.keypoints[n]
            v = g[:, 2] > 0
            hit += (np.linalg.norm(kp[v] - g[v, :2], axis=1) <= 0.1 * 128).sum()
            tot += v.sum()
        return hit / tot

    assert pck(out.keypoints) > 0.6
    assert pck(out.keypoints) > pck(out.keypoints[:, FLIP_INDEX]) + 0.1  # left/right not swapped


def test_mirrored_crop_gives_mirrored_keypoints(blazepose, mini_market_root):
    folder = mini_market_root / "bounding_box_test"
    images = _load(folder, sorted(os.listdir(folder))[:6])
    out = blazepose.predict([blazepose.prepare(im) for im in images])
    flipped = blazepose.predict([blazepose.prepare(im[:, ::-1].copy()) for im in images])
    back = flipped.keypoints[:, FLIP_INDEX].copy()
    back[..., 0] = images[0].shape[1] - 1 - back[..., 0]
    ok = (out.scores > 0.5) & (flipped.scores[:, FLIP_INDEX] > 0.5)
    assert np.median(np.linalg.norm(back - out.keypoints, axis=-1)[ok]) < 2.0  # pixels of a 64x128 crop


def test_landmarks_and_heatmaps_map_to_the_same_crop_pixels(blazepose, monkeypatch):
    """Decoding with known network outputs: landmark j regressed next to heatmap cell (u_j, v_j), whose map
    peaks sharply there; MediaPipe's refinement moves it onto the cell, and crop pixels follow the
    letterbox (64x128 crop, margin 1.25: scale 1.6, x offset 76.8, y offset 25.6)."""
    rng = np.random.default_rng(0)
    u, v = rng.integers(25, 39, 17), rng.integers(10, 54, 17)
    lms = np.zeros((1, 39, 5), np.float32)
    sub = COCO_FROM_BLAZEPOSE
    lms[0, sub, 0], lms[0, sub, 1] = 4 * u + 1.3, 4 * v + 2.1  # inside cell (u, v) of the 64x64 map
    lms[0, sub, 3] = np.linspace(-3, 3, 17)  # visibility logits
    logits = np.full((1, 64, 64, 39), -30.0, np.float32)
    logits[0, v, u, sub] = 30.0
    monkeypatch.setattr(blazepose, "_raw", lambda x: (lms, logits))
    prep = blazepose.prepare(np.zeros((128, 64, 3), np.uint8))
    out = blazepose.predict([prep], heatmaps=True)
    expected = np.stack([(4 * u - 76.8) / 1.6 - 0.5, (4 * v - 25.6) / 1.6 - 0.5], axis=1)
    np.testing.assert_allclose(out.keypoints[0], expected, atol=1e-3)
    np.testing.assert_allclose(np.stack([u, v, np.ones(17)], 1) @ out.affines[0].T, expected, atol=1e-6)
    np.testing.assert_allclose(out.scores[0], 1 / (1 + np.exp(-np.linspace(-3, 3, 17))), rtol=1e-5)
    assert out.heatmaps.shape == (1, 17, 64, 64) and (out.heatmaps[0].reshape(17, -1).argmax(1) == v * 64 + u).all()


def test_heatmaps_sit_on_the_keypoints_of_real_crops(blazepose, mini_market_root):
    from fastreid_ext.data.stored_heatmaps import resample_to_crop

    folder = mini_market_root / "query"
    images = _load(folder, sorted(os.listdir(folder))[:8])
    out = blazepose.predict([blazepose.prepare(im) for im in images], heatmaps=True)
    dist = []
    for i, im in enumerate(images):
        maps = resample_to_crop(out.heatmaps[i], out.affines[i], im.shape[:2], out_size=im.shape[:2])
        for k in np.flatnonzero(out.scores[i] > 0.8):
            y, x = np.unravel_index(maps[k].argmax(), maps[k].shape)
            dist.append(np.hypot(x - out.keypoints[i, k, 0], y - out.keypoints[i, k, 1]))
    assert len(dist) > 60 and np.median(dist) < 2.0  # crop pixels (measured 1.3 on 16 crops)

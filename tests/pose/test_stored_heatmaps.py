"""Stored heatmaps (fastreid_ext/data/stored_heatmaps.py): float16 memory-mapped array + index, read back in the
crop's frame: a peak stored at a known keypoint ends at that keypoint in crop pixels, left/right unchanged."""

import json

import numpy as np
import pytest

from fastreid_ext.data.stored_heatmaps import (HeatmapWriter, StoredHeatmaps, heatmap_files_of, load_crop_heatmaps,
                                               locate_stored_heatmaps, resample_to_crop)

CROP = (128, 64)  # H, W
# HRNet's affine for a 64x128 crop (box 120x160 around the centre, 4 input pixels per heatmap pixel)
HRNET_AFFINE = np.array([[4 * 120 / 192, 0, 32 - 60], [0, 4 * 160 / 256, 64 - 80]])
# BlazePose's for the same crop (margin 1.25: s = 1.6, the crop centred in 256x256)
BLAZE_AFFINE = np.array([[2.5, 0, -(256 - 1.6 * 64) / 2 / 1.6 - 0.5], [0, 2.5, -(256 - 1.6 * 128) / 2 / 1.6 - 0.5]])
KEYPOINTS = np.array([[20.3, 30.7], [45.0, 100.2], [10.6, 70.1]])  # crop pixels


def _maps_with_peaks_at(keypoints, affine, size, sigma=1.5):
    """(17, h, w) maps: joint k (< len(keypoints)) has a Gaussian whose centre maps to keypoint k."""
    inv = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))[:2]
    vs, us = np.mgrid[0:size[0], 0:size[1]]
    maps = np.zeros((17, *size), np.float32)
    for k, (x, y) in enumerate(keypoints):
        u, v = inv @ [x, y, 1]
        maps[k] = np.exp(-((us - u) ** 2 + (vs - v) ** 2) / (2 * sigma ** 2))
    return maps


def _peak(m, scale):
    """Crop position of a map's peak: the mean of the cells at >= half the maximum, weighted by their
    value, with cell centres at ((j + 0.5) * scale - 0.5)."""
    ys, xs = np.nonzero(m >= 0.5 * m.max())
    wgt = m[ys, xs]
    cx, cy = (wgt * xs).sum() / wgt.sum(), (wgt * ys).sum() / wgt.sum()
    return np.array([(cx + 0.5) * scale[1] - 0.5, (cy + 0.5) * scale[0] - 0.5])


@pytest.mark.parametrize("affine,size", [(HRNET_AFFINE, (64, 48)), (BLAZE_AFFINE, (64, 64))],
                         ids=["hrnet", "blazepose"])
def test_a_peak_at_a_keypoint_ends_at_that_keypoint_in_crop_pixels(tmp_path, affine, size):
    index = tmp_path / "keypoints" / "heatmaps_query.json"
    w = HeatmapWriter(str(index), 1, size, info={"model": "x"})
    w.add("a.jpg", _maps_with_peaks_at(KEYPOINTS, affine, size), affine, CROP)
    w.commit()
    reader = StoredHeatmaps(str(index))
    assert isinstance(reader.raw("a.jpg")[0], np.memmap) and reader.raw("a.jpg")[0].dtype == np.float16
    maps = reader.crop_heatmaps("a.jpg")  # default: half the crop's resolution
    assert tuple(maps.shape) == (17, 64, 32) and str(maps.dtype) == "torch.float32"
    for k, kp in enumerate(KEYPOINTS):  # left/right unchanged: joint k's peak is in channel k
        pos = _peak(maps[k].numpy(), (2, 2))
        assert np.abs(pos - kp).max() < 0.3, (k, pos, kp)
        assert maps[k].max() > 0.5
    assert float(maps[len(KEYPOINTS):].abs().max()) == 0.0
    full = load_crop_heatmaps(str(index), "a.jpg", size=CROP)  # at crop resolution
    for k, kp in enumerate(KEYPOINTS):
        pos = _peak(full[k].numpy(), (1, 1))
        assert np.abs(pos - kp).max() < 0.3, (k, pos, kp)


def test_grid_convention_matches_rendered_heatmaps():
    """A stored map that is exactly a rendered Gaussian (identity affine at crop resolution) reads back as the
    rendered heatmap at half resolution would: same cell centres as render_heatmaps."""
    torch = pytest.importorskip("torch")
    from fastreid_ext.data.keypoints import render_heatmaps

    kps = np.zeros((17, 3), np.float32)
    kps[0] = (20.0, 51.0, 2)
    full = render_heatmaps(kps, CROP, CROP, sigma=4.0).numpy()
    half = resample_to_crop(full, [[1, 0, 0], [0, 1, 0]], CROP, out_size=(64, 32))
    rendered = render_heatmaps(kps, CROP, (64, 32), sigma=2.0).numpy()
    peak = np.unravel_index(half[0].argmax(), half[0].shape)
    assert peak == np.unravel_index(rendered[0].argmax(), rendered[0].shape)
    assert torch.allclose(torch.from_numpy(half[0]), torch.from_numpy(rendered[0]), atol=0.06)


def test_index_is_written_last_and_abort_leaves_nothing(tmp_path):
    index = tmp_path / "heatmaps_x.json"
    w = HeatmapWriter(str(index), 2, (4, 3))
    w.add("a.jpg", np.ones((17, 4, 3)), np.eye(3)[:2], (8, 6))
    with pytest.raises(ValueError, match="1 of 2 images"):
        w.commit()
    assert not index.exists() and not (tmp_path / "heatmaps_x.npy").exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []
    w = HeatmapWriter(str(index), 1, (4, 3))
    with pytest.raises(ValueError, match="shape"):
        w.add("a.jpg", np.ones((17, 3, 4)), np.eye(3)[:2], (8, 6))
    w.abort()


def test_locating_maps_for_dataset_items(tmp_path):
    split = tmp_path / "ds" / "query"
    npy, index = heatmap_files_of(str(split))
    assert index == str(tmp_path / "ds" / "keypoints" / "heatmaps_query.json") and npy.endswith("heatmaps_query.npy")
    with pytest.raises(FileNotFoundError, match="heatmaps_query.json.*--save-heatmaps"):
        locate_stored_heatmaps([str(split / "a.jpg")])
    w = HeatmapWriter(index, 1, (4, 3), info={"model": "m"})
    w.add("a.jpg", np.zeros((17, 4, 3)), np.eye(3)[:2], (8, 6))
    w.commit()
    assert locate_stored_heatmaps([str(split / "a.jpg")]) == [(index, "a.jpg")]
    with pytest.raises(ValueError, match="1 of 2 images.*b.jpg"):
        locate_stored_heatmaps([str(split / "a.jpg"), str(split / "b.jpg")])
    bad = json.loads(open(index).read())
    bad["version"] = 99
    open(index, "w").write(json.dumps(bad))
    with pytest.raises(ValueError, match="version 99"):
        StoredHeatmaps(index)

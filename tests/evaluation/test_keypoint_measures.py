"""Keypoint / mask measures (RBNet's PCK@0.1 and mask-on-person) against hand computations."""

import pytest
import torch


def test_heatmap_peaks_map_grid_cells_to_image_pixels():
    from fastreid_ext.data.keypoints import render_heatmaps
    from fastreid_ext.evaluation.keypoints import heatmap_peaks

    kp = torch.tensor([[10.0, 20.0, 2], [41.0, 100.0, 2]]).numpy()
    hm = render_heatmaps(kp, (128, 64), (64, 32))[None]
    peaks = heatmap_peaks(hm, (128, 64))[0]
    # cell (i, j) centre: x = 2 j + 0.5, y = 2 i + 0.5; the quarter-pixel shift moves 0.5 image px
    assert (peaks - torch.tensor([[10.0, 20.0], [41.0, 100.0]])).abs().max() <= 0.5
    one = torch.zeros(1, 1, 4, 4)
    one[0, 0, 1, 2] = 1.0  # isolated maximum: no neighbour is higher, no shift
    assert heatmap_peaks(one, (8, 8))[0, 0].tolist() == [2 * 2 + 0.5, 2 * 1 + 0.5]


def test_pck_counts_by_hand():
    from fastreid_ext.evaluation.keypoints import pck

    gt = torch.tensor([[[10.0, 10.0, 2], [50.0, 50.0, 1], [0.0, 0.0, 0], [30.0, 30.0, 2]]])
    pred = torch.tensor([[[12.0, 10.0], [50.0, 63.0], [99.0, 99.0], [30.0, 42.9]]])
    # ref 128 -> 12.8 px: joint 0 (2 px off) counts, joints 1 (13 px) and 3 (12.9 px) do not, 2 is unlabelled
    assert pck(pred, gt, 128, 0.1) == (1, 3)
    assert pck(pred, gt, 130, 0.1) == (3, 3)   # threshold 13 px
    assert pck(pred, gt, torch.tensor([20.0]), 0.1) == (1, 3)


def test_mask_on_person_by_hand():
    from fastreid_ext.evaluation.keypoints import mask_on_person

    sil = torch.zeros(1, 1, 2, 4)
    sil[..., :, :1] = 1  # a quarter of the pixels
    mask = torch.tensor([[[[3.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, -5.0]]]])  # negatives count as 0
    on, uniform = mask_on_person(mask, sil)
    assert on == pytest.approx(4 / 5) and uniform == pytest.approx(0.25)


def test_generator_silhouettes_cover_the_visible_person(tmp_path):
    import numpy as np
    from PIL import Image

    from fastreid_ext.data.coco_keypoints import read_coco_keypoints
    from fastreid_ext.data.synthetic import generate
    from fastreid_ext.data.synthetic.generate import silhouette_path

    root = tmp_path / "synthetic_market"
    generate(str(root), num_train_ids=2, num_test_ids=2, progress=False, silhouettes=True)
    kf = read_coco_keypoints(str(root / "keypoints" / "person_keypoints_bounding_box_train.json"))
    inside = total = 0
    for name, kp in kf.keypoints.items():
        img = root / "bounding_box_train" / name
        sil = np.asarray(Image.open(silhouette_path(str(root), str(img)))) > 0
        assert sil.shape == (128, 64) and 0.05 < sil.mean() < 0.6
        vis = kp[:, 2] == 2  # visible joints lie on (or next to) the person's pixels
        for x, y in kp[vis, :2]:
            ys, xs = slice(max(int(y) - 1, 0), int(y) + 2), slice(max(int(x) - 1, 0), int(x) + 2)
            inside += bool(sil[ys, xs].any())
            total += 1
    assert total > 50 and inside / total > 0.95
    # images are the same with and without silhouettes
    plain = tmp_path / "plain"
    generate(str(plain), num_train_ids=2, num_test_ids=2, progress=False)
    name = next(iter(kf.keypoints))
    assert (plain / "bounding_box_train" / name).read_bytes() == (root / "bounding_box_train" / name).read_bytes()

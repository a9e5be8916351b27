"""Person-search data (issue 12): PRW's on-disk format read back from hand-made fixtures, its errors, and
the synthetic scenes written in that format."""

import sys

import numpy as np
import pytest
import scipy.io
from PIL import Image

from fastreid_ext.data.search import UNLABELLED, box_iou, read_prw, write_prw_annotation


def _prw_fixture(root, query_line="7 10 20 30 60 c2s1_000100"):
    """Two train frames, two test frames; one annotation in the real files' other variable name, one
    with a negative coordinate (as some real PRW boxes have)."""
    (root / "frames").mkdir(parents=True)
    (root / "annotations").mkdir()
    frames = {"c1s1_000025": [[3, 5, 5, 20, 40], [-2, 50, 5, 20, 40]],
              "c2s1_000050": [[3, -4, 10, 20, 40]],
              "c1s1_000075": [[7, 60, 10, 25, 50]],
              "c2s1_000100": [[7, 10, 20, 30, 60], [-2, 70, 0, 10, 20], [8, 40, 20, 10, 30]]}
    for i, (name, rows) in enumerate(frames.items()):
        Image.new("RGB", (120, 90), (i * 40, 100, 100)).save(root / "frames" / f"{name}.jpg")
        key = "anno_file" if name == "c1s1_000075" else "box_new"
        scipy.io.savemat(root / "annotations" / f"{name}.jpg.mat", {key: np.array(rows, dtype=np.float64)})
    scipy.io.savemat(root / "frame_train.mat", {"img_index_train": np.array(["c1s1_000025", "c2s1_000050"], dtype=object)[:, None]})
    scipy.io.savemat(root / "frame_test.mat", {"img_index_test": np.array(["c1s1_000075", "c2s1_000100"], dtype=object)[:, None]})
    scipy.io.savemat(root / "ID_test.mat", {"ID_test": np.array([[7.0, 8.0]])})
    (root / "query_info.txt").write_text(query_line + "\n")
    return root


def test_prw_reader_round_trips_the_real_format(tmp_path):
    s = read_prw(str(_prw_fixture(tmp_path / "PRW")))
    assert s.train == ["c1s1_000025", "c2s1_000050"] and s.test == ["c1s1_000075", "c2s1_000100"]
    f = s.frames["c2s1_000100"]
    assert f.cam == 2 and f.path.endswith("frames/c2s1_000100.jpg")
    np.testing.assert_allclose(f.boxes, [[10, 20, 40, 80], [70, 0, 80, 20], [40, 20, 50, 50]])  # x, y, w, h -> x1y1x2y2
    assert f.pids.tolist() == [7, UNLABELLED, 8]
    np.testing.assert_allclose(s.frames["c2s1_000050"].boxes, [[0, 10, 16, 50]])  # x1 = -4 clipped to 0, x2 = -4 + 20
    np.testing.assert_allclose(s.frames["c1s1_000075"].boxes, [[60, 10, 85, 60]])  # the "anno_file" variable
    assert len(s.queries) == 1 and s.queries[0].pid == 7 and s.queries[0].frame == "c2s1_000100"
    np.testing.assert_allclose(s.queries[0].box, [10, 20, 40, 80])
    assert s.train_ids() == [3]
    # the writer the scene generator uses writes what the reader reads
    write_prw_annotation(str(tmp_path / "PRW/annotations/c2s1_000100.jpg.mat"), f.boxes, f.pids)
    g = read_prw(str(tmp_path / "PRW")).frames["c2s1_000100"]
    np.testing.assert_allclose(g.boxes, f.boxes) and np.testing.assert_array_equal(g.pids, f.pids)


@pytest.mark.parametrize("breakage,message", [
    ("query_frame", r"query_info.txt:1: query frame c1s1_000025 is not a test frame"),
    ("query_box", r"query_info.txt:1: query box of id 7 matches no box of that id in annotations/c2s1_000100.jpg.mat"),
    ("annotation_shape", r"c1s1_000075.jpg.mat: anno_file must be N x 5"),
    ("missing_annotation", r"c1s1_000075.jpg.mat not found"),
    ("missing_frames", r"PRW: .*frames not found"),
])
def test_prw_reader_names_the_broken_file(tmp_path, breakage, message):
    root = tmp_path / "PRW"
    line = {"query_frame": "3 5 5 20 40 c1s1_000025", "query_box": "7 90 0 20 20 c2s1_000100"}.get(breakage)
    _prw_fixture(root, *( [line] if line else []))
    if breakage == "annotation_shape":
        scipy.io.savemat(root / "annotations/c1s1_000075.jpg.mat", {"anno_file": np.zeros((2, 4))})
    elif breakage == "missing_annotation":
        (root / "annotations/c1s1_000075.jpg.mat").unlink()
    elif breakage == "missing_frames":
        import shutil

        shutil.rmtree(root / "frames")
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        read_prw(str(root))


def test_synthetic_scenes_in_prw_format(tmp_path):
    from fastreid_ext.data.synthetic.scenes import generate_scenes

    root = tmp_path / "scenes"
    c = generate_scenes(str(root), num_train_ids=6, num_test_ids=6, seed=3)
    s = read_prw(str(root))  # the benchmark's own reader accepts it
    assert c["train_frames"] == len(s.train) and c["test_frames"] == len(s.test) and c["queries"] == len(s.queries) > 0
    train_ids = {int(p) for n in s.train for p in s.frames[n].pids if p >= 0}
    test_ids = {int(p) for n in s.test for p in s.frames[n].pids if p >= 0}
    assert train_ids <= set(range(1, 7)) and test_ids <= set(range(7, 13)) and len(test_ids) >= 4  # the crop set's ids
    assert c["unlabelled_boxes"] > 0  # distractor people, id -2
    cams = {}
    for n in s.test:
        for p in s.frames[n].pids:
            cams.setdefault(int(p), set()).add(s.frames[n].cam)
    assert sum(len(v) >= 2 for k, v in cams.items() if k >= 0) >= len(test_ids) // 2  # seen by several cameras
    W, H = Image.open(s.frames[s.test[0]].path).size
    overlaps = 0
    for n in s.train + s.test:
        b = s.frames[n].boxes
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 3] <= H).all() and (b[:, 2:] > b[:, :2]).all()
        iou = box_iou(b, b)
        overlaps += int((iou[np.triu_indices(len(b), 1)] > 0).sum())
    assert overlaps > 0  # people occlude each other
    for q in s.queries:  # each query can be found in another frame
        assert sum(q.pid in s.frames[n].pids for n in s.test if n != q.frame) >= 1
        assert (root / "query_box" / f"{q.pid:04d}_{q.frame}.jpg").is_file()
    # deterministic, and not regenerated when the same set is there
    again = generate_scenes(str(tmp_path / "again"), num_train_ids=6, num_test_ids=6, seed=3)
    assert {k: v for k, v in again.items() if k not in ("root", "skipped")} == \
        {k: v for k, v in c.items() if k not in ("root", "skipped")}
    s2 = read_prw(str(tmp_path / "again"))
    for n in s.test:
        np.testing.assert_array_equal(s2.frames[n].boxes, s.frames[n].boxes)
    assert generate_scenes(str(root), num_train_ids=6, num_test_ids=6, seed=3)["skipped"]
    with pytest.raises(FileExistsError, match="other arguments"):
        generate_scenes(str(root), num_train_ids=5, num_test_ids=6, seed=3)


def _cuhk_fixture(root, query_gallery_extra=None, train_box=(5, 5, 20, 40)):
    """53 images: s1, s2 train (person 1 in both), pool s3..s53; the query's person in s3 (query), s10 and
    s20 (gallery ground truth); gallery of the query = s4..s53 (50 images)."""
    from fastreid_ext.data.search import write_cuhk_sysu

    (root / "Image" / "SSM").mkdir(parents=True)
    images = {f"s{i}.jpg": [[60, 10, 20, 50]] for i in range(1, 54)}  # one unlabelled person each
    images["s1.jpg"] = [[5, 5, 20, 40], [60, 10, 20, 50]]
    images["s2.jpg"] = [[30, 5, 20, 40]]
    images["s3.jpg"] = [[10, 10, 25, 60], [60, 10, 20, 50]]
    images["s10.jpg"] = [[60, 10, 20, 50], [15, 12, 24, 58]]
    images["s20.jpg"] = [[40, 8, 26, 62]]
    images["s7.jpg"] = [[60, 10, 20, 50], [0, 0, 0, 30]]  # a zero-width box, as a few real ones
    for n in images:
        Image.new("RGB", (8, 8)).save(root / "Image" / "SSM" / n)
    gt = {"s10.jpg": [15, 12, 24, 58], "s20.jpg": [40, 8, 26, 62]}
    gallery = [(f"s{i}.jpg", gt.get(f"s{i}.jpg", [])) for i in range(4, 54)] + (query_gallery_extra or [])
    write_cuhk_sysu(str(root), images, [f"s{i}.jpg" for i in range(3, 54)],
                    [[("s1.jpg", list(train_box)), ("s2.jpg", [30, 5, 20, 40])]],
                    {50: [(("s3.jpg", [10, 10, 25, 60]), gallery)]})
    return root


def test_cuhk_sysu_reader_round_trips_the_real_format(tmp_path):
    from fastreid_ext.data.search import read_cuhk_sysu

    s = read_cuhk_sysu(str(_cuhk_fixture(tmp_path / "cuhk")), gallery_size=50)
    assert s.train == ["s1.jpg", "s2.jpg"] and len(s.test) == 51 and s.test[0] == "s3.jpg"
    np.testing.assert_allclose(s.frames["s1.jpg"].boxes, [[5, 5, 25, 45], [60, 10, 80, 60]])
    assert s.frames["s1.jpg"].pids.tolist() == [1, UNLABELLED] and s.frames["s2.jpg"].pids.tolist() == [1]
    assert len(s.frames["s7.jpg"].boxes) == 1  # the zero-width box dropped
    (q,) = s.queries
    assert q.pid == 2 and q.frame == "s3.jpg" and len(q.gallery) == 50 and "s3.jpg" not in q.gallery
    np.testing.assert_allclose(q.box, [10, 10, 35, 70])
    assert s.frames["s10.jpg"].pids.tolist() == [UNLABELLED, 2] and s.frames["s20.jpg"].pids.tolist() == [2]
    assert s.frames["s3.jpg"].pids.tolist() == [2, UNLABELLED]


def test_cuhk_sysu_reader_names_what_is_wrong(tmp_path):
    from fastreid_ext.data.search import read_cuhk_sysu

    root = _cuhk_fixture(tmp_path / "a", train_box=(6, 5, 20, 40))
    with pytest.raises(ValueError, match=r"Train.mat \(person 1\): box \[6.0, 5.0, 20.0, 40.0\] of s1.jpg equals no box"):
        read_cuhk_sysu(str(root), 50)
    root = _cuhk_fixture(tmp_path / "b", query_gallery_extra=[("s3.jpg", [])])
    with pytest.raises(ValueError, match=r"TestG50.mat \(query 1\): the gallery contains the query's own image s3.jpg"):
        read_cuhk_sysu(str(root), 50)
    with pytest.raises(FileNotFoundError, match="TestG100.mat not found"):
        read_cuhk_sysu(str(_cuhk_fixture(tmp_path / "c")), 100)
    with pytest.raises(ValueError, match="gallery size must be one of"):
        read_cuhk_sysu(str(root), 60)


def test_scenes_convert_to_cuhk_sysu_and_read_back_with_its_gallery_protocol(tmp_path, capsys):
    """The synthetic scenes (PRW's format) written in CUHK-SYSU's layout by tools/make_scenes.py --cuhk-sysu
    (convert_to_cuhk_sysu) and read back by read_cuhk_sysu: the same frames and boxes, the train / test split,
    one identity per PRW identity (renumbered: train ones from Train.mat, test ones from the queries),
    unlabelled people unlabelled; each TestG50 gallery holds every other test frame showing the person, 50
    frames in all; too few test frames for a gallery size is an error. Then CUHKSYSUSearch reads the folder
    through the trainer's test loader with DATASETS.SEARCH.GALLERY_SIZE 50."""
    from conftest import COMMON, REPO, make_cfg
    from fastreid_ext.data.search import convert_to_cuhk_sysu, read_cuhk_sysu
    from fastreid_ext.data.search.loader import build_search_test_loader

    sys.path.insert(0, str(REPO / "tools"))
    import make_scenes  # tools/make_scenes.py --cuhk-sysu

    args = ["--root", str(tmp_path / "synthetic_scenes"), "--train-ids", "4", "--test-ids", "44", "--seed", "0",
            "--frame-size", "96", "192", "--cuhk-sysu", str(tmp_path / "CUHK-SYSU")]
    assert make_scenes.main(args + ["--gallery-sizes", "50", "100"]) == 2
    assert "a gallery of 100 frames needs at least 101 test frames" in capsys.readouterr().err
    assert make_scenes.main(args) == 0  # the scenes exist: only the conversion runs
    out = capsys.readouterr().out
    assert '"frames": 68, "train_frames": 10, "test_frames": 58, "train_ids": 4, "queries": 44' in out, out
    p = read_prw(str(tmp_path / "synthetic_scenes"))
    assert len(p.test) == 58  # each gallery of 50 leaves 7 other test frames out
    with pytest.raises(ValueError, match="a gallery of 100 frames needs at least 101 test frames; .* has 58"):
        convert_to_cuhk_sysu(p, str(tmp_path / "too_few"), (50, 100))
    c = read_cuhk_sysu(str(tmp_path / "CUHK-SYSU"), 50)
    assert c.train == p.train and c.test == p.test and set(c.frames) == set(p.frames)
    pid_map = {}
    for name, f in p.frames.items():
        g = c.frames[name]
        np.testing.assert_allclose(g.boxes, f.boxes, atol=1e-6)
        for a, b in zip(f.pids.tolist(), g.pids.tolist()):
            assert (a >= 0) == (b >= 0), (name, a, b)
            if a >= 0:
                assert pid_map.setdefault(a, b) == b, (name, a, b)  # one CUHK-SYSU identity per PRW identity
    assert len(set(pid_map.values())) == len(pid_map) == 48
    for q, cq in zip(p.queries, c.queries):
        assert cq.frame == q.frame and cq.pid == pid_map[q.pid] and len(cq.gallery) == 50
        f = p.frames[q.frame]
        np.testing.assert_allclose(cq.box, f.boxes[f.pids == q.pid][0], atol=1e-6)
        shows = {n for n in p.test if n != q.frame and q.pid in p.frames[n].pids}
        assert shows and shows <= set(cq.gallery) and q.frame not in cq.gallery

    cfg = make_cfg("configs/Synthetic/npsm_R18.yml", COMMON + [
        "DATASETS.ROOT", str(tmp_path), "DATASETS.NAMES", "('CUHKSYSUSearch',)", "DATASETS.TESTS", "('CUHKSYSUSearch',)",
        "DATASETS.SEARCH.GALLERY_SIZE", "50", "DATASETS.SEARCH.PROPOSALS_DIR", str(tmp_path / "proposals")])
    _, test_set = build_search_test_loader(cfg, "CUHKSYSUSearch")
    assert test_set.num_pairs == 44 * 50


def test_person_box_filter_by_hand():
    from fastreid_ext.data.search.proposals import person_boxes

    boxes = np.array([[0, 0, 20, 60],     # person-like: h/w 3, tall enough -> kept
                      [1, 0, 21, 60],     # near-duplicate of the first (IoU > 0.9) -> dropped
                      [0, 0, 60, 60],     # square -> dropped
                      [0, 0, 4, 40],      # h/w 10 (a pole) -> dropped
                      [50, 50, 55, 60],   # 10 rows, below 0.15 x 100 -> dropped
                      [30, 10, 50, 50]])  # h/w 2 -> kept
    np.testing.assert_array_equal(person_boxes(boxes, (100, 200)), boxes[[0, 5]])
    assert len(person_boxes(boxes, (100, 200), max_boxes=1)) == 1


def test_selective_search_proposals_cover_the_people_and_resume_from_cache(tmp_path, monkeypatch):
    from fastreid_ext.data.search import proposals as P
    from fastreid_ext.data.synthetic.scenes import generate_scenes

    generate_scenes(str(tmp_path / "s"), num_train_ids=2, num_test_ids=4, seed=2)
    s = read_prw(str(tmp_path / "s"))
    frames = s.test[:3]
    got = P.compute_proposals(s, str(tmp_path / "cache"), frames, progress=False)
    hit = tot = 0
    for n in frames:
        assert 0 < len(got[n]) <= 300
        h, t = P.proposal_recall(got[n], s.frames[n].boxes)
        hit, tot = hit + h, tot + t
    assert tot > 0 and hit / tot >= 0.8, (hit, tot)  # measured: 1.0 on 8 synthetic frames at IoU 0.5
    # cached: a second run computes nothing (selective search would fail now) and gives the same boxes
    monkeypatch.setattr(P, "selective_search", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = P.compute_proposals(s, str(tmp_path / "cache"), frames, progress=False)
    for n in frames:
        np.testing.assert_array_equal(again[n], got[n])
    with pytest.raises(ValueError, match="other settings"):
        P.compute_proposals(s, str(tmp_path / "cache"), frames, max_boxes=10, progress=False)

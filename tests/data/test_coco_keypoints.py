"""The keypoint contract (fastreid_ext.data.coco_keypoints): names, flip pairs, writer and reader."""

import json

import numpy as np
import pytest

from fastreid_ext.data.coco_keypoints import (COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON, FLIP_INDEX,
                                              KeypointRecord, keypoint_file_name, read_coco_keypoints,
                                              write_coco_keypoints)


def _kps(seed, n=17):
    rng = np.random.default_rng(seed)
    k = np.zeros((n, 3), np.float32)
    k[:, 0] = rng.uniform(0, 63, n).round(2)
    k[:, 1] = rng.uniform(0, 127, n).round(2)
    k[:, 2] = rng.integers(0, 3, n)
    return k


def test_names_pairs_and_flip_index():
    assert len(COCO_KEYPOINTS) == 17 and len(COCO_SKELETON) == 19
    for a, b in COCO_FLIP_PAIRS:
        assert COCO_KEYPOINTS[a].replace("left", "right") == COCO_KEYPOINTS[b]
        assert FLIP_INDEX[a] == b and FLIP_INDEX[b] == a
    assert FLIP_INDEX[0] == 0 and sorted(FLIP_INDEX) == list(range(17))
    assert keypoint_file_name("query") == "person_keypoints_query.json"


def test_round_trip_with_and_without_scores(tmp_path):
    path = tmp_path / "kp" / "person_keypoints_query.json"
    scores = np.linspace(0, 1, 17)
    recs = [KeypointRecord("b.jpg", _kps(1), scores=scores),
            ("a.jpg", _kps(2)),  # plain tuple
            {"file_name": "sub\\c.jpg", "keypoints": _kps(3).reshape(-1), "width": 32, "height": 64}]
    write_coco_keypoints(str(path), recs, split="query", width=64, height=128)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    kf = read_coco_keypoints(str(path))
    assert kf.images == ["a.jpg", "b.jpg", "sub/c.jpg"]  # sorted, '/'-separated
    np.testing.assert_array_equal(kf.keypoints["a.jpg"], _kps(2))
    np.testing.assert_array_equal(kf.keypoints["sub/c.jpg"], _kps(3))
    assert kf.keypoints["b.jpg"].dtype == np.float32 and kf.keypoints["b.jpg"].shape == (17, 3)
    np.testing.assert_allclose(kf.scores["b.jpg"], scores.astype(np.float32))
    assert set(kf.scores) == {"b.jpg"} and not kf.flat_names
    coco = json.loads(path.read_text())
    ann = {coco["images"][a["image_id"] - 1]["file_name"]: a for a in coco["annotations"]}
    assert "keypoint_scores" in ann["b.jpg"] and "keypoint_scores" not in ann["a.jpg"]
    assert ann["a.jpg"]["bbox"] == [0.0, 0.0, 64.0, 128.0] and ann["sub/c.jpg"]["bbox"] == [0.0, 0.0, 32.0, 64.0]
    assert ann["a.jpg"]["num_keypoints"] == int((_kps(2)[:, 2] > 0).sum())
    assert coco["categories"][0]["keypoints"] == list(COCO_KEYPOINTS)
    assert "query" in coco["info"]["description"]


def test_writer_rejects_bad_records_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "person_keypoints_query.json"
    write_coco_keypoints(str(path), [("a.jpg", _kps(0))])
    before = path.read_bytes()
    with pytest.raises(ValueError, match="duplicate image name"):
        write_coco_keypoints(str(path), [("a.jpg", _kps(0)), ("./a.jpg", _kps(1))])
    with pytest.raises(ValueError, match="50 keypoint values"):
        write_coco_keypoints(str(path), [("a.jpg", np.zeros(50))])
    bad = _kps(0)
    bad[3, 2] = 3
    with pytest.raises(ValueError, match=r"visibility values \[3.0\]"):
        write_coco_keypoints(str(path), [("a.jpg", bad)])
    with pytest.raises(ValueError, match="16 keypoint_scores"):
        write_coco_keypoints(str(path), [KeypointRecord("a.jpg", _kps(0), scores=np.ones(16))])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def _coco(**over):
    base = {"images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
            "annotations": [{"id": 1, "image_id": 1, "keypoints": [1.0, 2.0, 2] * 17},
                            {"id": 2, "image_id": 2, "keypoints": [3.0, 4.0, 1] * 17}]}
    base.update(over)
    return base


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not valid JSON"),
    (json.dumps([1, 2]), "expected a JSON object"),
    (json.dumps({"images": []}), "missing key 'annotations'"),
    (json.dumps(_coco(images=[{"id": 1}])), r"images\[0\] lacks 'id' or 'file_name'"),
    (json.dumps(_coco(images=[{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "a.jpg"}])),
     "duplicate image name 'a.jpg'"),
    (json.dumps(_coco(images=[{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}])),
     "duplicate image id 1"),
    (json.dumps(_coco(annotations=[{"id": 7, "image_id": 9, "keypoints": [0] * 51}])), "image id 9 not found"),
    (json.dumps(_coco(annotations=[{"id": 7, "image_id": 1, "keypoints": [0] * 48}])),
     "annotation 7 of image 'a.jpg': 48 keypoint values, expected 51"),
    (json.dumps(_coco(annotations=[{"id": 7, "image_id": 1, "keypoints": [0] * 51, "keypoint_scores": [1]}])),
     "1 keypoint_scores, expected 17"),
    (json.dumps(_coco(annotations=[{"id": 1, "image_id": 1, "keypoints": [0] * 51}] * 2)),
     "more than one annotation"),
    (json.dumps(_coco(categories=[{"id": 1, "name": "person", "keypoints": ["head"] * 17}])), "COCO-17 names"),
])
def test_reader_errors_name_the_file_and_the_problem(tmp_path, content, message):
    path = tmp_path / "person_keypoints_query.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as e:
        read_coco_keypoints(str(path))
    assert str(path) in str(e.value)


def test_reader_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="keypoint file not found: .*nope.json"):
        read_coco_keypoints(str(tmp_path / "nope.json"))


def test_image_without_annotation_has_no_keypoints(tmp_path):
    path = tmp_path / "k.json"
    path.write_text(json.dumps(_coco(annotations=[{"id": 1, "image_id": 2, "keypoints": [5, 6, 2] * 17}])))
    kf = read_coco_keypoints(str(path))
    assert kf.images == ["a.jpg", "b.jpg"] and list(kf.keypoints) == ["b.jpg"] and kf.flat_names

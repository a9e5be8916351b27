"""The pose tool's runner (fastreid_ext/pose/runner.py) with a fast stand-in model: sharding covers every
image exactly once, resume after a kill at any point (in the model, in the merge, a real SIGKILL), no
mixing of two models' results, unreadable images reported and skipped, the written files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from pose_helpers import StubPose, env_without_debug, fingerprint, make_crops

from conftest import REPO
from fastreid_ext.data.coco_keypoints import read_coco_keypoints, write_coco_keypoints
from fastreid_ext.errors import UserError
from fastreid_ext.pose import runner
from fastreid_ext.pose.runner import folder_splits, parse_shard, run

N = 22  # images; chunks of 4 -> 6 chunks (the last one short)


@pytest.fixture
def crops(tmp_path):
    folder = tmp_path / "data" / "crops"
    names = make_crops(folder, N, corrupt=("img_005.png",))
    return folder, names


def _run(model, folder, **kw):
    kw.setdefault("chunk_size", 4)
    kw.setdefault("progress", False)
    kw.setdefault("log", lambda msg: None)
    return run(model, folder_splits(str(folder)), **kw)


def _entries(path):
    kf = read_coco_keypoints(str(path))
    return {k: (kf.keypoints[k].tolist(), kf.scores[k].tolist()) for k in kf.keypoints}


def test_output_lands_where_training_looks_with_visibility_scores_and_unreadable_entries(crops):
    folder, names = crops
    logs = []
    summary = _run(StubPose(), folder, threshold=0.4, log=logs.append)
    path = folder.parent / "keypoints" / "person_keypoints_crops.json"  # dataset_keypoints' rule
    kf = read_coco_keypoints(str(path))
    assert sorted(kf.keypoints) == names
    bad = "img_005.png"
    assert any(bad in line and "truncated" in line for line in logs), logs  # reported by name and reason
    assert summary.unreadable[0][0].endswith(bad)
    assert kf.keypoints[bad][:, 2].tolist() == [0] * 17 and kf.info["pose_tool"]["unreadable"].keys() == {bad}
    good = [n for n in names if n != bad]
    for n in good:
        kp, s = kf.keypoints[n], kf.scores[n]
        assert ((s >= 0.4) == (kp[:, 2] == 2)).all() and set(kp[:, 2].tolist()) <= {0.0, 2.0}
    assert kf.info["pose_tool"]["identity"]["model"] == "stub"
    split = summary.splits[0]
    assert (split.images, split.unreadable) == (N, 1)
    vis = np.array([kf.keypoints[n][:, 2] for n in good])
    assert split.joints_below == int((vis == 0).sum())
    assert split.mean_score == pytest.approx(float(np.mean([kf.scores[n] for n in good])), abs=1e-4)
    assert not (folder.parent / "keypoints" / runner.PARTS_FOLDER).exists()  # parts cleaned up


def test_shards_cover_every_image_exactly_once(crops):
    folder, names = crops
    out = folder.parent / "keypoints"
    _run(StubPose(), folder)
    unsharded = _entries(out / "person_keypoints_crops.json")
    shutil.rmtree(out)
    model = StubPose()
    summaries = [_run(model, folder, shard=(i, 3)) for i in (2, 0, 1)]  # any order
    readable = [fingerprint(folder / n) for n in names if n != "img_005.png"]
    assert Counter(model.seen) == Counter(readable)  # each readable image predicted exactly once
    assert [s.splits[0].state for s in summaries[:2]] == ["2 of 6 chunks done (other shards pending)",
                                                          "4 of 6 chunks done (other shards pending)"]
    assert summaries[-1].splits[0].state == "done"  # the last shard merges
    assert _entries(out / "person_keypoints_crops.json") == unsharded


def test_shard_argument():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "1", "-1/2", "a/b", "0/0"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


def test_resume_after_a_kill_in_the_model_redoes_no_finished_chunk(crops, tmp_path):
    folder, names = crops
    ref_dir = tmp_path / "ref"
    _run(StubPose(), folder, save_heatmaps=True, threshold=0.5)
    reference = _entries(folder.parent / "keypoints" / "person_keypoints_crops.json")
    ref_maps = np.load(folder.parent / "keypoints" / "heatmaps_crops.npy")
    os.rename(folder.parent / "keypoints", ref_dir)

    killed = StubPose(fail_after=10)
    with pytest.raises(KeyboardInterrupt):
        _run(killed, folder, save_heatmaps=True, threshold=0.5)
    parts = sorted((folder.parent / "keypoints" / runner.PARTS_FOLDER / "crops").glob("chunk_*.json"))
    assert len(parts) == 2  # chunks 0 (4 images) and 1 (3 readable + the unreadable one), then killed
    resumed = StubPose()
    summary = _run(resumed, folder, save_heatmaps=True, threshold=0.5)
    assert len(resumed.seen) == N - 8 and summary.skipped == 8  # the two finished chunks were not redone
    assert _entries(folder.parent / "keypoints" / "person_keypoints_crops.json") == reference
    assert np.array_equal(np.load(folder.parent / "keypoints" / "heatmaps_crops.npy"), ref_maps)


def test_resume_after_a_kill_during_the_merge_needs_no_model_run(crops, monkeypatch):
    folder, _ = crops

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while writing the keypoint file")

    monkeypatch.setattr(runner, "write_coco_keypoints", boom)
    with pytest.raises(KeyboardInterrupt):
        _run(StubPose(), folder, save_heatmaps=True)
    assert (folder.parent / "keypoints" / "heatmaps_crops.json").exists()  # heatmaps were written first
    assert not (folder.parent / "keypoints" / "person_keypoints_crops.json").exists()
    monkeypatch.undo()
    again = StubPose()
    summary = _run(again, folder, save_heatmaps=True)
    assert again.seen == [] and summary.splits[0].state == "done"


def test_resume_after_sigkill(crops):
    """A real kill: the tool's runner in a subprocess, SIGKILLed once some chunks are written."""
    folder, names = crops
    parts = folder.parent / "keypoints" / runner.PARTS_FOLDER / "crops"
    script = (f"import sys; sys.path[:0] = [{str(REPO)!r}, {str(REPO / 'tests' / 'pose')!r}]\n"
              "from pose_helpers import StubPose\n"
              "from fastreid_ext.pose.runner import folder_splits, run\n"
              f"run(StubPose(delay=0.15), folder_splits({str(folder)!r}), chunk_size=4, progress=False, "
              "save_heatmaps=True, workers=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env_without_debug(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while len(list(parts.glob("chunk_*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()
    done = sum(len(json.loads(p.read_text())["keys"]) for p in parts.glob("chunk_*.json"))
    assert 8 <= done < N
    resumed = StubPose()
    summary = _run(resumed, folder, save_heatmaps=True)
    assert summary.splits[0].state == "done" and summary.skipped == done
    readable = [n for n in names if n != "img_005.png"]
    assert len(resumed.seen) == len(readable) - (done - 1)  # the finished parts hold the unreadable image
    written = read_coco_keypoints(str(folder.parent / "keypoints" / "person_keypoints_crops.json"))
    assert sorted(written.keypoints) == names


def test_results_of_another_model_are_never_mixed(crops):
    folder, _ = crops
    out = folder.parent / "keypoints" / "person_keypoints_crops.json"
    _run(StubPose(version=1), folder)
    with pytest.raises(UserError, match="stub-1.*--overwrite"):
        _run(StubPose(version=2), folder)
    assert read_coco_keypoints(str(out)).info["pose_tool"]["identity"]["version"] == 1
    out.unlink()
    with pytest.raises(KeyboardInterrupt):  # version 3 leaves a finished chunk behind
        _run(StubPose(version=3, fail_after=4), folder)
    with pytest.raises(UserError, match="unfinished results.*stub-3"):
        _run(StubPose(version=2), folder)
    v2 = StubPose(version=2)
    _run(v2, folder, overwrite=True)
    assert len(v2.seen) == N - 1  # nothing of version 3's part was reused
    assert read_coco_keypoints(str(out)).info["pose_tool"]["identity"]["version"] == 2


def test_ground_truth_is_not_overwritten(crops):
    folder, names = crops
    out = folder.parent / "keypoints" / "person_keypoints_crops.json"
    write_coco_keypoints(str(out), [(n, np.zeros((17, 3))) for n in names], "crops")
    with pytest.raises(UserError, match="not written by the pose tool"):
        _run(StubPose(), folder)


def test_another_threshold_rewrites_flags_without_the_model(crops):
    folder, _ = crops
    _run(StubPose(), folder, threshold=0.2)
    path = folder.parent / "keypoints" / "person_keypoints_crops.json"
    again = StubPose()
    _run(again, folder, threshold=0.8)
    kf = read_coco_keypoints(str(path))
    assert again.seen == []
    assert kf.info["pose_tool"]["visibility_threshold"] == 0.8
    for k, kp in kf.keypoints.items():
        if k != "img_005.png":
            assert ((kf.scores[k] >= 0.8) == (kp[:, 2] == 2)).all()


def test_a_changed_image_list_is_recomputed(crops):
    folder, names = crops
    _run(StubPose(), folder)
    make_crops(folder, N + 1)  # one image more (and img_005 readable now)
    model = StubPose()
    _run(model, folder)
    assert len(model.seen) == N + 1  # a done file records its image list: another list is redone
    kf = read_coco_keypoints(str(folder.parent / "keypoints" / "person_keypoints_crops.json"))
    assert len(kf.keypoints) == N + 1


def test_a_split_being_merged_by_another_process_is_left_to_it(crops, monkeypatch):
    import fcntl

    folder, _ = crops
    monkeypatch.setattr(runner, "write_coco_keypoints", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        _run(StubPose(), folder)  # every chunk done, merge killed
    monkeypatch.undo()
    parts = folder.parent / "keypoints" / runner.PARTS_FOLDER / "crops"
    with open(parts / ".merge.lock", "a") as held:  # another process merging
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        summary = _run(StubPose(), folder)
        assert summary.splits[0].state == "being merged by another process"
        assert not (folder.parent / "keypoints" / "person_keypoints_crops.json").exists()
    summary = _run(StubPose(), folder)  # the lock is gone with its holder: this run merges
    assert summary.splits[0].state == "done" and not parts.exists()

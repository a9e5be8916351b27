"""Interrupted and concurrent runs (issue 13, item 4): SIGKILL mid-run then --resume, one run per
OUTPUT_DIR (a lock that a dead run's --resume takes over), an unwritable OUTPUT_DIR failing at start."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

TRAIN_NET = [sys.executable, str(REPO / "tools/train_net.py"), "--config-file",
             str(REPO / "configs/Synthetic/bagtricks_R18.yml")]


def _opts(root, out, max_epoch, seed=0):
    # small and quick but really learning: 64x32 input, 4 epochs of the 30-id fixture set
    return ["DATASETS.ROOT", str(root), "OUTPUT_DIR", str(out), "SEED", str(seed),
            "SOLVER.MAX_EPOCH", str(max_epoch), "SOLVER.CHECKPOINT_PERIOD", "1", "TEST.EVAL_PERIOD", str(max_epoch),
            "SOLVER.WARMUP_ITERS", "0", "SOLVER.STEPS", "[100]", "SOLVER.LOG_PERIOD", "2",
            "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
            "INPUT.PADDING.SIZE", "2"]


def _final_metrics(out):
    """The last evaluation table of ``log.txt`` (FastReID's csv-format print), as a dict."""
    lines = (out / "log.txt").read_text().splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("| Dataset") and "Rank-1" in line]
    assert heads, f"no evaluation table in {out / 'log.txt'}"
    names = [c.strip() for c in lines[heads[-1]].strip("|").split("|")]
    values = [c.strip() for c in lines[heads[-1] + 2].strip("|").split("|")]
    return {k: float(v) for k, v in zip(names[1:], values[1:])}


def _run(args, cwd):
    return subprocess.run(TRAIN_NET + args, capture_output=True, text=True, cwd=cwd, timeout=600)


def test_sigkill_mid_run_then_resume_loses_at_most_one_checkpoint_period(synthetic_root, tmp_path):
    killed = tmp_path / "killed"

    # the same run, killed with SIGKILL in the middle of its third epoch
    proc = subprocess.Popen(TRAIN_NET + _opts(synthetic_root, killed, 4), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (killed / "model_0001.pth").exists():  # epochs 0 and 1 done and saved
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.time() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
        time.sleep(1.0)  # somewhere inside epoch 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert (killed / ".run.lock").exists(), "the killed run leaves its lock behind"
    assert not (killed / "model_final.pth").exists()
    last = (killed / "last_checkpoint").read_text().strip()
    assert last.startswith("model_000") and (killed / last).is_file()  # never half-written

    r = _run(["--resume"] + _opts(synthetic_root, killed, 4), tmp_path)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "no longer running; taking the lock over" in log
    done = int(last[len("model_"):-len(".pth")])
    assert f"epoch/iter: {done + 1}/" in log, "resumed right after the last checkpoint"
    assert "epoch/iter: 0/" not in log, "did not start over"
    assert not (killed / ".run.lock").exists(), "the lock is released at the end"
    resumed = _final_metrics(killed)
    # within the noise of uninterrupted runs (the data order after --resume is drawn anew). Measured with
    # this exact setting, uninterrupted, SEED 0-3: Rank-1 18.6 / 15.9 / 13.3 / 13.3, mAP 13.1 / 10.6 / 11.3 /
    # 10.8 (ranges 5.3 and 2.5 points; chance on this test set is ~3 / ~4). Allowed: that band widened by its
    # range on each side (the test used to train its own uninterrupted reference run: 35 s more per suite)
    print("interrupted-run metrics: resumed", resumed)
    assert 13.3 - 5.3 <= resumed["Rank-1"] <= 18.6 + 5.3 and 10.6 - 2.5 <= resumed["mAP"] <= 13.1 + 2.5, resumed


def test_second_run_in_the_same_output_dir_is_refused(synthetic_root, tmp_path):
    from fastreid_ext.engine.run_lock import LOCK_NAME

    out = tmp_path / "out"
    first = subprocess.Popen(TRAIN_NET + _opts(synthetic_root, out, 50), cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not (out / LOCK_NAME).exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.2)
        # paused, not ended: a live run that holds the lock, without taking the cores from the refused
        # runs and from the other tests (it used to train on for the whole test, ~15 CPU-seconds)
        os.kill(first.pid, signal.SIGSTOP)
        r = _run(_opts(synthetic_root, out, 50), tmp_path)
        assert r.returncode == 2, r.stderr[-3000:]
        err = r.stderr.strip().splitlines()[-1]
        assert err.startswith("error:") and "in use by another training run" in err and str(first.pid) in err
        assert "Traceback" not in r.stderr
        r = _run(["--resume"] + _opts(synthetic_root, out, 50), tmp_path)  # a live run: --resume too
        assert r.returncode == 2 and "in use by another training run" in r.stderr
        assert first.poll() is None, "the refused runs did not disturb the first one"
    finally:
        first.kill()
        first.wait()


def test_lock_unit_behaviour(tmp_path):
    from fastreid_ext.engine.run_lock import LOCK_NAME, OutputDirBusy, OutputDirLock

    out = tmp_path / "o"
    lock = OutputDirLock(str(out)).acquire()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert OutputDirLock(str(out)).acquire().held  # the same process may take it again
    # a live owner (another pid on this host) -> refused
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        data = json.loads((out / LOCK_NAME).read_text())
        (out / LOCK_NAME).write_text(json.dumps(dict(data, pid=sleeper.pid)))
        with pytest.raises(OutputDirBusy, match=f"pid {sleeper.pid}"):
            OutputDirLock(str(out)).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # the owner is dead -> taken over
    assert OutputDirLock(str(out)).acquire().held
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (out / LOCK_NAME).exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_dir_fails_at_start(tmp_path):
    from fastreid_ext.engine.run_lock import OutputDirNotWritable, check_writable

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(OutputDirNotWritable, match=str(ro)):
            check_writable(str(ro / "run"))
    finally:
        ro.chmod(0o700)


def test_output_dir_that_is_a_file_fails_at_start_with_one_line(synthetic_root, tmp_path):
    """Root can write anywhere: a path under a regular file is the portable unwritable OUTPUT_DIR."""
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    r = _run(_opts(synthetic_root, blocker / "run", 1), tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and "not writable" in last and str(blocker / "run") in last
    assert "Traceback" not in r.stderr


def test_full_disk_at_a_checkpoint_fails_with_a_message_and_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    import torch

    from fastreid_ext.engine import checkpoint as ck

    model = torch.nn.Linear(3, 2)
    saver = ck.SafeCheckpointer(model, save_dir=str(tmp_path))
    saver.save("model_0000")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000.pth"

    def full_disk(obj, f, *a, **k):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck.torch, "save", full_disk)
    with pytest.raises(ck.CheckpointWriteError, match="model_0001.pth: No space left on device.*model_0000.pth"):
        saver.save("model_0001")
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000.pth"  # never half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000.pth"]  # no .tmp left
    monkeypatch.undo()
    assert saver.load(str(tmp_path / "model_0000.pth")) is not None  # the previous one still loads

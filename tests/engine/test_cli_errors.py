"""tools/train_net.py: user errors are one ``error:`` line and exit status 2; --debug shows the traceback
(issue 13, item 2). Few subprocesses (each pays ~10 s of imports); the rule itself is tested in-process."""

import subprocess
import sys

import pytest

from conftest import REPO

CONFIG = str(REPO / "configs/Synthetic/bagtricks_R18.yml")
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]",
        "DATALOADER.NUM_WORKERS", "0"]


def train_net(args, cwd, env=None):
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "FASTREID_EXT_DEBUG"}
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(REPO / "tools/train_net.py"), "--config-file", CONFIG] + args,
                          capture_output=True, text=True, cwd=cwd, env=full_env, timeout=300)


def error_lines(r):
    return [line for line in r.stderr.splitlines() if line.startswith("error:")]


def assert_user_error(r, *words):
    """Exit status 2, exactly one ``error:`` line naming ``words``, no traceback anywhere."""
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = error_lines(r)
    assert len(lines) == 1, r.stderr[-3000:]
    for w in words:
        assert w in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    return lines[0]


def test_unknown_config_key_is_one_error_line_and_debug_shows_the_traceback(tmp_path):
    opts = TINY + ["OUTPUT_DIR", str(tmp_path), "MODEL.BACKBONE.DEPHT", "18x"]
    line = assert_user_error(train_net(opts, tmp_path), "MODEL.BACKBONE.DEPHT", "MODEL.BACKBONE.DEPTH")
    assert not line.startswith("error: \"") and "'command line" not in line  # KeyError's quotes removed
    r = train_net(["--debug"] + opts, tmp_path)
    assert r.returncode not in (0, 2) and "Traceback" in r.stderr and "KeyError" in r.stderr, r.stderr[-3000:]


def test_eval_only_missing_weights_file_names_it(tmp_path):
    missing = tmp_path / "no_such_model.pth"
    assert_user_error(train_net(["--eval-only"] + TINY + ["OUTPUT_DIR", str(tmp_path), "MODEL.WEIGHTS", str(missing)],
                                tmp_path), str(missing), "not found")


def test_eval_only_mismatched_checkpoint_lists_misshaped_parameters(tmp_path):
    """A ResNet-18 checkpoint evaluated with a ResNet-50 config: an error, not metrics of a random net."""
    import torch
    from fastreid.modeling import build_model

    from conftest import make_cfg
    from fastreid_ext.engine import SafeCheckpointer

    cfg = make_cfg("configs/Synthetic/bagtricks_R18.yml", TINY + ["MODEL.HEADS.NUM_CLASSES", "5"])
    torch.manual_seed(0)
    SafeCheckpointer(build_model(cfg), str(tmp_path)).save("r18")
    r50 = ["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048"]
    r = train_net(["--eval-only"] + TINY + r50 + ["OUTPUT_DIR", str(tmp_path / "eval"),
                                                  "MODEL.WEIGHTS", str(tmp_path / "r18.pth")], tmp_path)
    line = assert_user_error(r, str(tmp_path / "r18.pth"), "with another shape",
                             "backbone.layer1.0.conv1.weight: checkpoint (64, 64, 3, 3), model (64, 64, 1, 1)")
    assert "Rank-1" not in r.stdout + r.stderr, "nothing was evaluated"
    assert "missing from the checkpoint" in line


# --------------------------------------------------------------------------- the rule, in-process
def test_rule_user_errors_versus_bugs(capsys, monkeypatch):
    from fastreid_ext.errors import UserError, run_cli, user_input

    monkeypatch.delenv("FASTREID_EXT_DEBUG", raising=False)

    def raises(exc, phase=None):
        def fn():
            if phase is None:
                raise exc
            with user_input(phase):
                raise exc
        return fn

    assert run_cli(raises(KeyError("unknown dataset 'X' in DATASETS"), "building the datasets")) == 2
    assert capsys.readouterr().err == "error: unknown dataset 'X' in DATASETS\n"
    assert run_cli(raises(UserError("bad weights:\n  a\n  b"))) == 2  # anywhere, on one line
    assert capsys.readouterr().err == "error: bad weights: a b\n"
    assert run_cli(raises(KeyError("19x"), "building the model")) == 2  # a bare name says where it came from
    assert capsys.readouterr().err == "error: building the model: KeyError '19x'\n"
    assert run_cli(raises(FileNotFoundError(2, "No such file or directory", "/x/y.json"), "building the datasets")) == 2
    assert "/x/y.json" in capsys.readouterr().err
    with pytest.raises(ValueError):  # the same type outside the input phases is a bug
        run_cli(raises(ValueError("shape mismatch in the loss")))
    with pytest.raises(RuntimeError):  # other types are bugs even inside a phase
        run_cli(raises(RuntimeError("CUDA error"), "building the model"))
    with pytest.raises(KeyError):  # --debug: the user error raises with its traceback
        run_cli(raises(KeyError("k"), "reading the config"), debug=True)
    monkeypatch.setenv("FASTREID_EXT_DEBUG", "1")
    with pytest.raises(UserError):
        run_cli(raises(UserError("u")))
    assert run_cli(lambda: None) == 0

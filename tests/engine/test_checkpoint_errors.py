"""Weights that do not fit, and files that are not checkpoints (issue 13, item 1), in-process.

--eval-only / tools load with ``load_inference_weights`` (a misfit is an error unless only parameters
that inference does not use differ), --resume is strict, fine-tuning from MODEL.WEIGHTS stays lenient
with one summary line, and every unusable file is an error that names it.
"""

import logging
import pickle
import re

import numpy as np
import pytest
import torch

from conftest import REPO, make_cfg

#: tiny CPU models: small input, no data needed (MODEL.ATTRIBUTES.FIELDS given for the attribute models)
TINY = ["MODEL.DEVICE", "cpu", "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]"]
FIELDS = ["MODEL.ATTRIBUTES.FIELDS", str(["age", "backpack", "gender", "upblack", "upwhite"])]
MODELS = {  # name: (config, opts)
    "bagtricks": ("configs/Synthetic/bagtricks_R18.yml", TINY),
    "hacnn": ("configs/Synthetic/hacnn.yml", ["MODEL.DEVICE", "cpu"]),  # HA-CNN's own fixed 160x64
    "apr": ("configs/Synthetic/apr_R18.yml", TINY + FIELDS),
    "aanet": ("configs/Synthetic/aanet_R18.yml", ["MODEL.DEVICE", "cpu"] + FIELDS),  # 96x32
}


def build(name="bagtricks", opts=(), num_classes=0, seed=0):
    """(frozen cfg, model in eval mode) of one of MODELS with extra KEY VALUE ``opts``."""
    from fastreid.modeling import build_model

    config, base = MODELS[name]
    cfg = make_cfg(config, list(base) + ["MODEL.HEADS.NUM_CLASSES", str(num_classes)] + list(opts))
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.freeze()
    torch.manual_seed(seed)
    return cfg, build_model(cfg).eval()


def save(model, folder, name="model_final"):
    """Checkpoint as the trainer writes it ({'model': ..., 'epoch': ...}); returns its path as str."""
    from fastreid_ext.engine import SafeCheckpointer

    folder.mkdir(parents=True, exist_ok=True)
    SafeCheckpointer(model, str(folder)).save(name, epoch=3)
    return str(folder / f"{name}.pth")


def images(cfg, seed=1):
    h, w = cfg.INPUT.SIZE_TEST
    return {"images": torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(seed)) * 255}


@pytest.fixture
def fastreid_logs(caplog, monkeypatch):
    """caplog that also sees FastReID's loggers (its setup_logger turns their propagation off)."""
    monkeypatch.setattr(logging.getLogger("fastreid"), "propagate", True)
    caplog.set_level(logging.INFO)
    return caplog


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# --------------------------------------------------------------------------- misfits: error
def test_resnet18_weights_into_resnet34_is_an_error_listing_missing_parameters(tmp_path):
    from fastreid_ext.engine.checkpoint import CheckpointMismatchError, load_inference_weights
    from fastreid_ext.errors import UserError

    _, r18 = build(opts=["MODEL.BACKBONE.DEPTH", "18x"])
    path = save(r18, tmp_path)
    cfg, r34 = build(opts=["MODEL.BACKBONE.DEPTH", "34x"])
    before = {k: v.clone() for k, v in r34.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as e:
        load_inference_weights(r34, cfg, path)
    msg = str(e.value)
    assert isinstance(e.value, UserError) and isinstance(e.value, ValueError)
    assert path in msg and "\n" not in msg
    assert "missing from the checkpoint" in msg
    assert "backbone.layer1.2.conv1.weight (64, 64, 3, 3)" in msg  # names and shapes
    assert re.search(r"\.\.\. and \d+ more", msg), msg  # long lists are capped
    assert len(msg) < 1500, msg
    assert all(torch.equal(before[k], v) for k, v in r34.state_dict().items()), "nothing was loaded"


def test_resnet34_weights_into_resnet18_lists_unexpected_and_resnet50_lists_shapes(tmp_path):
    from fastreid_ext.engine.checkpoint import CheckpointMismatchError, load_inference_weights

    _, r34 = build(opts=["MODEL.BACKBONE.DEPTH", "34x"])
    cfg, r18 = build(opts=["MODEL.BACKBONE.DEPTH", "18x"])
    with pytest.raises(CheckpointMismatchError,
                       match=r"unexpected .*backbone\.layer1\.2\.conv1\.weight \(64, 64, 3, 3\)"):
        load_inference_weights(r18, cfg, save(r34, tmp_path / "r34"))
    cfg50, r50 = build(opts=["MODEL.BACKBONE.DEPTH", "50x", "MODEL.BACKBONE.FEAT_DIM", "2048"])
    with pytest.raises(CheckpointMismatchError) as e:
        load_inference_weights(r50, cfg50, save(r18, tmp_path / "r18"))
    assert "backbone.layer1.0.conv1.weight: checkpoint (64, 64, 3, 3), model (64, 64, 1, 1)" in str(e.value)


def test_tools_load_model_checks_the_weights(tmp_path):
    from fastreid_ext.engine import load_model
    from fastreid_ext.engine.checkpoint import CheckpointMismatchError

    _, r18 = build()
    path = save(r18, tmp_path)
    with pytest.raises(CheckpointMismatchError, match="missing from the checkpoint"):
        load_model(str(REPO / MODELS["bagtricks"][0]), TINY + ["MODEL.BACKBONE.DEPTH", "34x", "MODEL.WEIGHTS", path])
    cfg, model = load_model(str(REPO / MODELS["bagtricks"][0]), TINY + ["MODEL.WEIGHTS", path])
    assert torch.equal(model.backbone.conv1.weight, r18.backbone.conv1.weight)


def test_resume_is_strict_and_does_not_fall_back_past_a_misfit(tmp_path):
    """--resume of another model's run folder is an error (not 'unreadable, trying the previous one'),
    and on resume even the identity classifier must fit (same run = same shapes)."""
    from fastreid_ext.engine import SafeCheckpointer
    from fastreid_ext.engine.checkpoint import CheckpointMismatchError

    _, r18 = build(num_classes=5)
    save(r18, tmp_path, "model_0000")
    save(r18, tmp_path, "model_final")
    _, r34 = build(opts=["MODEL.BACKBONE.DEPTH", "34x"], num_classes=5)
    with pytest.raises(CheckpointMismatchError, match=r"model_final\.pth.*missing") as e:
        SafeCheckpointer(r34, str(tmp_path)).resume_or_load("", resume=True)
    assert "--resume" in str(e.value)
    _, other_classes = build(num_classes=7)
    with pytest.raises(CheckpointMismatchError, match=r"heads\.weight: checkpoint \(5, 512\), model \(7, 512\)"):
        SafeCheckpointer(other_classes, str(tmp_path)).resume_or_load("", resume=True)
    _, same = build(num_classes=5, seed=1)
    assert SafeCheckpointer(same, str(tmp_path)).resume_or_load("", resume=True)["epoch"] == 3
    assert torch.equal(same.heads.weight, r18.heads.weight)


# --------------------------------------------------------------------------- classifiers: one-line note
@pytest.mark.parametrize("name", sorted(MODELS))
def test_identity_classifier_difference_loads_with_one_line_note(name, tmp_path, fastreid_logs):
    """A trained model's checkpoint (with identity classifiers, AANet's uncertainty weights) into the
    eval model of the same config without classes (what --eval-only builds): loads, says so in one
    line, and gives exactly the trained model's features."""
    from fastreid_ext.engine.checkpoint import load_inference_weights

    _, trained = build(name, num_classes=5, seed=0)
    path = save(trained, tmp_path)
    # AANet: also a training-only setting off at eval (its log-variances become unexpected keys)
    off = ["MODEL.AANET.UNCERTAINTY", "False"] if name == "aanet" else []
    cfg, model = build(name, num_classes=0, seed=1, opts=off)
    fastreid_logs.clear()
    load_inference_weights(model, cfg, path)
    notes = [m for m in _warnings(fastreid_logs) if "inference does not use" in m]
    assert len(notes) == 1 and "\n" not in notes[0], _warnings(fastreid_logs)
    expected = {"bagtricks": ["heads.weight"], "apr": ["heads.weight"],  # names grouped per module
                "hacnn": ["classifier_global.{weight, bias}", "classifier_local.{weight, bias}"],
                "aanet": ["heads.gfn.classifier.{weight, bias}", "heads.pfn.classifiers.*.{weight, bias}",
                          "heads.uncertainty.log_vars"]}
    for key in expected[name]:
        assert key in notes[0], notes[0]
    assert not [m for m in _warnings(fastreid_logs) if "Skip loading parameter" in m]
    with torch.no_grad():
        assert torch.allclose(model(images(cfg)), trained.eval()(images(cfg)), atol=1e-5)


def test_inference_usage_follows_the_data_not_the_calls():
    """Parameters computed with but not reaching the outputs (AANet's identity classifiers run in eval
    but their logits are dropped) are unused; AANet's attribute classifiers (attribute outputs and,
    through the predicted class, the attention map) are used."""
    from fastreid_ext.engine.checkpoint import inference_usage

    cfg, aanet = build("aanet", num_classes=5)
    unused = set(aanet.state_dict()) - inference_usage(aanet, cfg.INPUT.SIZE_TEST).used
    assert {"heads.gfn.classifier.weight", "heads.pfn.classifiers.5.bias", "heads.uncertainty.log_vars"} <= unused
    assert not {k for k in unused if k.startswith("heads.afn.classifiers") or k.startswith("backbone.conv1")}
    cfg, base = build("bagtricks", num_classes=5)
    unused = set(base.state_dict()) - inference_usage(base, cfg.INPUT.SIZE_TEST).used
    assert {k for k in unused if not k.endswith("num_batches_tracked")} == {"heads.weight"}


# --------------------------------------------------------------------------- fine-tuning: lenient, one line
def test_finetune_keeps_lenient_loading_with_one_summary_line(tmp_path, fastreid_logs):
    from fastreid_ext.engine import SafeCheckpointer

    _, r34 = build(opts=["MODEL.BACKBONE.DEPTH", "34x"], num_classes=5)
    path = save(r34, tmp_path)
    _, model = build(num_classes=7)
    fastreid_logs.clear()
    SafeCheckpointer(model, str(tmp_path / "new_run")).resume_or_load(path, resume=True)  # no run yet: fine-tune
    lines = _warnings(fastreid_logs)
    assert len(lines) == 1, lines
    line = lines[0]
    assert path in line and "\n" not in line
    assert re.search(r"0 missing", line) and re.search(r"\d+ unexpected", line) and "1 with another shape" in line
    assert "heads.weight" in line and "backbone.layer1.2.conv1.weight" in line
    assert torch.equal(model.backbone.conv1.weight, r34.backbone.conv1.weight)  # the rest is loaded


# --------------------------------------------------------------------------- files that are not checkpoints
def _bad_file(kind, folder, good):
    path = folder / "weights.pth"  # a neutral name: the message must say what is wrong, not echo the name
    if kind == "missing":
        return path, "not found"
    if kind == "directory":
        path.mkdir()
        return path, "directory"
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty"
    if kind == "truncated":
        data = open(good, "rb").read()
        path.write_bytes(data[: len(data) // 2])
        return path, "truncated"
    if kind == "text":
        path.write_text("MODEL:\n  WEIGHTS: nothing\n")
        return path, "text file"
    if kind == "saved_list":
        torch.save([1, 2, 3], path)
        return path, "a list of 3 items"
    if kind == "plain_pickle":
        with open(path, "wb") as f:
            pickle.dump({"model": [1, 2, 3]}, f)
        return path, "plain pickle"
    if kind == "tensor":
        torch.save(torch.zeros(3), path)
        return path, "Tensor"
    if kind == "no_model":
        torch.save({"epoch": 3, "optimizer": {}}, path)
        return path, "no 'model' entry"
    if kind == "bare_state_dict":
        torch.save(torch.load(good, weights_only=True)["model"], path)
        return path, "bare state_dict"
    raise AssertionError(kind)


BAD = ["missing", "directory", "empty", "truncated", "text", "saved_list", "plain_pickle", "tensor", "no_model",
       "bare_state_dict"]


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    cfg, model = build()
    return cfg, model, save(model, tmp_path_factory.mktemp("good"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # the plain pickle, read by torch.load
@pytest.mark.parametrize("route", ["eval", "finetune"])
@pytest.mark.parametrize("kind", BAD)
def test_unusable_weights_file_is_an_error_naming_it(kind, route, small_model, tmp_path):
    from fastreid_ext.engine import SafeCheckpointer
    from fastreid_ext.engine.checkpoint import CheckpointFileError, load_inference_weights

    cfg, model, good = small_model
    path, what = _bad_file(kind, tmp_path, good)
    with pytest.raises(CheckpointFileError) as e:
        if route == "eval":
            load_inference_weights(model, cfg, str(path))
        else:
            SafeCheckpointer(model).resume_or_load(str(path), resume=False)
    msg = str(e.value)
    assert str(path) in msg and what in msg and "\n" not in msg, msg


def test_legacy_checkpoint_with_numpy_objects_still_loads(small_model, tmp_path, fastreid_logs):
    """compat P8: weights_only refuses numpy objects; the fallback loads them fully."""
    from fastreid_ext.engine.checkpoint import load_inference_weights

    cfg, model, good = small_model
    ck = torch.load(good, weights_only=True)
    ck["metric"] = np.float64(0.5)
    ck["model"] = {k: v.numpy() for k, v in ck["model"].items()}  # FastReID accepts ndarray weights
    path = tmp_path / "legacy.pth"
    torch.save(ck, path)
    extra = load_inference_weights(model, cfg, str(path))
    assert extra["epoch"] == 3
    assert any("legacy format" in r.getMessage() for r in fastreid_logs.records)  # P8's fallback was taken

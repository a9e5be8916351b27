"""Project issue 14: ONNX / TorchScript export of every model, checked against PyTorch.

Every project meta-architecture (discovered from FastReID's registry, configs in conftest's
ARCH_CONFIGS) and FastReID's Baseline export to both formats, with and without dynamic batch, on
seeded random weights with non-trivial BN statistics; the exported file is then run independently of
the exporter's own check (onnxruntime / torch.jit directly, at a batch size the exporter never used)
and compared with the eager model. Then: float16, FastReID's evaluator on the exported file
(``--eval-only MODEL.WEIGHTS model.onnx``) against PyTorch, the CLI, and the messages for what cannot
be exported.
"""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from conftest import ARCH_CONFIGS, COMMON, REPO, make_cfg, perturb_bn_statistics, project_meta_archs

import fastreid_ext

fastreid_ext.register()

pytestmark = pytest.mark.usefixtures("one_thread")

#: FastReID's own BoT baseline beside the project's models
MODELS = {"Baseline": ("configs/Synthetic/bagtricks_R18.yml", ["INPUT.SIZE_TEST", "[64, 32]"]), **ARCH_CONFIGS}
ARCHS = ["Baseline"] + project_meta_archs()
#: the exporter's check images (dynamic: batch 1 and 6; static: batch 3); the independent check uses 5
N_CHECK, STATIC_BATCH, OTHER_BATCH = 6, 3, 5
#: files the parametrized export test wrote and checked: (model, format, dynamic) -> path (reused when
#: the same worker runs a later test that needs one)
_EXPORTS = {}


def _build(name, root):
    from fastreid.modeling import build_model

    from fastreid_ext.data.build import resolve_attribute_fields

    config, opts = MODELS[name]
    cfg = resolve_attribute_fields(make_cfg(config, COMMON + ["DATASETS.ROOT", str(root)] + list(opts)))
    torch.manual_seed(0)
    model = build_model(cfg)
    perturb_bn_statistics(model)
    return cfg, model.eval()


@pytest.fixture(scope="module")
def test_images(synthetic_root):
    """Real (synthetic) test images at each input size in use, as the loader gives them (float 0-255)."""
    from fastreid_ext.data import build_test_loader

    cache = {}

    def get(cfg, n):
        key = tuple(cfg.INPUT.SIZE_TEST)
        if key not in cache:
            loader, _ = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
            cache[key] = next(iter(loader))["images"][:16].float()
        return cache[key][:n]

    return get


@pytest.fixture(scope="module", params=ARCHS)
def arch(request, synthetic_root):
    cfg, model = _build(request.param, synthetic_root)
    return request.param, cfg, model


def _export_tool():
    """tools/export.py as a module (its functions in-process, without a new interpreter)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("export_tool", REPO / "tools/export.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _run_independently(path, images):
    """The exported file's first output on ``images``, without the project's runtime wrapper."""
    if path.endswith(".onnx"):
        import onnxruntime as ort

        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return sess.run(None, {"images": images.numpy()})[0]
    module = torch.jit.load(path)
    with torch.no_grad():
        out = module(images)
    return (out[0] if isinstance(out, tuple) else out).numpy()


#: models whose ONNX export is also tested with a fixed batch. A model that exports with a dynamic batch
#: exports with a fixed one too (fixing a symbolic size only adds a constraint its graph already meets):
#: the dynamic export, tested for every model, is the model-dependent one; the fixed-batch code path
#: (dim_value, metadata) is model-independent and tested on the Baseline; the runtime's cutting and
#: padding of batches for a fixed-batch file is tested on its own below. Both TorchScript variants are
#: tested for every model (a trace costs ~1 s; an ONNX export of HA-CNN ~15 s, which the 15-minute
#: suite budget pays once per model, not twice).
STATIC_ONNX = ("Baseline",)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_every_model_exports_and_matches_pytorch(arch, fmt, dynamic, test_images, tmp_path):
    from fastreid_ext.export.exporter import TOLERANCES, export_model

    name, cfg, model = arch
    if fmt == "onnx" and not dynamic and name not in STATIC_ONNX:
        pytest.skip(f"fixed-batch ONNX is tested on {STATIC_ONNX}; {name}'s dynamic-batch ONNX export is tested")
    images = test_images(cfg, N_CHECK)
    report = export_model(cfg, model, fmt, str(tmp_path), images, dynamic_batch=dynamic, batch_size=STATIC_BATCH)
    assert report.passed and os.path.isfile(report.path) and not os.path.exists(report.path.replace("model.", "model.unverified."))
    assert sorted({c["batch"] for c in report.checks}) == ([1, N_CHECK] if dynamic else [STATIC_BATCH])
    with open(report.path + ".json") as f:
        assert json.load(f)["passed"] is True
    _EXPORTS[(name, fmt, dynamic)] = report.path

    # independent of the exporter's check: the raw runtime, another batch size, the eager model
    n = OTHER_BATCH if dynamic else STATIC_BATCH
    x = torch.cat([images, images.flip(0)])[:n]
    with torch.no_grad():
        expected = model({"images": x.clone()}).numpy()
    got = _run_independently(report.path, x)
    assert got.shape == expected.shape == (n, expected.shape[1])
    tol = TOLERANCES["float32"]
    assert np.abs(got - expected).max() <= tol.rel_max_abs * np.abs(expected).max(), name
    assert len(np.unique(got.round(4), axis=0)) == n  # one feature per image, not a constant graph

    if fmt == "onnx":
        import onnx

        proto = onnx.load(report.path)
        dim0 = proto.graph.input[0].type.tensor_type.shape.dim[0]
        assert (dim0.dim_param == "batch") if dynamic else (dim0.dim_value == STATIC_BATCH)
        assert proto.opset_import[0].version == report.opset
        meta = json.loads({p.key: p.value for p in proto.metadata_props}["fastreid_ext"])
        assert meta["input"]["size"] == list(cfg.INPUT.SIZE_TEST) and meta["meta_architecture"] == cfg.MODEL.META_ARCHITECTURE
        assert meta["outputs"][0]["name"] == "features"
        expect_attr = name in ("APR", "AANet")
        assert any(o["group"] == "attributes" for o in meta["outputs"]) == expect_attr


@pytest.mark.parametrize("name,fmt", [("Baseline", "onnx"), ("AANet", "torchscript")])
def test_half_export_matches_float32_pytorch(name, fmt, synthetic_root, test_images, tmp_path):
    """float16 inside, float32 in and out. AANet in TorchScript float16 gave NaN features (its attention
    map's 1e-12 floor rounds to 0 in float16) until the CAM was computed in float32."""
    from fastreid_ext.export.exporter import TOLERANCES, export_model
    from fastreid_ext.export.runtime import load_exported

    cfg, model = _build(name, synthetic_root)
    images = test_images(cfg, N_CHECK)
    report = export_model(cfg, model, fmt, str(tmp_path), images, dynamic_batch=True, half=True)
    assert report.passed and report.dtype == "float16"
    deployed = load_exported(report.path)
    got = deployed(images)
    with torch.no_grad():
        ref = model({"images": images.clone()})
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    cos = torch.nn.functional.cosine_similarity(got, ref, dim=1)
    assert cos.min() >= TOLERANCES["float16"].min_cosine
    assert (got - ref).abs().max() > 0  # really computed in float16, not a float32 graph
    if fmt == "onnx":
        import onnx

        proto = onnx.load(report.path)
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)


def test_onnx_evaluation_gives_the_pytorch_metrics(synthetic_root, test_images, tmp_path):
    """FastReID's evaluator on the deployed ONNX file through ONNX Runtime, attributes included (APR's
    attribute outputs feed the attribute evaluator)."""
    from fastreid_ext.export.exporter import export_model
    from fastreid_ext.export.runtime import load_exported

    cfg, model = _build("APR", synthetic_root)
    path = _EXPORTS.get(("APR", "onnx", True))
    if path is None:
        path = export_model(cfg, model, "onnx", str(tmp_path), test_images(cfg, N_CHECK), dynamic_batch=True).path
    deployed = load_exported(path, cfg)
    assert deployed.batch_size is None and "attributes" in deployed.groups
    # tools/export.py --check-metrics' comparison, i.e. ExtTrainer.test on both
    res = _export_tool().compare_metrics(cfg, model, deployed, "float32")
    assert {r["metric"] for r in res["rows"]} == {"Rank-1", "mAP", "mINP", "attr-mean", "mA"}
    for r in res["rows"]:
        assert r["exported"] == pytest.approx(r["pytorch"], abs=0.01), r
    assert res["passed"] and 0 < res["reference"]["mAP"] < 100

    class Shuffled(nn.Module):  # the deployed model with each feature given to the next image
        def inference(self, batch):
            out = deployed.inference(batch)
            return dict(out, features=out["features"].roll(1, dims=0))

        def forward(self, batch):
            return self.inference(batch)["features"]

    res = _export_tool().compare_metrics(cfg, model, Shuffled(), "float32", reference=res["reference"])
    assert not res["passed"]


def test_fixed_batch_file_gets_its_batches_cut_and_padded():
    """A file exported for batch 4 sees only batches of 4; the outputs of the padding are dropped and the
    order of the images is kept, whatever the loader's batch size."""
    from fastreid_ext.export.runtime import DeployedModel

    seen = []

    class Fixed4(DeployedModel):
        def _run_chunk(self, images):
            seen.append(len(images))
            assert len(images) == 4
            return [images.mean(dim=(1, 2, 3))[:, None], images[:, 0, 0, :2]]

    meta = {"dynamic_batch": False, "batch_size": 4, "input": {"size": [2, 3]},
            "outputs": [{"name": "features", "group": "features", "index": None},
                        {"name": "attributes_0", "group": "attributes", "index": 0}]}
    model = Fixed4("fixed4.onnx", meta)
    images = torch.arange(10 * 3 * 2 * 3, dtype=torch.float32).reshape(10, 3, 2, 3)
    out = model.inference({"images": images})
    assert seen == [4, 4, 4]
    torch.testing.assert_close(out["features"], images.mean(dim=(1, 2, 3))[:, None])
    torch.testing.assert_close(out["attributes"][0], images[:, 0, 0, :2])
    torch.testing.assert_close(model({"images": images[:3]}), images[:3].mean(dim=(1, 2, 3))[:, None])
    with pytest.raises(ValueError, match=r"fixed4.onnx was exported for 2x3 images, got 4x3"):
        model(torch.zeros(1, 3, 4, 3))


def test_exported_file_checks_the_config_it_is_evaluated_with(synthetic_root, test_images, tmp_path):
    from fastreid_ext.errors import UserError
    from fastreid_ext.export.exporter import export_model
    from fastreid_ext.export.runtime import load_exported

    cfg, model = _build("APR", synthetic_root)
    report = export_model(cfg, model, "torchscript", str(tmp_path), test_images(cfg, 2), dynamic_batch=True,
                          outputs=["features"])
    other = cfg.clone()
    other.defrost()
    other.INPUT.SIZE_TEST = [128, 64]
    with pytest.raises(UserError, match=r"model.torchscript takes 64x32 images but INPUT.SIZE_TEST is \[128, 64\]"):
        load_exported(report.path, other)
    with pytest.raises(UserError, match="has no attribute outputs .* TEST.ATTRIBUTES.ENABLED"):
        load_exported(report.path, cfg)
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(UserError, match="broken.onnx is not a readable ONNX file"):
        load_exported(str(bad))


# ---------------------------------------------------------------------------------------------------
# what cannot be exported: the message names it and says what to do
# ---------------------------------------------------------------------------------------------------
class _Plugin(nn.Module):
    """A plugin model (not registered, no export code): FastReID's inference contract only."""

    def __init__(self, kind):
        super().__init__()
        self.kind = kind
        self.register_buffer("pixel_mean", torch.tensor([120.0, 110.0, 100.0]).view(1, 3, 1, 1))
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.rank = _RankPool() if kind == "cummax" else nn.AdaptiveAvgPool2d(1)

    def forward(self, batched_inputs):
        x = self.body(batched_inputs["images"] - self.pixel_mean)
        if self.kind == "batch":
            return x.reshape(2, -1)  # fixes the batch size
        f = self.rank(x).flatten(1)
        if self.kind == "branch" and batched_inputs["images"].mean() > 128:  # Python control flow on tensor values
            f = -f
        return f


class _RankPool(nn.Module):
    def forward(self, x):
        return torch.cummax(x.flatten(2), dim=2)[0][..., -1]  # no ONNX translation


def _plugin_cfg(synthetic_root):
    return make_cfg("configs/Synthetic/bagtricks_R18.yml", COMMON + ["DATASETS.ROOT", str(synthetic_root),
                                                                     "INPUT.SIZE_TEST", "[16, 8]"])


def test_unsupported_operator_names_the_operator_and_the_module(synthetic_root, tmp_path):
    from fastreid_ext.export.exporter import ExportFailure, export_model

    images = torch.rand(4, 3, 16, 8) * 255
    with pytest.raises(ExportFailure, match=r"_Plugin: operator aten\.cummax\.default has no ONNX translation.*"
                                            r"called by rank \(_RankPool\).*--format torchscript") as e:
        export_model(_plugin_cfg(synthetic_root), _Plugin("cummax"), "onnx", str(tmp_path), images, dynamic_batch=True)
    assert "test_export.py" in str(e.value)  # the line of model code
    assert not any(p.suffix == ".onnx" for p in tmp_path.iterdir())
    # TorchScript has no such limit: same model, exported and checked
    report = export_model(_plugin_cfg(synthetic_root), _Plugin("cummax"), "torchscript", str(tmp_path), images,
                          dynamic_batch=True)
    assert report.passed


def test_batch_specialised_code_cannot_have_a_dynamic_batch(synthetic_root, tmp_path):
    from fastreid_ext.export.exporter import ExportFailure, export_model

    images = torch.rand(2, 3, 16, 8) * 255
    with pytest.raises(ExportFailure, match="fixes the batch size.*export without --dynamic-batch"):
        export_model(_plugin_cfg(synthetic_root), _Plugin("batch"), "onnx", str(tmp_path), images, dynamic_batch=True)
    report = export_model(_plugin_cfg(synthetic_root), _Plugin("batch"), "onnx", str(tmp_path), images, batch_size=2)
    assert report.passed and report.batch_size == 2


def test_value_dependent_branch_is_refused_by_onnx_and_caught_by_the_torchscript_check(synthetic_root, tmp_path):
    """ONNX (torch.export) refuses Python control flow on tensor values; TorchScript's tracer records the
    branch the example images took, and the parity check on images that take the other branch rejects it."""
    from fastreid_ext.export.exporter import ExportFailure, export_model

    torch.manual_seed(0)
    model = _Plugin("branch").eval()
    dark, bright = torch.rand(2, 3, 16, 8) * 100, 200 + torch.rand(2, 3, 16, 8) * 55
    images = torch.cat([dark, bright])  # batch 1 and the example (dark) take one branch, all four the other
    with pytest.raises(ExportFailure, match=r"control flow depends on tensor values at .*test_export.py:\d+"):
        export_model(_plugin_cfg(synthetic_root), model, "onnx", str(tmp_path), images, dynamic_batch=True)
    with pytest.raises(ExportFailure, match="disagrees with PyTorch on output features.*Kept for inspection"):
        export_model(_plugin_cfg(synthetic_root), model, "torchscript", str(tmp_path), images, dynamic_batch=True)
    assert (tmp_path / "model.unverified.torchscript").is_file() and not (tmp_path / "model.torchscript").exists()
    with open(tmp_path / "model.unverified.torchscript.json") as f:
        assert json.load(f)["passed"] is False


def test_old_opset_and_unknown_output_are_refused(synthetic_root, tmp_path):
    from fastreid_ext.export.exporter import ExportFailure, export_model

    cfg, model = _build("Baseline", synthetic_root)
    images = torch.rand(2, 3, 64, 32) * 255
    with pytest.raises(ExportFailure, match="--opset 16: .* writes opset 18 or newer.*GridSample"):
        export_model(cfg, model, "onnx", str(tmp_path), images, opset=16)
    with pytest.raises(ExportFailure, match=r"has no output \['attention'\]: its eval outputs are \['features'\]"):
        export_model(cfg, model, "onnx", str(tmp_path), images, outputs=["features", "attention"])


def test_cli_exports_checks_metrics_and_train_net_evaluates_the_file(synthetic_root, tmp_path):
    """tools/export.py end to end (checkpoint in, ONNX out, parity table), then tools/train_net.py
    --eval-only on the ONNX file (a new process, the stock command) gives the PyTorch model's Rank-1."""
    from fastreid.utils.checkpoint import Checkpointer

    cfg, model = _build("Baseline", synthetic_root)
    Checkpointer(model, save_dir=str(tmp_path)).save("weights")
    opts = COMMON + ["DATASETS.ROOT", str(synthetic_root), "INPUT.SIZE_TEST", "[64, 32]",
                     "MODEL.WEIGHTS", str(tmp_path / "weights.pth"), "OUTPUT_DIR", str(tmp_path / "logs")]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    # the export tool in-process (its main, as the script runs it; a new interpreter costs ~6 s)
    tool = _export_tool()
    args = tool.argument_parser().parse_args(["--config-file", "configs/Synthetic/bagtricks_R18.yml", "--format",
                                              "onnx", "--dynamic-batch", "--check-images", "4",
                                              "--output", str(tmp_path / "deploy")] + opts)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert tool._cli(args) == 0
    assert "parity against PyTorch on 4 images of SyntheticMarket" in out.getvalue()
    with open(tmp_path / "deploy/model.onnx.json") as f:
        assert json.load(f)["passed"]
    from fastreid_ext.engine import ExtTrainer

    rank1 = ExtTrainer.test(cfg, model)["Rank-1"]

    cmd = [sys.executable, str(REPO / "tools/train_net.py"), "--config-file", "configs/Synthetic/bagtricks_R18.yml",
           "--eval-only"] + opts[:-4] + ["MODEL.WEIGHTS", str(tmp_path / "deploy/model.onnx"),
                                         "OUTPUT_DIR", str(tmp_path / "eval")]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "through ONNX Runtime" in res.stdout + res.stderr
    row = next(ln for ln in (res.stdout + res.stderr).splitlines() if ln.startswith("| SyntheticMarket"))
    assert float(row.split("|")[2]) == pytest.approx(rank1, abs=0.01)

    # a user error of the tool: one line, status 2 (in-process: the same run_cli path as the script)
    from fastreid_ext.errors import run_cli

    args = tool.argument_parser().parse_args(["--config-file", "configs/Synthetic/bagtricks_R18.yml", "--opset", "13",
                                              "--output", str(tmp_path / "d2")] + opts)
    err = io.StringIO()
    assert run_cli(lambda: tool._cli(args), stream=err) == 2
    assert err.getvalue().startswith("error: --opset 13: the torch.export-based ONNX exporter writes opset 18")
    assert len(err.getvalue().strip().splitlines()) == 1 and not (tmp_path / "d2").exists()

"""One test per patch of fastreid_ext.compat (P1..P13), plus 'every fastreid submodule imports'."""

import importlib
import os
import pkgutil
import sys

import numpy as np
import pytest
import torch

import fastreid_ext
from fastreid_ext import compat

fastreid_ext.register()  # applies the patches (and registers our components)

# build/bench scripts shipped inside the wheel, not modules: importing them runs a build or a benchmark
SCRIPTS = {"fastreid.evaluation.rank_cylib.setup", "fastreid.evaluation.rank_cylib.test_cython"}


def test_every_fastreid_submodule_imports():
    import fastreid

    names = sorted(m.name for m in pkgutil.walk_packages(fastreid.__path__, "fastreid.")
                   if m.name not in SCRIPTS)
    failures = {}
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001
            failures[name] = repr(e)
    assert len(names) > 120  # the whole package was walked, not just its top level
    assert failures == {}


def test_p1_p2_import_shims():
    from torch._six import string_classes
    import collections

    assert str in string_classes
    assert collections.Mapping is collections.abc.Mapping


def test_p3_dataloader_without_cuda_streams():
    from fastreid.data.data_utils import DataLoaderX

    ds = [{"images": torch.full((3, 4, 2), float(i)), "targets": i} for i in range(6)]
    loader = DataLoaderX(0, device="cpu", dataset=ds, batch_size=4, collate_fn=compat.strict_batch_collator,
                         pin_memory=True)
    batches = list(loader)
    assert loader.stream is None
    assert [b["targets"].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]
    assert batches[0]["images"].device.type == "cpu"
    loader.shutdown()  # no background thread to stop: must not raise


def _tiny_baseline():
    from fastreid.modeling import build_model

    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    cfg.MODEL.BACKBONE.DEPTH = "18x"
    cfg.MODEL.BACKBONE.FEAT_DIM = 512
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = 3
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).eval()


def test_p4_preprocess_out_of_place_and_flip_test_normalises_once():
    from fastreid.evaluation.evaluator import inference_on_dataset

    model = _tiny_baseline()
    images = torch.rand(2, 3, 64, 32) * 255
    before = images.clone()
    with torch.no_grad():
        feat = model({"images": images})
        flipped = model({"images": images.flip(dims=[3])})
    assert torch.equal(images, before), "preprocess_image must not edit the batch in place"

    class Collect:
        def reset(self):
            self.out = []

        def process(self, inputs, outputs):
            self.out.append(outputs)

        def evaluate(self):
            return torch.cat(self.out)

    loader = [{"images": images.clone()}]
    loader_len = type("L", (list,), {"dataset": [0, 1]})(loader)
    got = inference_on_dataset(model, loader_len, Collect(), flip_test=True)
    assert torch.allclose(got, (feat + flipped) / 2, atol=1e-5)


def test_p4_flip_test_averages_dict_outputs():
    class M(torch.nn.Module):
        def forward(self, inputs):
            x = inputs["images"]
            return {"features": x[:, 0, 0, :], "attributes": [x[:, 0, 0, :1]], "attention": x[:, 0]}

    x = torch.arange(6.).view(1, 1, 2, 3)
    out = compat.FlipAverage(M())({"images": x})
    assert torch.allclose(out["features"], torch.tensor([[1., 1., 1.]]))
    assert torch.allclose(out["attention"], x[:, 0]), "a spatial map is mirrored back before averaging"
    assert torch.allclose(out["attributes"][0], torch.tensor([[1.]]))
    assert torch.equal(x, torch.arange(6.).view(1, 1, 2, 3))


def test_p5_stock_process_is_fastreids_and_the_project_evaluator_takes_inference_dicts():
    """Every model returns the feature tensor in eval mode (issue 15), so FastReID's own
    ReidEvaluator.process is no longer patched; the project's evaluator unwraps the dicts of its
    output mode (``model.inference``)."""
    from fastreid.evaluation import ReidEvaluator
    from fastreid.evaluation.reid_evaluation import ReidEvaluator as Stock

    from fastreid_ext.evaluation.reid_evaluation import ExtReidEvaluator

    assert not hasattr(ReidEvaluator.process, "_orig") and ReidEvaluator.process is Stock.process
    ev = ExtReidEvaluator(cfg=None, num_query=1)
    ev.process({"targets": torch.tensor([1]), "camids": torch.tensor([0])},
               {"features": torch.ones(1, 4), "attributes": [torch.ones(1, 2)]})
    ev.process({"targets": torch.tensor([1]), "camids": torch.tensor([1])}, torch.zeros(1, 4))
    assert [p["feats"].shape for p in ev._predictions] == [(1, 4), (1, 4)]


def test_p5_evaluator_never_compiles_or_exits(monkeypatch):
    from fastreid.evaluation import ReidEvaluator
    import fastreid.evaluation.reid_evaluation as re_mod

    called = []
    monkeypatch.setattr(re_mod, "compile_helper", lambda: called.append(1))
    ReidEvaluator(cfg=None, num_query=1)
    assert called == []


def _random_case(rng, nq=7, ng=9):
    q_pids = rng.integers(0, 4, nq)
    g_pids = np.concatenate([q_pids[:4], rng.integers(0, 6, ng - 4)])
    return (rng.random((nq, ng)).astype(np.float32), q_pids, g_pids,
            rng.integers(0, 3, nq), rng.integers(0, 3, ng))


def test_p6_python_ranker_on_tiny_gallery_matches_bruteforce():
    rng = np.random.default_rng(0)
    dist, qp, gp, qc, gc = _random_case(rng)
    cmc, aps, inps = compat.eval_market1501_py(dist, qp, gp, qc, gc, max_rank=50)
    assert cmc.shape == (50,)
    # brute force: per valid query, first correct rank and AP by definition
    firsts, ref_ap = [], []
    for i in range(len(qp)):
        order = np.argsort(dist[i], kind="stable")
        keep = ~((gp[order] == qp[i]) & (gc[order] == qc[i]))
        m = gp[order][keep] == qp[i]
        if not m.any():
            continue
        firsts.append(np.argmax(m))
        hits = np.flatnonzero(m)
        ref_ap.append(np.mean([(k + 1) / (h + 1) for k, h in enumerate(hits)]))
    assert cmc[0] == pytest.approx(np.mean(np.array(firsts) == 0))
    assert cmc[-1] == pytest.approx(1.0)
    assert np.allclose(aps, ref_ap)
    assert len(inps) == len(ref_ap)


@pytest.fixture(scope="module")
def cython_ranker(tmp_path_factory):
    """FastReID's compiled ranker (``rank_cy.evaluate_cy``): the importable one (FastReID's package
    or the cache of :func:`compat.build_cython_ranker`), else compiled now with
    ``compat.build_cython_ranker`` into a temporary folder. Skips only where compiling is
    impossible (no Cython, no C compiler, or the build fails), saying why."""
    cy = compat._import_cython_ranker()
    if cy is not None:
        return cy
    import importlib.util
    import shutil
    import subprocess

    try:
        import Cython  # noqa: F401
    except ImportError:
        pytest.skip("Cython is not installed: FastReID's ranker cannot be compiled")
    if not any(shutil.which(c) for c in (os.environ.get("CC", "cc"), "gcc", "clang")):
        pytest.skip("no C compiler found: FastReID's ranker cannot be compiled")
    dest = tmp_path_factory.mktemp("rank_cy")
    try:
        compat.build_cython_ranker(dest)
    except subprocess.CalledProcessError as e:
        pytest.skip(f"compiling FastReID's ranker failed: {(e.stderr or b'').decode(errors='replace')[-500:]}")
    built = sorted(dest.glob("rank_cy*.so")) + sorted(dest.glob("rank_cy*.pyd"))
    assert built, f"build_cython_ranker produced no extension module in {dest}"
    spec = importlib.util.spec_from_file_location("rank_cy", built[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.evaluate_cy


@pytest.mark.parametrize("ng", [9, 80])
def test_p6_evaluate_rank_cython_and_python_agree(ng, cython_ranker, monkeypatch):
    """compat.evaluate_rank with the compiled ranker and with the Python one give the same numbers,
    and BOTH really ran: two different callables (the compiled one is not a Python function), each
    called (spied) where compat is meant to choose it."""
    import inspect

    rng = np.random.default_rng(1)
    dist, qp, gp, qc, gc = _random_case(rng, ng=ng)
    python_ranker = compat.eval_market1501_py
    assert cython_ranker is not python_ranker
    assert inspect.isfunction(python_ranker) and not inspect.isfunction(cython_ranker), "not compiled"
    calls = []

    def cython_spy(*args):
        calls.append("cython")
        return cython_ranker(*args)

    def python_spy(*args, **kwargs):
        calls.append("python")
        return python_ranker(*args, **kwargs)

    monkeypatch.setattr(compat, "_import_cython_ranker", lambda: cython_spy)
    monkeypatch.setattr(compat, "eval_market1501_py", python_spy)
    ids = [np.ascontiguousarray(a, dtype=np.int64) for a in (qp, gp, qc, gc)]
    max_rank = min(50, compat._min_kept(*ids))  # compat gives the compiled ranker this query set
    py = compat.evaluate_rank(dist, qp, gp, qc, gc, max_rank=max_rank, use_cython=False)
    assert calls == ["python"]
    cy = compat.evaluate_rank(dist, qp, gp, qc, gc, max_rank=max_rank, use_cython=True)
    assert calls == ["python", "cython"]
    assert cy[0].shape == py[0].shape == (max_rank,)
    for a, b in zip(py, cy):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    # the default max_rank (50): the compiled ranker only where every query keeps >= 50 images
    py = compat.evaluate_rank(dist, qp, gp, qc, gc, use_cython=False)
    auto = compat.evaluate_rank(dist, qp, gp, qc, gc, use_cython=True)
    assert calls[2:] == ["python", "cython" if max_rank == 50 else "python"]
    for a, b in zip(py, auto):
        assert np.allclose(a, b)
    assert auto[0].shape == (50,)
    assert np.all(np.diff(auto[0]) >= 0), "CMC must be non-decreasing"


def test_p6_fastreid_cython_ranker_is_wrong_on_tiny_galleries(cython_ranker):
    """Documents why compat bypasses the Cython ranker there (built if needed, see cython_ranker)."""
    cy = cython_ranker
    dist, qp, gp, qc, gc = _random_case(np.random.default_rng(1))
    args = [np.ascontiguousarray(a, dtype=np.int64) for a in (qp, gp, qc, gc)]
    cmc, _, _ = cy(dist, *args, 50, False)
    assert np.any(np.diff(cmc) < 0)


def test_p6_reid_evaluator_on_tiny_set_reports_rank10():
    from fastreid.evaluation import ReidEvaluator

    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    feats = torch.eye(6)
    ev = ReidEvaluator(cfg, num_query=2)
    ev.process({"targets": torch.tensor([0, 1, 0, 1, 2, 3]), "camids": torch.tensor([0, 0, 1, 1, 1, 1])},
               feats + 0.01 * torch.arange(36.).view(6, 6))
    res = ev.evaluate()
    assert set(["Rank-1", "Rank-5", "Rank-10", "mAP", "mINP"]) <= set(res)
    assert res["Rank-10"] == pytest.approx(100.0)


def test_p7_amp_on_cpu_falls_back_to_fp32():
    from fastreid.engine.train_loop import AMPTrainer
    from fastreid.utils.events import EventStorage

    model = torch.nn.Linear(2, 1)

    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = model

        def forward(self, x):
            return {"loss": self.lin(x).pow(2).mean()}

    data = [torch.ones(4, 2)] * 3
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tr = AMPTrainer(M(), data, opt, None)
    w0 = model.weight.detach().clone()
    with EventStorage(0) as tr.storage:
        tr.iter = 0
        tr.run_step()
    assert not torch.equal(w0, model.weight)


def test_p8_checkpoint_with_numpy_objects_loads(tmp_path):
    from fastreid.utils.checkpoint import Checkpointer

    model = torch.nn.Linear(2, 2)
    path = tmp_path / "legacy.pth"
    torch.save({"model": model.state_dict(), "epoch": np.int64(3), "extra": np.arange(3)}, path)
    fresh = torch.nn.Linear(2, 2)
    ck = Checkpointer(fresh).load(str(path))
    assert torch.equal(fresh.weight, model.weight)
    assert int(ck["epoch"]) == 3


def test_p9_random_affine_accepts_fastreid_kwargs():
    from fastreid.data.transforms import build_transforms
    from PIL import Image

    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    cfg.INPUT.AFFINE.ENABLED = True
    cfg.INPUT.SIZE_TRAIN = [32, 16]
    out = build_transforms(cfg, is_train=True)(Image.new("RGB", (16, 32), (120, 30, 200)))
    assert out.shape == (3, 32, 16)


def test_p10_eval_period_zero_evaluates_at_end_only():
    from fastreid.engine.hooks import EvalHook

    calls = []
    hook = EvalHook(0, lambda: calls.append(1) or {})
    hook.trainer = type("T", (), {"epoch": 4, "max_epoch": 5})()
    hook._do_eval = lambda: calls.append("eval")
    hook.after_epoch()
    hook.after_train()
    assert calls == ["eval"]


def test_p11_iters_per_epoch_at_least_one():
    from fastreid.engine.defaults import DefaultTrainer

    t = DefaultTrainer.__new__(DefaultTrainer)
    t.iters_per_epoch = 32 // 64
    assert t.iters_per_epoch == 1
    t.iters_per_epoch = 7
    assert t.iters_per_epoch == 7


def test_p12_jaccard_distance_on_cpu():
    from fastreid.utils.compute_dist import build_dist

    torch.manual_seed(0)
    centers = torch.randn(3, 8) * 5
    feats = torch.cat([centers[i] + 0.1 * torch.randn(4, 8) for i in range(3)])
    d = build_dist(feats[:3], feats[3:], metric="jaccard", k1=4, k2=2)
    assert d.shape == (3, 9)
    assert np.all(d >= 0) and np.all(d <= 1)
    # same-cluster pairs are closer than cross-cluster pairs (query 0 is in cluster 0 = gallery 0)
    assert d[0, 0] < d[0, 5]


def test_p13_collator_converts_arrays_and_refuses_silent_drops():
    batch = [{"a": np.ones(3), "t": torch.zeros(2), "n": 1, "s": "x"} for _ in range(2)]
    out = compat.strict_batch_collator(batch)
    assert out["a"].shape == (2, 3) and out["t"].shape == (2, 2) and out["s"] == ["x", "x"]
    with pytest.raises(TypeError, match="'bad'"):
        compat.strict_batch_collator([{"bad": None}, {"bad": None}])
    import fastreid.data.build as fbuild

    assert fbuild.fast_batch_collator is compat.strict_batch_collator


def test_p14_fastreid_optimizer_actually_updates_parameters():
    from fastreid.engine.defaults import DefaultTrainer

    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    g = torch.Generator().manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    target = torch.randn(8, 3, generator=g)
    for opt_name in ("Adam", "SGD"):
        cfg.SOLVER.OPT = opt_name
        optimizer, params = DefaultTrainer.build_optimizer(cfg, model)  # contiguous params
        w0 = model[0].weight.detach().clone()
        for _ in range(3):  # the loop SimpleTrainer.run_step runs
            # a regression target: mean(BN(x W)^2) alone is ~constant in W (BN normalises it away), so its
            # gradient was ~0 and SGD's update fell under allclose's tolerance on some random draws
            loss = (model(torch.randn(8, 4, generator=g)) - target).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            params.assert_buffer_is_valid()
        assert not torch.allclose(w0, model[0].weight), f"{opt_name} did not update the weights"


def test_p15_metric_printer_twice_at_one_iteration():
    from fastreid.utils.events import CommonMetricPrinter, EventStorage

    printer = CommonMetricPrinter(max_iter=10)
    with EventStorage(3) as storage:
        storage.epoch = 0  # the trainer sets it
        storage.put_scalar("total_loss", 1.0)
        printer.write()
        printer.write()  # FastReID: ZeroDivisionError
        storage.iter = 4
        printer.write()


def test_p16_to_tensor_same_output_without_warnings_and_on_numpy2():
    import warnings

    import numpy as np
    from fastreid.data.transforms import ToTensor
    from fastreid.data.transforms import functional as F
    from PIL import Image

    assert F.to_tensor is compat.to_tensor
    original = compat.to_tensor.fastreid_original
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    for img in (rgb, rgb.convert("L"), rgb.convert("RGBA"), rgb.convert("YCbCr"), rgb.convert("P"),
                np.asarray(rgb), np.asarray(rgb.convert("L"))):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = original(img)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # FastReID: "TypedStorage is deprecated"
            out = ToTensor()(img)
        assert out.dtype == expected.dtype and torch.equal(out, expected)
    assert ToTensor()(rgb).shape == (3, 6, 5)
    # modes FastReID converts with np.array(..., copy=False): a ValueError under numpy 2
    as_float = Image.fromarray(rng.random((6, 5), dtype=np.float32), mode="F")
    np.testing.assert_array_equal(ToTensor()(as_float)[0].numpy(), np.asarray(as_float))
    as_int = rgb.convert("I")
    np.testing.assert_array_equal(ToTensor()(as_int)[0].numpy(), np.asarray(as_int))
    bw = rgb.convert("1")
    np.testing.assert_array_equal(ToTensor()(bw)[0].numpy(), 255 * np.asarray(bw, np.uint8))


def test_apply_is_idempotent():
    from fastreid.modeling.meta_arch.baseline import Baseline

    fwd = Baseline.forward
    compat._APPLIED = False
    compat.apply()
    assert Baseline.forward is fwd


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA-only check")
def test_cuda_loader_keeps_fastreid_prefetch():
    from fastreid.data.data_utils import DataLoaderX

    loader = DataLoaderX(0, dataset=[{"x": torch.ones(1)}] * 4, batch_size=2,
                         collate_fn=compat.strict_batch_collator)
    assert loader.stream is not None
    assert next(iter(loader))["x"].is_cuda


def test_p4_flip_average_mirrors_region_translations_back():
    """HA-CNN's ``inference`` gives hard-attention translations (B, T, 2): on the mirrored image a region
    at t_x appears at -t_x; the average must negate x back, not flip the (t_x, t_y) pair."""
    class M(torch.nn.Module):
        def forward(self, inputs):
            mirrored = bool(inputs["images"][0, 0, 0, 0] == 1)  # the probe pixel moves with the flip
            tx = -0.25 if mirrored else 0.25
            return {"features": torch.ones(1, 2), "regions": [torch.tensor([[[tx, 0.5]]]), None]}

    x = torch.zeros(1, 1, 2, 3)
    x[0, 0, 0, 2] = 1  # right edge; the mirrored image has it at column 0
    out = compat.FlipAverage(M())({"images": x})
    torch.testing.assert_close(out["regions"][0], torch.tensor([[[0.25, 0.5]]]))
    assert out["regions"][1] is None

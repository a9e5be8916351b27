"""Project issue 15: every model of the project answers FastReID's inference contract.

For EVERY meta-architecture the project registers into FastReID's META_ARCH_REGISTRY (discovered, not
listed by hand): in eval mode ``model(batch)`` is the (B, D) feature tensor (= ``model.inference(batch)
["features"]``); FastReID's stock ``DefaultPredictor`` gives the features the project's evaluator path
computes; FastReID's stock ``inference_on_dataset`` + ``ReidEvaluator`` gives the Rank-1 / mAP of
``ExtTrainer.test``. Also: APR swapped into the stock bagtricks YAML works through ``DefaultPredictor``.
"""

import types

import pytest
import torch

from conftest import ARCH_CONFIGS, COMMON, make_cfg, perturb_bn_statistics, project_meta_archs

import fastreid_ext

fastreid_ext.register()  # every project meta-architecture is in FastReID's registry from here on

#: images per batch for the single-batch checks
B = 16


PROJECT_ARCHS = project_meta_archs()


pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_project_meta_arch_has_a_config():
    assert PROJECT_ARCHS, "no fastreid_ext meta-architecture found in FastReID's META_ARCH_REGISTRY"
    missing = sorted(set(PROJECT_ARCHS) - set(ARCH_CONFIGS))
    assert not missing, (f"meta-architecture(s) {missing} registered by fastreid_ext have no entry in "
                         "ARCH_CONFIGS of tests/conftest.py: add a small synthetic config so "
                         "that they are checked against FastReID's inference contract (issue 15)")
    stale = sorted(set(ARCH_CONFIGS) - set(PROJECT_ARCHS))
    assert not stale, f"ARCH_CONFIGS lists {stale}, which fastreid_ext no longer registers"


def _first(batch, n=B):
    return {k: v[:n] for k, v in batch.items()}


def _seeded_model_and_weights(cfg, save_dir):
    """(cfg with MODEL.WEIGHTS, the seeded eval model): the model saved with FastReID's Checkpointer."""
    from fastreid.modeling import build_model
    from fastreid.utils.checkpoint import Checkpointer

    torch.manual_seed(0)
    model = build_model(cfg)
    perturb_bn_statistics(model)
    model.eval()
    Checkpointer(model, save_dir=str(save_dir)).save("m")
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.WEIGHTS = str(save_dir / "m.pth")
    return cfg, model


@pytest.fixture(scope="module", params=PROJECT_ARCHS)
def arch(request, synthetic_root, tmp_path_factory):
    """One seeded model per project meta-architecture, its checkpoint, config and a test batch."""
    from fastreid_ext.data import build_test_loader
    from fastreid_ext.data.build import resolve_attribute_fields

    name = request.param
    if name not in ARCH_CONFIGS:
        pytest.fail(f"{name} (registered by fastreid_ext) has no entry in ARCH_CONFIGS: add a small synthetic config")
    config, opts = ARCH_CONFIGS[name]
    cfg = make_cfg(config, COMMON + ["DATASETS.ROOT", str(synthetic_root)] + list(opts))
    assert cfg.MODEL.META_ARCHITECTURE == name, f"{config} builds {cfg.MODEL.META_ARCHITECTURE}, not {name}"
    cfg = resolve_attribute_fields(cfg)
    cfg, model = _seeded_model_and_weights(cfg, tmp_path_factory.mktemp(f"weights_{name}"))
    assert type(model).__name__ == name
    loader, num_query = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    return types.SimpleNamespace(name=name, cfg=cfg, model=model, loader=loader, num_query=num_query,
                                 batch=_first(next(iter(loader))))


def test_eval_forward_returns_the_feature_tensor(arch):
    from fastreid_ext.engine.inference import InferenceOutputs

    images = arch.batch["images"].clone()
    with torch.no_grad():
        out = arch.model(arch.batch)
        inf = arch.model.inference(arch.batch)
        wrapped = InferenceOutputs(arch.model)(arch.batch)
    assert type(out) is torch.Tensor, f"{arch.name} eval forward returned {type(out).__name__}, not a tensor"
    assert out.dim() == 2 and out.shape[0] == B and out.shape[1] > 0
    assert torch.isfinite(out).all()
    assert isinstance(inf, dict) and "features" in inf
    torch.testing.assert_close(out, inf["features"], rtol=0, atol=0)
    torch.testing.assert_close(out, wrapped["features"], rtol=0, atol=0)
    assert torch.equal(arch.batch["images"], images), "the batch must not be modified"
    assert len(set(map(tuple, out.round(decimals=4).tolist()))) == B  # one feature per image


def test_default_predictor_gives_the_project_evaluator_features(arch):
    from fastreid.engine.defaults import DefaultPredictor

    from fastreid_ext.engine.inference import InferenceOutputs

    with torch.no_grad():
        expected = InferenceOutputs(arch.model)(arch.batch)["features"]
    torch.manual_seed(1234)  # the predictor's freshly built model differs until the checkpoint is loaded
    predictor = DefaultPredictor(arch.cfg)
    assert type(predictor.model) is type(arch.model) and not predictor.model.training
    got = predictor(arch.batch["images"].clone())
    assert type(got) is torch.Tensor and got.shape == expected.shape == (B, expected.shape[1])
    torch.testing.assert_close(got, expected)


def test_stock_fastreid_evaluation_matches_ext_trainer_test(arch):
    from fastreid.evaluation import ReidEvaluator, inference_on_dataset

    from fastreid_ext.engine import ExtTrainer

    stock = inference_on_dataset(arch.model, arch.loader, ReidEvaluator(arch.cfg, arch.num_query),
                                 flip_test=arch.cfg.TEST.FLIP.ENABLED)
    ext = ExtTrainer.test(arch.cfg, arch.model)
    for metric in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert ext[metric] == pytest.approx(stock[metric], abs=1e-6), (metric, ext[metric], stock[metric])
    assert 0 < stock["Rank-1"] <= 100 and 0 < stock["mAP"] <= 100


@pytest.mark.parametrize("head", [None, "APRHead"])
def test_apr_in_the_stock_bagtricks_yaml_works_through_default_predictor(synthetic_root, tmp_path, head):
    from fastreid.engine.defaults import DefaultPredictor

    from fastreid_ext.data import build_test_loader
    from fastreid_ext.data.build import resolve_attribute_fields
    from fastreid_ext.modeling.meta_arch.apr import APR

    opts = ["MODEL.META_ARCHITECTURE", "APR", "INPUT.EXTRA_FIELDS", '["attributes"]',
            "INPUT.SIZE_TRAIN", "[64, 32]", "INPUT.SIZE_TEST", "[64, 32]", "DATASETS.ROOT", str(synthetic_root)]
    if head:
        opts += ["MODEL.HEADS.NAME", head]
    cfg = resolve_attribute_fields(make_cfg("configs/Synthetic/bagtricks_R18.yml", COMMON + opts))
    cfg, model = _seeded_model_and_weights(cfg, tmp_path)
    assert isinstance(model, APR)
    loader, _ = build_test_loader(cfg, cfg.DATASETS.TESTS[0])
    batch = _first(next(iter(loader)))
    with torch.no_grad():
        expected = model(batch)
    torch.manual_seed(1234)
    got = DefaultPredictor(cfg)(batch["images"])
    assert type(got) is torch.Tensor
    assert got.shape == (B, cfg.MODEL.BACKBONE.FEAT_DIM)  # bagtricks: no embedding layer, the global feature
    torch.testing.assert_close(got, expected)

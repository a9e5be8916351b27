"""Attribute metrics: official Market protocol, mA and instance metrics, evaluator plumbing."""

import numpy as np
import pytest
import torch

from fastreid_ext.data.attributes import AttributeSchema
from fastreid_ext.data.synthetic import MARKET_ATTRIBUTES
from fastreid_ext.evaluation.attr_evaluation import (AttrReidEvaluator, grouped_predictions,
                                                     grouped_probabilities, label_and_instance_metrics)


def one_hot_probs(schema, targets):
    return [np.eye(k)[np.clip(targets[:, j], 0, None)] for j, k in enumerate(schema.num_classes)]


def random_fields(n, rng):
    f = rng.integers(0, 2, (n, len(MARKET_ATTRIBUTES)))
    f[:, MARKET_ATTRIBUTES.index("age")] = rng.integers(0, 4, n)
    for prefix, count in (("up", 8), ("down", 9)):  # exactly one colour per image
        cols = [i for i, x in enumerate(MARKET_ATTRIBUTES) if x.startswith(prefix) and x not in ("up", "down")]
        f[:, cols] = 0
        f[np.arange(n), np.array(cols)[rng.integers(0, count, n)]] = 1
    return f


def test_perfect_predictions_score_100_on_the_market_protocol():
    rng = np.random.default_rng(0)
    fields = random_fields(50, rng)
    schema = AttributeSchema(MARKET_ATTRIBUTES)  # APR's 27 heads
    probs = one_hot_probs(schema, schema.targets(torch.as_tensor(fields)).numpy())
    ev = AttrReidEvaluator.__new__(AttrReidEvaluator)
    ev.schema = schema
    res = ev.attribute_metrics(probs, fields)
    protocol = [k for k in res if k.startswith("attr-") and k != "attr-mean"]
    assert len(protocol) == 12
    assert all(res[k] == pytest.approx(100) for k in protocol)
    assert res["mA"] == pytest.approx(100) and res["inst-F1"] == pytest.approx(100)


def test_colour_group_predicted_from_binary_heads():
    schema = AttributeSchema(MARKET_ATTRIBUTES)
    fields = random_fields(4, np.random.default_rng(1))
    targets = schema.targets(torch.as_tensor(fields)).numpy()
    probs = one_hot_probs(schema, targets)
    ups = [i for i, h in enumerate(schema.heads) if h.name.startswith("up") and h.name != "up"]
    for i in ups:  # all colours say "no" weakly, except upgreen strongly "yes"
        probs[i] = np.tile([0.6, 0.4], (4, 1))
    probs[schema.names.index("upgreen")] = np.tile([0.1, 0.9], (4, 1))
    pred = grouped_predictions(schema, probs)["upcolor"]
    grouped = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    assert (np.array(grouped.heads[grouped.names.index("upcolor")].fields)[pred] == "upgreen").all()


def test_ma_and_instance_metrics_by_hand():
    label = np.array([[1, 0], [1, 1], [0, -1]])
    pred = np.array([[1, 1], [0, 1], [0, 1]])
    r = label_and_instance_metrics(pred, label)
    # label 0: P=2 (TP=1), N=1 (TN=1) -> (0.5 + 1) / 2 ; label 1: P=1 (TP=1), N=1 (TN=0) -> 0.5
    assert r["mA"] == pytest.approx(100 * (0.75 + 0.5) / 2)
    # instance acc: |gt & pr| / |gt | pr| per row = 1/2, 1/2, 0/0 -> 0
    assert r["inst-acc"] == pytest.approx(100 * (0.5 + 0.5 + 0) / 3)


def test_evaluator_reports_reid_and_attributes_on_gallery_without_distractors():
    from fastreid_ext.config import get_ext_cfg

    schema = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    rng = np.random.default_rng(2)
    pids = torch.tensor([1, 2, 1, 2, 0, 3])
    fields = torch.as_tensor(random_fields(6, rng))
    targets = schema.targets(fields).numpy()
    probs = [torch.as_tensor(p, dtype=torch.float32) for p in one_hot_probs(schema, targets)]
    hat = schema.names.index("hat")
    probs[hat][4] = torch.eye(2)[1 - targets[4, hat]]  # wrong on the distractor: must not count
    ev = AttrReidEvaluator(get_ext_cfg(), num_query=2, schema=schema)
    ev.process({"targets": pids, "camids": torch.tensor([0, 0, 1, 1, 1, 1]), "attributes": fields},
               {"features": torch.eye(6) + 0.1, "attributes": probs})
    res = ev.evaluate()
    assert {"Rank-1", "mAP", "attr-mean", "mA", "inst-F1"} <= set(res)
    assert res["attr-mean"] == pytest.approx(100)


def test_grouped_probabilities_condition_binary_colour_heads_on_one_colour():
    schema = AttributeSchema(["hat", "upblack", "upwhite", "upred", "age"])
    yes = np.array([[0.9, 0.5, 0.1], [0.2, 0.2, 0.2]])
    probs = [np.array([[0.3, 0.7], [0.6, 0.4]])]
    probs += [np.stack([1 - yes[:, i], yes[:, i]], 1) for i in range(3)]
    probs += [np.full((2, 4), 0.25)]
    out = grouped_probabilities(schema, probs)
    grouped = AttributeSchema(schema.fields, group_colours=True)
    assert grouped.names == ["hat", "age", "upcolor"] and [p.shape for p in out] == [(2, 2), (2, 4), (2, 3)]
    np.testing.assert_allclose(out[0], probs[0])  # non-colour heads pass through
    odds = np.array([9.0, 1.0, 1 / 9])  # P(yes) / P(no): exactly-one-colour posterior
    np.testing.assert_allclose(out[2][0], odds / odds.sum(), rtol=1e-5)
    np.testing.assert_allclose(out[2][1], [1 / 3] * 3, rtol=1e-5)  # equal evidence: uniform
    already = grouped_probabilities(grouped, out)  # a grouped schema is returned unchanged
    for a, b in zip(already, out):
        np.testing.assert_allclose(a, b)


def test_evaluator_reports_attribute_filtered_retrieval():
    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    cfg.TEST.ATTR_FILTER.ENABLED = True
    schema = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    rng = np.random.default_rng(3)
    n_ids, per = 20, 4
    pids = torch.arange(1, n_ids + 1).repeat_interleave(per)
    cams = torch.arange(per).repeat(n_ids)
    id_fields = random_fields(n_ids, rng)
    fields = torch.as_tensor(id_fields).repeat_interleave(per, dim=0)
    feats = torch.randn(n_ids, 16).repeat_interleave(per, dim=0) + 0.3 * torch.randn(n_ids * per, 16)
    order = torch.cat([torch.arange(0, n_ids * per, per), torch.tensor([i for i in range(n_ids * per) if i % per])])
    targets = schema.targets(fields).numpy()
    probs = [torch.as_tensor(p, dtype=torch.float32)[order] for p in one_hot_probs(schema, targets)]
    ev = AttrReidEvaluator(cfg, num_query=n_ids, schema=schema)
    ev.process({"targets": pids[order], "camids": cams[order], "attributes": fields[order]},
               {"features": feats[order], "attributes": probs})
    res = ev.evaluate()
    assert res["filter-gallery%"] < 50  # perfectly predicted attributes exclude most identities
    assert res["filter-Rank-1"] >= res["Rank-1"] - 1e-6  # and never exclude a true match
    assert res["filter-Rank-1-loss"] <= 1e-6


def test_filter_sweep_tool_is_monotonic_and_caches(synthetic_root, tmp_path, capsys):
    """tools/attr_filter_sweep.py on an (untrained) APR: a higher threshold never keeps less of the
    gallery; the second run reads the cached outputs instead of running the model."""
    import json
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "tools"))
    import attr_filter_sweep

    argv = ["--config-file", str(REPO / "configs/Synthetic/apr_R18.yml"), "--thresholds", "0.5,0.55,0.9",
            "--out", str(tmp_path / "s.json"), "--cache", str(tmp_path / "c.npz"),
            "DATASETS.ROOT", str(synthetic_root), "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(tmp_path)]
    attr_filter_sweep.main(argv)
    rows = json.load(open(tmp_path / "s.json"))["thresholds"]
    kept = [r["gallery%"] for r in rows]
    assert kept == sorted(kept) and kept[-1] <= 100 + 1e-9
    for r in rows:  # the exact plan computes exactly the kept pairs, the auto plan at least those
        assert abs(r["computed% exact"] - r["gallery%"]) < 1e-6 and r["computed% auto"] >= r["gallery%"] - 1e-6
    capsys.readouterr()
    attr_filter_sweep.main(argv)
    assert "using cached outputs" in capsys.readouterr().out
    again = json.load(open(tmp_path / "s.json"))["thresholds"]
    drop = lambda rs: [{k: v for k, v in r.items() if not k.startswith("speedup")} for r in rs]  # noqa: E731
    assert drop(again) == drop(rows)
    attr_filter_sweep.main(argv[:2] + ["--colours", "grouped"] + argv[2:])  # binary colours -> 8-/9-way heads
    assert json.load(open(tmp_path / "s.json"))["colours"] == "grouped"


def test_filter_sweep_cache_key_changes_with_the_weights_file(tmp_path):
    """A model retrained into the same folder must not reuse the old model's cached outputs."""
    import os
    import sys

    from conftest import REPO, make_cfg

    sys.path.insert(0, str(REPO / "tools"))
    from attr_filter_sweep import cache_key

    w = tmp_path / "model_final.pth"
    w.write_bytes(b"old weights")
    cfg = make_cfg("configs/Synthetic/apr_R18.yml", ["MODEL.WEIGHTS", str(w)])
    before = cache_key(cfg)
    w.write_bytes(b"new weights, same path")
    os.utime(w, ns=(os.stat(w).st_atime_ns, os.stat(w).st_mtime_ns + 10**9))
    assert cache_key(cfg) != before
    other = make_cfg("configs/Synthetic/apr_R18.yml", ["MODEL.WEIGHTS", str(w), "DATASETS.ROOT", str(tmp_path)])
    assert cache_key(other) != cache_key(cfg)

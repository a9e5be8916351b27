"""Attribute metrics: official Market protocol, mA and instance metrics, evaluator plumbing."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import gloo_process, run_gloo_workers
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
    protocol = [k for k in res if k.startswith("attr-") and k not in ("attr-mean", "attr-images")]
    assert len(protocol) == 12 and res["attr-images"] == 50
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


# ------------------------------------------------------------------------------------------------
# Official Market protocol: every image counted, any "yes" colour correct (evaluate_market_attribute.m)
# ------------------------------------------------------------------------------------------------
def _hand_protocol_case():
    """6 images, Market fields. Colours: image 1 has two "yes" upper colours (black, red) and no "yes"
    lower colour; image 2 no "yes" upper colour; image 5's upper colours are unlabelled (-1), as are
    image 4's hat and image 5's gender. Predictions (colour-grouped heads) with mistakes."""
    schema = AttributeSchema(MARKET_ATTRIBUTES, group_colours=True)
    F = list(MARKET_ATTRIBUTES)
    fields = np.zeros((6, len(F)), np.int64)
    fields[:, F.index("age")] = 1
    ups = [f for f in F if f.startswith("up") and f != "up"]
    downs = [f for f in F if f.startswith("down") and f != "down"]
    yes = {0: (["upblack"], ["downblue"]), 1: (["upblack", "upred"], []), 2: ([], ["downblack"]),
           3: (["upwhite"], ["downgray"]), 4: (["upblue"], ["downblack"]), 5: ([], ["downyellow"])}
    for i, (u, d) in yes.items():
        for f in u + d:
            fields[i, F.index(f)] = 1
    fields[5, [F.index(f) for f in ups]] = -1
    fields[4, F.index("hat")] = -1
    fields[5, F.index("gender")] = -1
    targets = schema.targets(torch.as_tensor(fields)).numpy()  # colours: -1 where not one-hot
    probs = one_hot_probs(schema, targets)
    up_pred = ["upblack", "upred", "upblack", "upblack", "upblue", "upgreen"]
    down_pred = ["downblue", "downblack", "downblack", "downblue", "downblack", "downyellow"]
    for name, pred, group in (("upcolor", up_pred, ups), ("downcolor", down_pred, downs)):
        h = schema.names.index(name)
        order = list(schema.heads[h].fields)
        probs[h] = np.eye(len(order))[[order.index(p) for p in pred]]
    hat, gender = schema.names.index("hat"), schema.names.index("gender")
    probs[hat][0] = probs[hat][0][::-1]  # wrong on image 0
    probs[hat][4] = [0.0, 1.0]  # image 4 unlabelled: not counted
    probs[gender][[1, 2]] = probs[gender][[1, 2]][:, ::-1]  # wrong on images 1 and 2
    return schema, probs, fields


def test_market_protocol_counts_every_image_and_any_yes_colour_by_hand(caplog):
    import logging

    schema, probs, fields = _hand_protocol_case()
    ev = AttrReidEvaluator.__new__(AttrReidEvaluator)
    ev.schema = schema
    with caplog.at_level(logging.INFO, logger="fastreid_ext.evaluation.attr_evaluation"):
        res = ev.attribute_metrics(probs, fields)
    # upper colour: images 0-4 counted (5's colours unlabelled); correct: 0 (black), 1 (red is one of
    # its two "yes"), 4; wrong: 2 (no "yes" colour: every prediction wrong), 3
    assert res["attr-upcolor"] == pytest.approx(100 * 3 / 5)
    # lower colour: all 6 counted; wrong: 1 (no "yes"), 3
    assert res["attr-downcolor"] == pytest.approx(100 * 4 / 6)
    assert res["attr-hat"] == pytest.approx(100 * 4 / 5)  # image 4 unlabelled
    assert res["attr-gender"] == pytest.approx(100 * 3 / 5)  # image 5 unlabelled
    others = [n for n in schema.names if n not in ("upcolor", "downcolor", "hat", "gender")]
    assert all(res[f"attr-{n}"] == pytest.approx(100) for n in others) and len(others) == 8
    assert res["attr-mean"] == pytest.approx((60 + 400 / 6 + 80 + 60 + 800) / 12)
    assert res["attr-images"] == 6
    assert not any(k.startswith("attr-n-") for k in res)  # counts go to the log table, not the results
    from fastreid_ext.evaluation.attr_evaluation import market_protocol

    rows = {r["attribute"]: r for r in market_protocol(schema, probs, fields)}
    assert (rows["upcolor"]["images"], rows["upcolor"]["non-one-hot"]) == (5, 2)
    assert (rows["downcolor"]["images"], rows["downcolor"]["non-one-hot"]) == (6, 1)
    assert (rows["hat"]["images"], rows["gender"]["images"], rows["age"]["images"]) == (5, 5, 6)
    assert "non-one-hot" in caplog.text and "upcolor" in caplog.text


def test_market_protocol_with_apr_binary_colour_heads():
    """APR's 27 heads: the predicted colour is the one with the highest "yes" probability; same
    accuracies as the grouped heads of the hand case."""
    schema, gprobs, fields = _hand_protocol_case()
    apr = AttributeSchema(MARKET_ATTRIBUTES)
    by_name = dict(zip(schema.names, gprobs))
    probs = []
    for h in apr.heads:
        if h.name in by_name:
            probs.append(by_name[h.name])
            continue
        group = "upcolor" if h.name.startswith("up") else "downcolor"
        k = schema.heads[schema.names.index(group)].fields.index(h.name)
        p_yes = np.where(by_name[group][:, k] == 1, 0.9, 0.2)
        probs.append(np.stack([1 - p_yes, p_yes], 1))
    ev = AttrReidEvaluator.__new__(AttrReidEvaluator)
    ev.schema = apr
    res = ev.attribute_metrics(probs, fields)
    assert res["attr-upcolor"] == pytest.approx(60) and res["attr-downcolor"] == pytest.approx(400 / 6)


def test_binary_labels_of_a_colour_group_are_its_own_fields():
    """mA / instance metrics: a colour group contributes one binary label per colour FIELD (so a
    non-one-hot identity's colours are still evaluated), -1 only where the field is unlabelled."""
    from fastreid_ext.evaluation.attr_evaluation import binary_labels

    schema, probs, fields = _hand_protocol_case()
    pred, label = binary_labels(schema, probs, fields)
    cols, j = {}, 0
    for h in schema.heads:
        for f in (h.fields if h.is_group else [h.name] * (h.num_classes if h.num_classes > 2 else 1)):
            cols.setdefault(f, []).append(j)
            j += 1
    assert label.shape == pred.shape == (6, j)
    F = list(MARKET_ATTRIBUTES)
    for f in ("upblack", "upred", "downblack", "downyellow"):
        np.testing.assert_array_equal(label[:, cols[f][0]], fields[:, F.index(f)])
    assert label[1, cols["upred"][0]] == 1 and label[1, cols["upblack"][0]] == 1  # two "yes" colours
    assert pred[1, cols["upred"][0]] == 1 and pred[1, cols["upblack"][0]] == 0


#: the official attribute file (vana77/Market-1501_Attribute) in the shared data (../shared, or $FASTREID_EXT_SHARED)
MARKET_ATTRIBUTE_FILE = Path(os.environ.get("FASTREID_EXT_SHARED", Path(__file__).resolve().parents[2].parent / "shared")) \
    / "data" / "attributes" / "market_attribute.mat"


@pytest.mark.skipif(not MARKET_ATTRIBUTE_FILE.exists(), reason=f"official file not found: {MARKET_ATTRIBUTE_FILE}")
def test_official_market_file_non_one_hot_colour_counts():
    """The official file: among the 750 test identities, 69 have no "yes" upper colour and 44 no
    "yes" lower colour (none has several). The former evaluation silently dropped them."""
    from fastreid_ext.data.attributes import load_attribute_mat

    table = load_attribute_mat(str(MARKET_ATTRIBUTE_FILE))
    ids = sorted(table.values["test"])
    fields = np.stack([table.encoded("test", p) for p in ids])
    assert len(ids) == 750
    schema = AttributeSchema(table.names, group_colours=True)
    counts = {}
    for h in schema.heads:
        if h.is_group:
            n_yes = (fields[:, [table.names.index(f) for f in h.fields]] == 1).sum(1)
            counts[h.name] = (int((n_yes == 0).sum()), int((n_yes > 1).sum()))
    assert counts == {"upcolor": (69, 0), "downcolor": (44, 0)}
    targets = schema.targets(torch.as_tensor(fields)).numpy()
    assert (targets[:, schema.names.index("upcolor")] < 0).sum() == 69  # what the schema ignores


# ------------------------------------------------------------------------------------------------
# mA: FastReID FastAttr's convention for labels without positives / negatives
# ------------------------------------------------------------------------------------------------
def test_ma_degenerate_labels_follow_fastattr_by_hand(caplog):
    import logging

    label = np.array([[1, 0, 0, 1, -1],
                      [1, 0, -1, 1, -1],
                      [0, 0, 1, 1, -1]])
    pred = np.array([[1, 1, 0, 1, 1],
                     [0, 0, 1, 0, 1],
                     [0, 0, 1, 1, 1]])
    with caplog.at_level(logging.INFO, logger="fastreid_ext.evaluation.attr_evaluation"):
        r = label_and_instance_metrics(pred, label)
    # label 0: P=2 TP=1, N=1 TN=1 -> 0.75; label 1 (no positive): (0 + TN/N = 2/3) / 2;
    # label 2 (row 1 masked): 1; label 3 (no negative): (TP/P = 2/3 + 0) / 2; label 4: unlabelled
    assert r["mA"] == pytest.approx(100 * (0.75 + 1 / 3 + 1 + 1 / 3) / 4)
    # instances (masked entries ignored): row 0 gt {0,3} pred {0,1,3}; row 1 gt {0,3} pred {};
    # row 2 gt {2,3} pred {2,3}
    assert r["inst-acc"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    assert r["inst-prec"] == pytest.approx(100 * (2 / 3 + 0 + 1) / 3)
    assert r["inst-rec"] == pytest.approx(100 * 2 / 3)
    p, rc = (2 / 3 + 1) / 3, 2 / 3
    assert r["inst-F1"] == pytest.approx(100 * 2 * p * rc / (p + rc))
    assert "2 of 4 labels degenerate" in caplog.text and "1 without positives" in caplog.text
    assert "1 without negatives" in caplog.text and "1 label(s) without any labelled entry" in caplog.text


# ------------------------------------------------------------------------------------------------
# Multi-process evaluation: attribute predictions gathered from every process (as FastReID's features)
# ------------------------------------------------------------------------------------------------
def _synthetic_eval_set(n_ids=12, per=4, seed=5):
    """Features, attribute probabilities, labels, pids and cameras of a small test set, queries first."""
    rng = np.random.default_rng(seed)
    schema = AttributeSchema(MARKET_ATTRIBUTES)
    pids = np.repeat(np.arange(1, n_ids + 1), per)
    cams = np.tile(np.arange(per), n_ids)
    fields = random_fields(n_ids, rng)[pids - 1]
    fields[::7, 0] = -1  # a few unlabelled entries
    feats = rng.standard_normal((n_ids, 16))[pids - 1] + 0.7 * rng.standard_normal((len(pids), 16))
    probs = []
    for k in schema.num_classes:
        z = rng.standard_normal((len(pids), k)) * 2
        probs.append(np.exp(z) / np.exp(z).sum(1, keepdims=True))
    order = np.concatenate([np.arange(0, len(pids), per), [i for i in range(len(pids)) if i % per]])
    return dict(feats=feats[order].astype(np.float32), probs=[p[order].astype(np.float32) for p in probs],
                fields=fields[order], pids=pids[order], cams=cams[order], num_query=n_ids)


def _evaluate_rows(data, lo, hi, batch=5):
    """AttrReidEvaluator (filter on) fed rows lo:hi of the set, in batches (one process's share)."""
    from fastreid_ext.config import get_ext_cfg

    cfg = get_ext_cfg()
    cfg.TEST.ATTR_FILTER.ENABLED = True
    cfg.TEST.ATTR_FILTER.THRESHOLD = 0.6
    ev = AttrReidEvaluator(cfg, num_query=data["num_query"], schema=AttributeSchema(MARKET_ATTRIBUTES))
    ev.reset()
    for a in range(lo, hi, batch):
        b = min(a + batch, hi)
        ev.process({"targets": torch.as_tensor(data["pids"][a:b]), "camids": torch.as_tensor(data["cams"][a:b]),
                    "attributes": torch.as_tensor(data["fields"][a:b])},
                   {"features": torch.as_tensor(data["feats"][a:b]),
                    "attributes": [torch.as_tensor(p[a:b]) for p in data["probs"]]})
    return ev.evaluate()


def _dist_worker(rank, world, init_method, data, out_dir):
    """One process of a gloo group: evaluates its contiguous share (FastReID's InferenceSampler)."""
    n = len(data["pids"])
    per = -(-n // world)
    gloo_process(rank, world, init_method, out_dir,
                 body=lambda: {"results": _evaluate_rows(data, rank * per, min(n, (rank + 1) * per))})


def test_multiprocess_evaluation_gathers_attributes_to_rank0(tmp_path):
    """2 CPU processes (gloo), each evaluating half of the set: rank 0 reports exactly the
    single-process results (re-id, attribute metrics and the filter), rank 1 returns {}."""
    data = _synthetic_eval_set()
    single = _evaluate_rows(data, 0, len(data["pids"]))
    outs = run_gloo_workers(_dist_worker, (data,), tmp_path, timeout=120)
    assert outs[1]["results"] == {}
    got = outs[0]["results"]
    timing = {k for k in single if k.startswith("filter-speedup")}
    assert {"attr-mean", "mA", "filter-mAP", "Rank-1"} <= set(single) and timing
    assert set(got) == set(single)
    for k in set(single) - timing:
        assert got[k] == pytest.approx(single[k], rel=1e-6, abs=1e-9), k

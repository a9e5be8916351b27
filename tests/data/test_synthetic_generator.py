"""Tests of the embedded synthetic re-id dataset generator (fastreid_ext.data.synthetic).

Tiny datasets only (a few identities, 1-3 images per camera) so the module runs in seconds.
The real attribute files are compared with when present and skipped cleanly otherwise.
"""
import importlib
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from fastreid_ext.data.synthetic import (
    COCO_FLIP_PAIRS, COCO_KEYPOINTS, DUKE_ATTRIBUTES, DUKE_DOWN_COLORS, DUKE_UP_COLORS,
    MARKET_ATTRIBUTES, MARKET_ATTRIBUTES_TEST_ORDER, MARKET_DOWN_COLORS, MARKET_UP_COLORS,
    Appearance, generate, make_camera, render_image, sample_appearance, seed_rng,
)

REPO = Path(__file__).resolve().parents[2]
SPLITS = ("bounding_box_train", "query", "bounding_box_test")
MARKET_RE = re.compile(r"^(\d{4}|-1)_c([1-6])s([1-6])_(\d{6})_(\d{2})\.jpg$")
DUKE_RE = re.compile(r"^(\d{4})_c([1-8])_f(\d{7})\.jpg$")
K = {n: i for i, n in enumerate(COCO_KEYPOINTS)}

TINY = dict(num_train_ids=4, num_test_ids=5, images_per_cam=(1, 3), num_distractors=3,
            height=128, width=64, seed=0, progress=False)


def _attribute_dir():
    cands = []
    if os.environ.get("FASTREID_EXT_SHARED"):
        cands.append(Path(os.environ["FASTREID_EXT_SHARED"]) / "data" / "attributes")
    cands += [REPO.parent / "shared" / "data" / "attributes", Path("/work/shared/data/attributes")]
    for c in cands:
        if c.is_dir():
            return c
    return None


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "market"
    generate(str(root), domain="market", num_junk=2, **TINY)
    return root


@pytest.fixture(scope="module")
def duke(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "duke"
    generate(str(root), domain="duke", **TINY)
    return root


def _files(root):
    return {s: sorted(os.listdir(root / s)) for s in SPLITS}


def _parse(name, domain):
    m = (MARKET_RE if domain == "market" else DUKE_RE).match(name)
    assert m, f"bad {domain} file name {name}"
    return int(m.group(1)), int(m.group(2))


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


# --------------------------------------------------------------------------- package hygiene
def test_package_does_not_import_torch_or_fastreid(tmp_path):
    """The generator and the keypoint contract import (plain package imports, as tools/make_synthetic.py
    does) and run without torch or FastReID."""
    code = f"""
import sys
sys.path.insert(0, {str(REPO)!r})
import fastreid_ext, fastreid_ext.data
import fastreid_ext.data.coco_keypoints as ck, fastreid_ext.data.dataset_keypoints
from fastreid_ext.data.synthetic import generate
generate({str(tmp_path / 'x')!r}, num_train_ids=1, num_test_ids=1, images_per_cam=(1, 1),
         num_distractors=0, num_junk=0, progress=False)
assert len(ck.read_coco_keypoints({str(tmp_path / 'x' / 'keypoints' / 'person_keypoints_query.json')!r})) > 0
bad = [k for k in sys.modules if k.split('.')[0] in ('torch', 'fastreid')]
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_constants():
    assert len(COCO_KEYPOINTS) == 17 and COCO_KEYPOINTS[0] == "nose"
    for a, b in COCO_FLIP_PAIRS:
        assert COCO_KEYPOINTS[a].replace("left", "right") == COCO_KEYPOINTS[b]
    assert set(MARKET_ATTRIBUTES) == set(MARKET_ATTRIBUTES_TEST_ORDER)
    assert len(MARKET_ATTRIBUTES) == 27 and len(DUKE_ATTRIBUTES) == 23


# --------------------------------------------------------------------------- layout & names
def test_layout_and_names_market(market):
    for sub in SPLITS + ("attribute", "keypoints"):
        assert (market / sub).is_dir()
    assert (market / "meta.json").is_file()
    assert (market / "attribute" / "market_attribute.mat").is_file()
    assert not list(market.parent.glob("market.tmp-*"))
    files = _files(market)
    for split, names in files.items():
        assert names, split
        for n in names:
            pid, cam = _parse(n, "market")
            if pid in (0, -1):
                assert split == "bounding_box_test", n
    junk = [n for n in files["bounding_box_test"] if n.startswith("-1_c")]
    distr = [n for n in files["bounding_box_test"] if n.startswith("0000_c")]
    assert len(junk) == 2 and len(distr) == 3
    meta = json.loads((market / "meta.json").read_text())
    assert meta["args"]["domain"] == "market" and meta["args"]["num_cams"] == 6
    assert meta["counts"]["num_images"] == sum(len(v) for v in files.values())


def test_layout_and_names_duke(duke):
    assert (duke / "attribute" / "duke_attribute.mat").is_file()
    files = _files(duke)
    query_ids = {_parse(n, "duke")[0] for n in files["query"]}
    gal = defaultdict(list)
    for n in files["bounding_box_test"]:
        pid, cam = _parse(n, "duke")
        gal[pid].append(cam)
    distractors = set(gal) - query_ids
    assert len(distractors) == 3  # gallery-only identities
    assert all(len(gal[p]) == 1 for p in distractors)
    assert min(distractors) > max(query_ids)
    for n in files["bounding_box_train"]:
        _parse(n, "duke")


@pytest.mark.parametrize("domain", ["market", "duke"])
def test_splits_protocol(domain, market, duke):
    root = market if domain == "market" else duke
    files = _files(root)
    parsed = {s: [_parse(n, domain) for n in v] for s, v in files.items()}
    train_ids = {p for p, _ in parsed["bounding_box_train"]}
    query_ids = {p for p, _ in parsed["query"]}
    test_ids = query_ids | {p for p, _ in parsed["bounding_box_test"] if p > 0}
    assert train_ids == set(range(1, 5))
    assert query_ids == set(range(5, 10))  # every test identity has queries
    assert not train_ids & test_ids
    # train ids seen by >= 2 cameras
    cams = defaultdict(set)
    for p, c in parsed["bounding_box_train"]:
        cams[p].add(c)
    assert all(len(v) >= 2 for v in cams.values())
    # query: at most one image per (id, camera), cross-camera gallery match exists
    qpairs = parsed["query"]
    assert len(qpairs) == len(set(qpairs))
    gal = defaultdict(set)
    for p, c in parsed["bounding_box_test"]:
        gal[p].add(c)
    for p, c in qpairs:
        assert gal[p] - {c}, f"query {p} cam {c} has no cross-camera gallery image"
        assert len(gal[p] | {cc for pp, cc in qpairs if pp == p}) >= 2


# --------------------------------------------------------------------------- determinism
def test_determinism(tmp_path):
    args = dict(TINY, num_train_ids=2, num_test_ids=2, num_distractors=1, num_junk=1)
    generate(str(tmp_path / "a"), **args)
    generate(str(tmp_path / "b"), **args)
    a, b = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    generate(str(tmp_path / "c"), **dict(args, seed=1))
    c = _tree_bytes(tmp_path / "c")
    imgs_a = sorted(v for k, v in a.items() if k.endswith(".jpg"))
    imgs_c = sorted(v for k, v in c.items() if k.endswith(".jpg"))
    assert imgs_a != imgs_c


def test_images_do_not_depend_on_generation_order(tmp_path):
    """An identity's images stay the same when more identities are generated."""
    small = dict(TINY, num_train_ids=2, num_test_ids=1, num_distractors=0, num_junk=0)
    generate(str(tmp_path / "s"), **small)
    generate(str(tmp_path / "l"), **dict(small, num_train_ids=3))
    for n in os.listdir(tmp_path / "s" / "bounding_box_train"):
        assert ((tmp_path / "s" / "bounding_box_train" / n).read_bytes() ==
                (tmp_path / "l" / "bounding_box_train" / n).read_bytes())


# --------------------------------------------------------------------------- attributes .mat
def _load_attr(path, domain):
    mat = scipy.io.loadmat(str(path))
    assert [k for k in mat if not k.startswith("__")] == [f"{domain}_attribute"]
    top = mat[f"{domain}_attribute"]
    assert top.shape == (1, 1)
    return {s: top[0, 0][s][0, 0] for s in top.dtype.names}, top.dtype.names


@pytest.mark.parametrize("domain", ["market", "duke"])
def test_attribute_mat_structure(domain, market, duke):
    root = market if domain == "market" else duke
    splits, order = _load_attr(root / "attribute" / f"{domain}_attribute.mat", domain)
    assert set(order) == {"train", "test"}
    names = set(MARKET_ATTRIBUTES if domain == "market" else DUKE_ATTRIBUTES)
    colors = (MARKET_UP_COLORS, MARKET_DOWN_COLORS) if domain == "market" else \
        (DUKE_UP_COLORS, DUKE_DOWN_COLORS)
    files = _files(root)
    for split, st in splits.items():
        assert set(st.dtype.names) == names | {"image_index"}
        assert st.dtype.names[-1] == "image_index"
        n = st["image_index"].shape[1]
        ids = [str(x[0]) for x in st["image_index"][0]]
        assert all(re.fullmatch(r"\d{4}", i) for i in ids)
        for name in names:
            v = st[name]
            assert v.dtype == np.uint8 and v.shape == (1, n)
            allowed = {1, 2, 3, 4} if name == "age" else {1, 2}
            assert set(v.ravel().tolist()) <= allowed
        for prefix, vocab in zip(("up", "down"), colors):
            yes = np.stack([st[prefix + c].ravel() == 2 for c in vocab]).sum(0)
            assert (yes == 1).all()  # exactly one colour per identity, like the real files
        split_dir = "bounding_box_train" if split == "train" else "query"
        pids = {f"{_parse(f, domain)[0]:04d}" for f in files[split_dir]}
        assert pids <= set(ids)  # every identity of the split has attributes
        if split == "test":
            gal = {f"{p:04d}" for p, _ in (_parse(f, domain) for f in files["bounding_box_test"])
                   if p > 0}
            assert gal <= set(ids) and "0000" not in ids


@pytest.mark.parametrize("domain", ["market", "duke"])
def test_attribute_mat_matches_real_layout(domain, market, duke):
    adir = _attribute_dir()
    real_path = adir / f"{domain}_attribute.mat" if adir else None
    if real_path is None or not real_path.is_file():
        pytest.skip("real attribute files not available (shared/data/attributes)")
    root = market if domain == "market" else duke
    ours, our_order = _load_attr(root / "attribute" / f"{domain}_attribute.mat", domain)
    real, real_order = _load_attr(real_path, domain)
    assert our_order == real_order
    for split in ("train", "test"):
        assert ours[split].dtype.names == real[split].dtype.names  # same fields, same order
        for name in real[split].dtype.names:
            r, o = real[split][name], ours[split][name]
            assert r.dtype == o.dtype and r.shape[0] == o.shape[0] == 1
            if name == "image_index":
                assert type(r[0, 0]) is type(o[0, 0]) and r[0, 0].dtype.kind == o[0, 0].dtype.kind
                assert r[0, 0].shape == o[0, 0].shape
            else:
                real_vals = set(r.ravel().tolist()) - {0}  # duke 'top' has two stray zeros
                assert set(o.ravel().tolist()) <= real_vals | ({1, 2} if name != "age" else set())


# --------------------------------------------------------------------------- keypoints
@pytest.mark.parametrize("domain", ["market", "duke"])
def test_keypoints_coco(domain, market, duke):
    root = market if domain == "market" else duke
    files = _files(root)
    for split in SPLITS:
        coco = json.loads((root / "keypoints" / f"person_keypoints_{split}.json").read_text())
        assert {"images", "annotations", "categories"} <= set(coco)
        cat = coco["categories"][0]
        assert cat["id"] == 1 and cat["name"] == "person"
        assert cat["keypoints"] == list(COCO_KEYPOINTS) and len(cat["skeleton"]) == 19
        assert sorted(im["file_name"] for im in coco["images"]) == files[split]
        img_ids = {im["id"] for im in coco["images"]}
        assert len(img_ids) == len(coco["images"])
        assert len(coco["annotations"]) == len(coco["images"])
        for im in coco["images"]:
            assert im["width"] == 64 and im["height"] == 128
        for ann in coco["annotations"]:
            assert ann["image_id"] in img_ids and ann["category_id"] == 1
            kp = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
            assert len(ann["bbox"]) == 4
            v = kp[:, 2]
            assert set(v.tolist()) <= {0, 1, 2}
            assert ann["num_keypoints"] == int((v > 0).sum())
            lab = v > 0
            assert (kp[lab, 0] >= 0).all() and (kp[lab, 0] < 64).all()
            assert (kp[lab, 1] >= 0).all() and (kp[lab, 1] < 128).all()
            assert (kp[~lab, :2] == 0).all()
            for side in ("left", "right"):
                hip, ank = K[f"{side}_hip"], K[f"{side}_ankle"]
                if v[K["nose"]] > 0 and v[hip] > 0:
                    assert kp[K["nose"], 1] < kp[hip, 1]
                if v[hip] > 0 and v[ank] > 0:
                    assert kp[hip, 1] < kp[ank, 1]
            if split != "bounding_box_test":  # real identities are well cropped
                assert ann["num_keypoints"] >= 10


def _clean_render(app, view, seed=0):
    cam = make_camera(app.domain, 1, seed=0, difficulty=0.0)
    return render_image(app, cam, seed_rng(seed, 1), difficulty=0.0, view=view)


def test_keypoint_left_right_convention():
    app = sample_appearance("market", 1, 0)
    front = _clean_render(app, "front").keypoints
    back = _clean_render(app, "back").keypoints
    for name in ("shoulder", "hip", "eye"):
        assert front[K[f"left_{name}"], 0] > front[K[f"right_{name}"], 0]
        assert back[K[f"left_{name}"], 0] < back[K[f"right_{name}"], 0]
    assert (back[[K["nose"], K["left_eye"], K["right_eye"]], 2] == 1).all()
    assert (front[:, 2] == 2).all()


# --------------------------------------------------------------------------- rendering
def _plain(color, pid=1, **kw):
    base = dict(up_color=color, up=1, top=1, backpack=1, bag=1, handbag=1, hair=1, hat=1,
                pattern="none")
    base.update(kw)
    return sample_appearance("market", pid, 0, **base)


def _torso_mean(app, view, seed=0):
    res = _clean_render(app, view, seed)
    arr = np.asarray(res.image, dtype=float)
    kp = res.keypoints
    sx = 0.5 * (kp[K["left_shoulder"], 0] + kp[K["right_shoulder"], 0])
    sy = 0.5 * (kp[K["left_shoulder"], 1] + kp[K["right_shoulder"], 1])
    hy = 0.5 * (kp[K["left_hip"], 1] + kp[K["right_hip"], 1])
    y0, y1 = int(sy + 0.3 * (hy - sy)), int(sy + 0.75 * (hy - sy))
    x0, x1 = int(round(sx - 2)), int(round(sx + 2))
    return arr[y0:y1, x0:x1].reshape(-1, 3).mean(0)


@pytest.mark.parametrize("view", ["front", "back", "left", "right"])
def test_torso_colour_tracks_upper_colour(view):
    red = _torso_mean(_plain("red", pid=3), view)
    blue = _torso_mean(_plain("blue", pid=3), view)
    assert red[0] - red[2] > 60 and blue[2] - blue[0] > 40
    assert red[0] - red[2] > blue[0] - blue[2] + 100


def test_every_upper_colour_is_recognisable():
    checks = {
        "red": lambda c: c[0] > c[1] + 50 and c[0] > c[2] + 50,
        "blue": lambda c: c[2] > c[0] + 30,
        "green": lambda c: c[1] > c[0] + 20 and c[1] > c[2],
        "yellow": lambda c: c[0] > c[2] + 60 and c[1] > c[2] + 60,
        "purple": lambda c: c[0] > c[1] + 15 and c[2] > c[1] + 25,
        "black": lambda c: c.max() < 80,
        "white": lambda c: c.min() > 185,
        "gray": lambda c: 70 < c.mean() < 190 and np.ptp(c) < 40,
    }
    assert set(checks) == set(MARKET_UP_COLORS)
    for color, ok in checks.items():
        for pid in (1, 2, 3):
            c = _torso_mean(_plain(color, pid=pid), "front")
            assert ok(c), (color, pid, c)


def _pixel(app, a, b, t=0.5):
    res = _clean_render(app, "front")
    kp = res.keypoints
    x = kp[K[a], 0] + t * (kp[K[b], 0] - kp[K[a], 0])
    y = kp[K[a], 1] + t * (kp[K[b], 1] - kp[K[a], 1])
    return np.asarray(res.image, dtype=float)[int(round(y)), int(round(x))]


def test_sleeves_and_shorts_show_skin():
    skin, blue = (230, 190, 160), (30, 60, 200)
    kw = dict(skin_rgb=skin, up_rgb=blue, down_rgb=(20, 20, 20), down_color="black", clothes=2)
    for arm in ("left", "right"):
        long_s = _pixel(_plain("blue", up=1, **kw), f"{arm}_elbow", f"{arm}_wrist")
        short_s = _pixel(_plain("blue", up=2, **kw), f"{arm}_elbow", f"{arm}_wrist")
        assert short_s[0] > long_s[0] + 80  # skin (reddish) vs blue sleeve
        long_p = _pixel(_plain("blue", down=1, **kw), f"{arm}_knee", f"{arm}_ankle")
        shorts = _pixel(_plain("blue", down=2, **kw), f"{arm}_knee", f"{arm}_ankle")
        assert shorts.mean() > long_p.mean() + 80  # skin vs black trousers


def test_appearance_priors_and_domain_gap():
    m = [sample_appearance("market", p, 0) for p in range(1, 301)]
    d = [sample_appearance("duke", p, 0) for p in range(1, 301)]
    assert all(isinstance(a, Appearance) for a in m)
    assert sum(a.clothes == 2 for a in m) > 3 * sum(a.clothes == 1 for a in m)
    assert sum(a.hat == 2 for a in m) < 0.15 * len(m)
    assert sum(a.up == 1 for a in d) > 2 * sum(a.up == 1 for a in m)  # winter: long sleeves
    assert sum(a.top == 2 for a in d) > sum(a.top == 2 for a in m)
    assert set(a.up_color for a in m) <= set(MARKET_UP_COLORS)
    assert set(a.down_color for a in d) <= set(DUKE_DOWN_COLORS)
    # the same identity renders darker in the duke style
    lum = {}
    for dom in ("market", "duke"):
        vals = []
        for cam in (1, 2, 3):
            c = make_camera(dom, cam, seed=0)
            for p in range(1, 4):
                app = sample_appearance(dom, p, 0)
                vals.append(np.asarray(render_image(app, c, seed_rng(p, cam)).image).mean())
        lum[dom] = np.mean(vals)
    assert lum["duke"] < lum["market"] - 15


# --------------------------------------------------------------------------- existing root
def test_existing_root_behaviour(tmp_path, capsys):
    root = tmp_path / "ds"
    args = dict(TINY, num_train_ids=1, num_test_ids=1, num_distractors=1, num_junk=0)
    first = generate(str(root), **args)
    assert first["skipped"] is False
    mtime = (root / "meta.json").stat().st_mtime_ns
    again = generate(str(root), **args)
    assert again["skipped"] is True and "not regenerating" in capsys.readouterr().out
    assert again["num_images"] == first["num_images"]
    assert (root / "meta.json").stat().st_mtime_ns == mtime
    with pytest.raises(FileExistsError, match=re.escape(str(root))):
        generate(str(root), **dict(args, seed=5))
    res = generate(str(root), **dict(args, seed=5), overwrite=True)
    assert res["skipped"] is False
    assert json.loads((root / "meta.json").read_text())["args"]["seed"] == 5
    # a foreign non-empty folder is never clobbered; an empty one is fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="other"):
        generate(str(other), **args)
    empty = tmp_path / "empty"
    empty.mkdir()
    generate(str(empty), **args)
    assert (empty / "meta.json").is_file()
    assert not list(tmp_path.glob("*.tmp-*"))


def test_interrupted_run_never_looks_complete(tmp_path, monkeypatch):
    gen_mod = importlib.import_module("fastreid_ext.data.synthetic.generate")
    real = gen_mod.render_image
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(gen_mod, "render_image", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate(str(tmp_path / "ds"), **TINY)
    assert not (tmp_path / "ds").exists()
    assert not list(tmp_path.glob("ds.tmp-*"))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate(str(tmp_path / "a"), domain="cuhk")
    with pytest.raises(ValueError):
        generate(str(tmp_path / "a"), domain="market", num_cams=7)
    with pytest.raises(ValueError):
        generate(str(tmp_path / "a"), domain="duke", num_junk=3)
    with pytest.raises(ValueError):
        generate(str(tmp_path / "a"), domain="market", num_train_ids=1000, num_test_ids=600)
    assert not (tmp_path / "a").exists()


def test_cli(tmp_path):
    root = tmp_path / "cli_market"
    cmd = [sys.executable, "tools/make_synthetic.py", "--root", str(root), "--domain", "market",
           "--train-ids", "1", "--test-ids", "1", "--images-per-cam", "1", "1",
           "--distractors", "1", "--junk", "1", "--seed", "3", "--no-progress"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    meta = json.loads((root / "meta.json").read_text())
    assert meta["args"]["seed"] == 3 and meta["counts"]["junk_images"] == 1
    assert json.loads(out.stdout)["skipped"] is False

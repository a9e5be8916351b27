"""Images checked before the first iteration (issue 13, item 3; fastreid_ext.data.image_check and
DATASETS.CHECK_IMAGES / DATASETS.SKIP_UNREADABLE in fastreid_ext.data.build): bad-file kinds, good
files (synthetic and the real mini Market), the size/mtime cache, and the build path."""

import io
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_cfg

from fastreid_ext.data import image_check
from fastreid_ext.data.image_check import check_image, check_images, scan_images, unreadable_message


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Never touch the user's cache: the default cache folder is this test's."""
    monkeypatch.setenv("FASTREID_EXT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    """A tiny synthetic Market-style set (4 + 4 ids), generated once; tests copy it before corrupting."""
    from fastreid_ext.data.synthetic import generate

    root = tmp_path_factory.mktemp("image_check_src")
    generate(str(root / "synthetic_market"), domain="market", num_train_ids=4, num_test_ids=4, seed=0,
             progress=False)
    return root


@pytest.fixture
def root(small_set, tmp_path):
    """A private copy of the small set (a ``DATASETS.ROOT``)."""
    dst = tmp_path / "datasets"
    shutil.copytree(small_set, dst)
    return dst


def _images(root, split):
    return sorted((Path(root) / "synthetic_market" / split).glob("*.jpg"))


def _cut_in_half(p: Path):
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


class _Counter:
    """Wraps the per-file checker and counts the files it opens."""

    def __init__(self, monkeypatch):
        self.calls = []
        orig = image_check.check_image

        def counted(path):
            self.calls.append(path)
            return orig(path)

        monkeypatch.setattr(image_check, "check_image", counted)


# ------------------------------------------------------------------------------------------ one file
def test_bad_file_kinds_are_caught_with_a_reason(root, tmp_path):
    good = _images(root, "bounding_box_train")[0]
    data = good.read_bytes()
    d = tmp_path / "bad"
    d.mkdir()
    (d / "half.jpg").write_bytes(data[: len(data) // 2])
    (d / "last_byte_missing.jpg").write_bytes(data[:-1])
    (d / "header_only.jpg").write_bytes(data[:100])
    (d / "random.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    (d / "empty.jpg").write_bytes(b"")
    (d / "zeroed_second_half.jpg").write_bytes(data[: len(data) // 2] + bytes(len(data) - len(data) // 2))
    png = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(png, "PNG")
    (d / "half.png").write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    missing = d / "missing.jpg"
    reasons = {Path(p).name: r for p, r in check_images(sorted(map(str, d.iterdir())) + [str(missing)],
                                                        use_cache=False, progress=False)}
    assert set(reasons) == {"half.jpg", "last_byte_missing.jpg", "header_only.jpg", "random.jpg", "empty.jpg",
                            "zeroed_second_half.jpg", "half.png", "missing.jpg"}
    assert "truncated JPEG" in reasons["half.jpg"] and "FF D9" in reasons["half.jpg"]
    assert "truncated JPEG" in reasons["last_byte_missing.jpg"]
    assert "truncated JPEG" in reasons["zeroed_second_half.jpg"]
    assert "truncated PNG" in reasons["half.png"] and "IEND" in reasons["half.png"]
    assert reasons["random.jpg"] == "not an image PIL can identify"
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["missing.jpg"] == "file not found"
    assert "header" in reasons["header_only.jpg"]
    # the checker agrees with the loader: every file reported here fails in read_image
    from fastreid_ext.data.common import read_image

    for name in reasons:
        with pytest.raises(OSError):
            read_image(str(d / name))


def test_readable_variants_and_other_formats_pass(root, tmp_path):
    data = _images(root, "query")[0].read_bytes()
    (tmp_path / "zero_padded.jpg").write_bytes(data + bytes(5000))  # padding after EOI
    (tmp_path / "appended.jpg").write_bytes(data + b"trailer data" * 50)  # data after EOI: fully decoded, fine
    img = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 32, 3), dtype=np.uint8))
    for fmt, ext in (("PNG", "png"), ("BMP", "bmp"), ("GIF", "gif"), ("TIFF", "tif"), ("WEBP", "webp")):
        img.save(tmp_path / f"ok.{ext}", fmt)
    buf = io.BytesIO()
    img.save(buf, "BMP")
    (tmp_path / "half.bmp").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # full decode catches it
    bad = check_images(sorted(str(p) for p in tmp_path.iterdir() if p.is_file()), use_cache=False, progress=False)
    assert [Path(p).name for p, _ in bad] == ["half.bmp"] and "truncated" in bad[0][1]


def test_jpeg_and_png_pass_without_decoding_the_pixels(root, tmp_path, monkeypatch):
    from PIL import ImageFile

    img = Image.fromarray(np.random.default_rng(3).integers(0, 255, (64, 32, 3), dtype=np.uint8))
    img.save(tmp_path / "a.png")
    img.save(tmp_path / "a.bmp")

    def no_decode(self):
        raise AssertionError("decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decode)
    assert check_image(str(_images(root, "query")[0])) is None and check_image(str(tmp_path / "a.png")) is None
    assert "decoded" in check_image(str(tmp_path / "a.bmp"))  # other formats: full decode


def test_every_synthetic_image_passes(root):
    paths = sorted(str(p) for p in (root / "synthetic_market").rglob("*.jpg"))
    assert len(paths) > 100
    assert check_images(paths, use_cache=False, progress=False, workers=4) == []


def test_real_mini_market_crops_pass(mini_market_root):
    paths = sorted(str(p) for p in Path(mini_market_root).rglob("*.jpg"))
    assert paths and check_images(paths, use_cache=False, progress=False) == []


def test_message_lists_fifty_then_how_many_more():
    bad = [(f"/d/{i:03d}.jpg", "empty file (0 bytes)") for i in range(60)]
    msg = unreadable_message(bad, 1000, "the training set X")
    assert msg.startswith("60 of 1000 images of the training set X are unreadable:")
    assert "/d/049.jpg: empty file (0 bytes)" in msg and "/d/050.jpg" not in msg and "... and 10 more" in msg
    assert "more" not in unreadable_message(bad[:50], 1000, "X")


# ------------------------------------------------------------------------------------------ cache
def test_second_scan_opens_no_image_and_changed_files_are_checked_again(root, tmp_path, monkeypatch):
    counter = _Counter(monkeypatch)
    imgs = _images(root, "bounding_box_train")
    paths = [str(p) for p in imgs]
    _cut_in_half(imgs[0])
    first = scan_images(paths, progress=False)
    assert len(counter.calls) == len(paths) and first.cached == 0
    assert [p for p, _ in first.bad] == [paths[0]]
    assert Path(first.cache_file).parent == tmp_path / "cache" / "image_check"  # $FASTREID_EXT_CACHE

    counter.calls.clear()
    second = scan_images(paths, progress=False)
    assert counter.calls == [] and second.cached == len(paths)  # nothing read, the bad result cached too
    assert second.bad == first.bad

    # a good file rewritten broken (size changes), a bad file repaired, a file touched (mtime only)
    good = imgs[1].read_bytes()
    imgs[0].write_bytes(good)
    _cut_in_half(imgs[1])
    st = imgs[2].stat()
    os.utime(imgs[2], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    counter.calls.clear()
    third = scan_images(paths, progress=False)
    assert sorted(counter.calls) == sorted(paths[:3]) and third.cached == len(paths) - 3
    assert [p for p, _ in third.bad] == [paths[1]]

    # a cached bad file rewritten with the same size (only the mtime changes) is checked again
    imgs[1].write_bytes(good[: len(good) // 2][::-1])  # still bad, same size
    os.utime(imgs[1], ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    counter.calls.clear()
    assert [p for p, _ in check_images(paths, progress=False)] == [paths[1]] and counter.calls == [paths[1]]


def test_corrupt_or_foreign_cache_is_ignored_and_rebuilt(root, monkeypatch):
    counter = _Counter(monkeypatch)
    paths = [str(p) for p in _images(root, "query")]
    cache = Path(scan_images(paths, progress=False).cache_file)
    for junk in ("{not json", "", "[]", json.dumps({"version": 1, "dir": "/elsewhere", "files": {}}),
                 json.dumps({"version": 1, "dir": os.path.dirname(paths[0]),
                             "files": {Path(p).name: ["x", None, 3] for p in paths}})):
        cache.write_text(junk)
        counter.calls.clear()
        assert check_images(paths, progress=False) == []
        assert len(counter.calls) == len(paths)  # nothing trusted from the broken file
        data = json.loads(cache.read_text())  # rebuilt, valid
        assert data["version"] == image_check.CHECK_VERSION and len(data["files"]) == len(paths)
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temporary file left behind


def test_unwritable_cache_folder_only_costs_the_caching(root, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    paths = [str(p) for p in _images(root, "query")]
    _cut_in_half(Path(paths[0]))
    with caplog.at_level(logging.WARNING, logger="fastreid_ext.data.image_check"):
        bad = check_images(paths, cache_dir=blocker, progress=False)
    assert [p for p, _ in bad] == [paths[0]] and "cannot write the cache" in caplog.text


# ------------------------------------------------------------------------------------------ build path
def _cfg(root, *opts):
    return make_cfg("configs/Synthetic/bagtricks_R18.yml", ["DATASETS.ROOT", str(root), "DATALOADER.NUM_WORKERS",
                                                             "0", *opts])


def test_training_set_with_unreadable_images_stops_naming_every_one(root, caplog):
    from fastreid_ext.data import build_train_set

    imgs = _images(root, "bounding_box_train")
    _cut_in_half(imgs[3])
    imgs[7].write_bytes(b"")
    with caplog.at_level(logging.INFO, logger="fastreid_ext.data.image_check"):
        with pytest.raises(ValueError) as e:
            build_train_set(_cfg(root))
    msg = str(e.value)
    assert f"2 of {len(imgs)} images of the training set SyntheticMarket are unreadable" in msg
    assert f"\n  {imgs[3]}: truncated JPEG" in msg and f"\n  {imgs[7]}: empty file (0 bytes)" in msg
    assert "DATASETS.SKIP_UNREADABLE True" in msg
    assert f"{len(imgs)} images checked (0 from cache)" in caplog.text  # the summary line

    # DATASETS.CHECK_IMAGES False: no scan, the set is built with every item (as before)
    assert len(build_train_set(_cfg(root, "DATASETS.CHECK_IMAGES", "False"))) == len(imgs)


def test_skip_unreadable_drops_them_and_warns(root, caplog):
    from fastreid_ext.data import build_test_set, build_train_set

    imgs = _images(root, "bounding_box_train")
    n_all = len(build_train_set(_cfg(root)))  # all readable; fills the cache
    _cut_in_half(imgs[3])
    imgs[7].write_bytes(b"\x00" * 100)
    with caplog.at_level(logging.INFO):
        ds = build_train_set(_cfg(root, "DATASETS.SKIP_UNREADABLE", "True"))
    assert len(ds) == n_all - 2
    kept = {it[0] for it in ds.img_items}
    assert str(imgs[3]) not in kept and str(imgs[7]) not in kept
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and str(imgs[3]) in warned[0] and str(imgs[7]) in warned[0]
    assert f"{n_all} images checked ({n_all - 2} from cache)" in caplog.text

    # test split: a dropped query image lowers num_query
    query, gallery = _images(root, "query"), _images(root, "bounding_box_test")
    ts_all, nq_all = build_test_set(_cfg(root), "SyntheticMarket")
    _cut_in_half(query[0])
    _cut_in_half(gallery[-1])
    with pytest.raises(ValueError, match=r"2 of \d+ images of the test set SyntheticMarket"):
        build_test_set(_cfg(root), "SyntheticMarket")
    ts, nq = build_test_set(_cfg(root, "DATASETS.SKIP_UNREADABLE", "True"), "SyntheticMarket")
    assert nq == nq_all - 1 and len(ts) == len(ts_all) - 2
    assert all(it[0] not in (str(query[0]), str(gallery[-1])) for it in ts.img_items)
    assert all("/query/" in it[0] for it in ts.img_items[:nq])

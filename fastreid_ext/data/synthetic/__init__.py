"""Embedded synthetic re-id dataset generator (numpy / scipy / PIL only).

Renders stylised pedestrians (see :mod:`.render` for the body and nuisance
models) and writes them in the real on-disk formats of Market-1501 and
DukeMTMC-reID, together with attribute ``.mat`` files laid out like the real
Market-1501 / DukeMTMC attribute annotations and COCO-style keypoint files::

    from fastreid_ext.data.synthetic import generate
    generate("datasets/synthetic_market", domain="market", num_train_ids=100, num_test_ids=100)

This package deliberately imports neither torch nor fastreid.
"""
from .generate import (
    GENERATOR_VERSION, SPLITS, attribute_file_name, generate, keypoint_file_name,
    write_attribute_mat,
)
from .render import (
    COCO_FLIP_PAIRS, COCO_KEYPOINTS, COCO_SKELETON, DEFAULT_DIFFICULTY, DEFAULT_NUM_CAMS,
    DOMAINS, DUKE_ATTRIBUTES, DUKE_ATTRIBUTES_TEST_ORDER, DUKE_DOWN_COLORS, DUKE_UP_COLORS,
    MARKET_ATTRIBUTES, MARKET_ATTRIBUTES_TEST_ORDER, MARKET_DOWN_COLORS, MARKET_UP_COLORS,
    VIEWS, Appearance, CameraModel, RenderResult, make_camera, render_image, sample_appearance,
    seed_rng,
)

__all__ = [
    "GENERATOR_VERSION", "SPLITS", "generate", "attribute_file_name", "keypoint_file_name",
    "write_attribute_mat",
    "COCO_KEYPOINTS", "COCO_SKELETON", "COCO_FLIP_PAIRS",
    "MARKET_ATTRIBUTES", "MARKET_ATTRIBUTES_TEST_ORDER", "DUKE_ATTRIBUTES",
    "DUKE_ATTRIBUTES_TEST_ORDER", "MARKET_UP_COLORS", "MARKET_DOWN_COLORS", "DUKE_UP_COLORS",
    "DUKE_DOWN_COLORS", "DOMAINS", "DEFAULT_NUM_CAMS", "DEFAULT_DIFFICULTY", "VIEWS",
    "Appearance", "CameraModel", "RenderResult", "make_camera", "render_image",
    "sample_appearance", "seed_rng",
]

"""Shared fixtures: synthetic data generated on the fly (no files shipped), the real mini Market."""

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import fastreid_ext  # noqa: E402,F401  (compat + registration before any fastreid.data import)

#: where CI and developers find the shared data (tests skip cleanly when it is absent)
SHARED = Path(os.environ.get("FASTREID_EXT_SHARED", REPO.parent / "shared"))
MINI_MARKET = SHARED / "data" / "mini_market1501"
ATTRIBUTES = SHARED / "data" / "attributes"


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small Market-style synthetic set (30 + 30 ids), generated once per test session."""
    from fastreid_ext.data.synthetic import generate

    root = tmp_path_factory.mktemp("datasets")
    generate(str(root / "synthetic_market"), domain="market", num_train_ids=30, num_test_ids=30,
             seed=0, progress=False)
    return root


@pytest.fixture(scope="session")
def synthetic_duke_root(tmp_path_factory):
    from fastreid_ext.data.synthetic import generate

    root = tmp_path_factory.mktemp("datasets_duke")
    generate(str(root / "synthetic_duke"), domain="duke", num_train_ids=12, num_test_ids=12,
             seed=1, progress=False)
    return root


@pytest.fixture(scope="session")
def mini_market_root():
    if not (MINI_MARKET / "bounding_box_train").is_dir():
        pytest.skip(f"real mini Market not found at {MINI_MARKET}")
    return MINI_MARKET


def make_cfg(config_file=None, opts=()):
    """FastReID + fastreid-ext config from one of our YAMLs, with KEY VALUE overrides."""
    from fastreid_ext.config import get_ext_cfg, merge_checked

    cfg = get_ext_cfg()
    merge_checked(cfg, str(REPO / config_file) if config_file else "", list(opts))
    return cfg

"""tools/visualize_results.py: ranked lists (+ attributes / attention when the model has them)."""

import sys

import numpy as np
import torch

from conftest import REPO


def test_ranked_lists_skip_same_camera_same_identity():
    sys.path.insert(0, str(REPO / "tools"))
    from visualize_results import ranked_lists

    q = torch.tensor([[1.0, 0.0]])
    g = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    out = ranked_lists(q, g, np.array([5]), np.array([5, 5, 7]), np.array([0]), np.array([0, 1, 1]), topk=2)
    assert out[0].tolist() == [1, 2]  # gallery 0 is the same id in the same camera: skipped


def test_tool_writes_one_png_per_query(synthetic_root, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import visualize_results

    visualize_results.main(["--config-file", str(REPO / "configs/Synthetic/bagtricks_R18.yml"),
                            "--output", str(tmp_path), "--num", "2", "DATASETS.ROOT", str(synthetic_root),
                            "DATALOADER.NUM_WORKERS", "0", "INPUT.SIZE_TEST", "[64, 32]"])
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) == 2 and all(p.stat().st_size > 2000 for p in pngs)


def test_tool_draws_attributes_and_attention_for_aanet(synthetic_root, tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import visualize_results

    visualize_results.main(["--config-file", str(REPO / "configs/Synthetic/aanet_R18.yml"),
                            "--output", str(tmp_path), "--num", "1", "--topk", "3",
                            "DATASETS.ROOT", str(synthetic_root), "DATALOADER.NUM_WORKERS", "0"])
    assert len(list(tmp_path.glob("*.png"))) == 1


def test_attribute_text_marks_mistakes():
    sys.path.insert(0, str(REPO / "tools"))
    from visualize_results import attribute_text

    from fastreid_ext.data.attributes import AttributeSchema

    schema = AttributeSchema(["hat", "age"])
    text = attribute_text(schema, [np.array([0.2, 0.8]), np.array([0.1, 0.7, 0.1, 0.1])], np.array([0, 1]))
    assert "!hat" in text and "age=1" in text and "!age" not in text

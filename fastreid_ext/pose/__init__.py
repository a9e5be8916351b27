"""Offline COCO-17 keypoints for re-id datasets (``tools/make_keypoints.py``; issue 9).

The pieces, lowest first:

* :mod:`.base`: what a pose model gives the runner (``prepare`` a crop in a loader thread, ``predict``
  a batch: keypoints in crop pixels, scores, optionally the model's heatmaps with their heatmap -> crop
  affine) and the model's **identity** (name, weights hash, settings) that every written file records;
* :mod:`.hrnet`: mmpose's HRNet-w32 COCO 256x192, batched, equal to ``mmpose.apis.inference_topdown``;
  :mod:`.mmcv_ops_placeholder` lets mmpose import on ``mmcv-lite`` (no compiled mmcv);
* :mod:`.blazepose`: BlazePose full from the mediapipe wheel on LiteRT (CPU), and its installer;
* :mod:`.runner`: splits of a dataset or folder, 256-image chunks dealt to ``--shard i/n``, resumable
  parts, the merge into ``keypoints/person_keypoints_<split>.json`` (through
  :mod:`fastreid_ext.data.coco_keypoints`) and ``heatmaps_<split>.npy|json``
  (:mod:`fastreid_ext.data.stored_heatmaps`), the summary;
* :mod:`.visualize`: ``--visualize N`` pictures.

Importing this package (or the runner, base, BlazePose modules) loads neither torch nor FastReID;
HRNet, the dataset readers and the pictures load them when used.
"""

"""FastReID's ``ReidEvaluator`` in the project's output mode.

:meth:`fastreid_ext.engine.ExtTrainer.test` runs models through
:class:`~fastreid_ext.engine.inference.InferenceOutputs`, so evaluators receive the model's
``inference`` dict (``"features"`` plus extras). :class:`ExtReidEvaluator` ranks ``"features"`` with
FastReID's evaluator unchanged; a bare feature tensor (FastReID's contract) is accepted as well.
When the model also predicts keypoint heatmaps (RBNet's decoder, ``"heatmaps"``) and the test batches
carry keypoints (``INPUT.EXTRA_FIELDS``), the results add ``PCK@0.1`` over query + gallery
(:func:`fastreid_ext.evaluation.keypoints.pck`, reference length = the crop's height).
"""

from __future__ import annotations

import itertools

from fastreid.evaluation import ReidEvaluator
from fastreid.utils import comm

from .keypoints import heatmap_peaks, pck

__all__ = ["ExtReidEvaluator", "features_of"]


def features_of(outputs):
    """The (B, D) retrieval feature of a model output: the tensor itself, or ``outputs["features"]``."""
    return outputs["features"] if isinstance(outputs, dict) else outputs


class ExtReidEvaluator(ReidEvaluator):
    """FastReID's ReidEvaluator (Rank-k, mAP, mINP, ROC) on ``outputs["features"]``, plus ``PCK@0.1`` of
    predicted keypoint heatmaps when there are any."""

    #: PCK threshold, as a fraction of the crop's height
    PCK_ALPHA = 0.1

    def __init__(self, cfg, num_query, output_dir=None):
        super().__init__(cfg, num_query, output_dir)
        self._pck = []

    def reset(self):
        super().reset()
        self._pck = []

    def process(self, inputs, outputs):
        super().process(inputs, features_of(outputs))
        if isinstance(outputs, dict) and "heatmaps" in outputs and isinstance(inputs, dict) and "keypoints" in inputs:
            H, W = inputs["images"].shape[-2:]
            peaks = heatmap_peaks(outputs["heatmaps"].detach().float().cpu(), (H, W))
            self._pck.append(pck(peaks, inputs["keypoints"].float().cpu(), max(H, W), self.PCK_ALPHA))

    def evaluate(self):
        results = super().evaluate()  # gathers features to rank 0; the others return {}
        counts = self._pck
        if comm.get_world_size() > 1:
            comm.synchronize()
            counts = list(itertools.chain(*comm.gather(self._pck, dst=0)))
            if not comm.is_main_process():
                return {}
        labelled = sum(n for _, n in counts)
        if labelled:
            results[f"PCK@{self.PCK_ALPHA:g}"] = 100.0 * sum(c for c, _ in counts) / labelled
        return results

"""FastReID's ``ReidEvaluator`` in the project's output mode.

:meth:`fastreid_ext.engine.ExtTrainer.test` runs models through
:class:`~fastreid_ext.engine.inference.InferenceOutputs`, so evaluators receive the model's
``inference`` dict (``"features"`` plus extras). :class:`ExtReidEvaluator` ranks ``"features"`` with
FastReID's evaluator unchanged; a bare feature tensor (FastReID's contract) is accepted as well.
"""

from __future__ import annotations

from fastreid.evaluation import ReidEvaluator

__all__ = ["ExtReidEvaluator", "features_of"]


def features_of(outputs):
    """The (B, D) retrieval feature of a model output: the tensor itself, or ``outputs["features"]``."""
    return outputs["features"] if isinstance(outputs, dict) else outputs


class ExtReidEvaluator(ReidEvaluator):
    """FastReID's ReidEvaluator (Rank-k, mAP, mINP, ROC) on ``outputs["features"]``."""

    def process(self, inputs, outputs):
        super().process(inputs, features_of(outputs))

"""Evaluation components of fastreid-ext."""
from .. import compat  # FastReID compatibility patches before any fastreid import
compat.apply()

from .attr_filter import (  # noqa: F401
    UNKNOWN,
    FilteredSearch,
    FullSearch,
    SearchResult,
    compatible_mask,
    confident_classes,
    eval_market1501_filtered,
    evaluate_filtered,
    full_search,
)

from .attr_evaluation import AttrReidEvaluator, filter_report, grouped_probabilities, market_protocol  # noqa: E402,F401

__all__ = ["AttrReidEvaluator", "UNKNOWN", "FilteredSearch", "FullSearch", "SearchResult", "compatible_mask",
           "confident_classes", "eval_market1501_filtered", "evaluate_filtered", "filter_report", "full_search",
           "grouped_probabilities", "market_protocol"]

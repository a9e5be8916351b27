"""Evaluation components of fastreid-ext."""

from .attr_filter import (  # noqa: F401
    UNKNOWN,
    FilteredSearch,
    SearchResult,
    compatible_mask,
    confident_classes,
    evaluate_filtered,
    full_search,
)

from .attr_evaluation import AttrReidEvaluator, filter_report, grouped_probabilities  # noqa: E402,F401

__all__ = ["AttrReidEvaluator", "UNKNOWN", "FilteredSearch", "SearchResult", "compatible_mask", "confident_classes",
           "evaluate_filtered", "filter_report", "full_search", "grouped_probabilities"]

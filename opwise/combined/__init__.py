"""Explain and verify together: counterexample explanations, certified-robustness maps, an HTML report."""

from opwise.combined.certified_map import CertifiedMap, certified_map, patch_masks
from opwise.combined.counterexample import CounterexampleExplanation, explain_counterexample
from opwise.combined.report import ReportSettings, report

__all__ = ["CertifiedMap", "CounterexampleExplanation", "certified_map", "explain_counterexample", "patch_masks", "report", "ReportSettings"]

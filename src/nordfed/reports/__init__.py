"""Study reports: matplotlib figures and tables rendered into one self-contained, offline HTML file.

Building blocks take plain data (dicts or result dataclasses from any producer):

- :mod:`nordfed.reports.plots` — ROC, calibration, Kaplan-Meier (with numbers at risk), coefficient plots;
- :mod:`nordfed.reports.tables` — attrition, validation metrics, risk groups, sites side by side, Cox,
  coefficients, ground truth; suppressed counts render as ``<10``, never as zero;
- :class:`StudyReport` — sections, a summary box and provenance, written atomically to one HTML file;
- :mod:`nordfed.reports.layouts` — the standard PLP and survival study reports.
"""

from nordfed.reports.group_tables import risk_group_table
from nordfed.reports.html import Headline, ReportMetadata, Section, StudyReport
from nordfed.reports.layouts import PlpResults, SurvivalResults, plp_report, survival_report
from nordfed.reports.plots import Chart, coefficient_plot, km_plot
from nordfed.reports.prediction_plots import calibration_plot, roc_plot
from nordfed.reports.tables import (
    SUPPRESSED,
    Column,
    LowerBound,
    Table,
    attrition_table,
    coefficient_table,
    cox_table,
    ground_truth_table,
    sites_side_by_side,
    validation_table,
)

__all__ = [
    "SUPPRESSED", "Chart", "Column", "Headline", "LowerBound", "PlpResults", "ReportMetadata", "Section",
    "StudyReport", "SurvivalResults", "Table", "attrition_table", "calibration_plot", "coefficient_plot",
    "coefficient_table", "cox_table", "ground_truth_table", "km_plot", "plp_report", "risk_group_table",
    "roc_plot", "sites_side_by_side", "survival_report", "validation_table",
]

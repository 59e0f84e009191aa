"""The run report: one self-contained HTML page (plots embedded as PNG) from whatever files a run directory holds."""

from rlhf_ray.reporting.report import REPORT_FILE, build_report, write_report

__all__ = ["REPORT_FILE", "build_report", "write_report"]

"""Reports of trained and tested models: one HTML page, Markdown and JSON."""
from .build import build_report
from .collect import (ReportInputError, collect_run, read_data_summary,
                      read_readers)
from .compare import model_auc_tests, study_table
from .render import render_html, render_markdown

__all__ = [
    'ReportInputError', 'build_report', 'collect_run', 'model_auc_tests',
    'read_data_summary', 'read_readers', 'render_html', 'render_markdown',
    'study_table'
]

"""Diagnosis figures of STB vs SM: accuracy, sensitivity, specificity, F1, AUC.

Importing this package registers :class:`DiagnosisMetric` in MMPreTrain's
``METRICS`` registry, so a config can use ``dict(type='DiagnosisMetric')``.
"""
from .binary_figures import (compute_binary_figures, predict_labels,
                             read_predictions_csv, resolve_positive_index,
                             validate_threshold, write_metrics_json,
                             write_predictions_csv)
from .diagnosis_metric import DiagnosisMetric

__all__ = [
    'DiagnosisMetric',
    'compute_binary_figures',
    'predict_labels',
    'read_predictions_csv',
    'resolve_positive_index',
    'validate_threshold',
    'write_metrics_json',
    'write_predictions_csv',
]

from .patient_level import (aggregate_by_patient, figures_with_intervals,
                            patient_level_figures)
from .statistics import (bootstrap_interval, bootstrap_intervals,
                         delong_interval, delong_test, mcnemar_test,
                         wilson_interval)

__all__ += [
    'aggregate_by_patient',
    'bootstrap_interval',
    'bootstrap_intervals',
    'delong_interval',
    'delong_test',
    'figures_with_intervals',
    'mcnemar_test',
    'patient_level_figures',
    'wilson_interval',
]

from .calibration import brier_score, calibration_summary, reliability_curve
from .readers import (compare_readers, read_reads_csv, reader_figures,
                      readers_markdown, write_reader_comparison)
from .threshold import (apply_threshold, read_threshold_json,
                        write_threshold_json, youden_threshold,
                        youden_threshold_of_records)

__all__ += [
    'apply_threshold',
    'brier_score',
    'calibration_summary',
    'compare_readers',
    'read_reads_csv',
    'read_threshold_json',
    'reader_figures',
    'readers_markdown',
    'reliability_curve',
    'write_reader_comparison',
    'write_threshold_json',
    'youden_threshold',
    'youden_threshold_of_records',
]

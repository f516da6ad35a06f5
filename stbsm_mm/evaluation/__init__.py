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

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

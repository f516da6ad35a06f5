"""Image- and patient-level figures with 95% confidence intervals.

Reads the per-ROI predictions that :class:`DiagnosisMetric` saved and the
patient labels of the prepared dataset, and reports every figure at image
(ROI) level and at patient level side by side, each with its interval:
Wilson for proportions, a bootstrap that resamples patients for AUC, F1
and the macro averages.
"""
import csv
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

from .binary_figures import read_predictions_csv
from .calibration import calibration_summary
from .patient_level import figures_with_intervals, patient_level_figures

PathLike = Union[str, Path]

TABLE_FIGURES = ('accuracy', 'precision', 'sensitivity', 'specificity', 'npv',
                 'f1', 'auc', 'macro_precision', 'macro_sensitivity',
                 'macro_f1')


def read_patient_labels(data_root: PathLike) -> Optional[Dict[str, str]]:
    """Return patient id -> label from ``splits/patients.csv``, if present.

    The label is the patient's diagnosis, or, for a cohort with per-ROI
    labels only, the patient's most frequent ROI label.
    """
    path = Path(data_root) / 'splits' / 'patients.csv'
    if not path.is_file():
        return None
    with open(path, newline='', encoding='utf-8') as file:
        return {row['patient_id']: row['label'] for row in csv.DictReader(file)}


def summarize_predictions(predictions: PathLike,
                          classes: Sequence[str],
                          positive_class,
                          threshold: float = 0.5,
                          patient_labels: Optional[Dict[str, str]] = None,
                          aggregation: str = 'mean',
                          n_resamples: int = 2000,
                          seed: int = 0) -> dict:
    """Compute image- and patient-level figures with intervals.

    Args:
        predictions: A ``predictions.csv`` written by DiagnosisMetric.
        classes: Class names in index order.
        positive_class: Name or index of the positive class.
        threshold: Decision threshold on the positive-class score.
        patient_labels: Patient id -> label; needed when one patient's ROIs
            carry different labels.
        aggregation: How a patient's score is formed from its ROI scores:
            ``'mean'`` or ``'max'``.
        n_resamples: Bootstrap resamples of patients.
        seed: Seed of the bootstrap; the same seed gives the same intervals.

    Returns:
        dict: ``image`` and ``patient`` figures with intervals, the
        patient-level point figures, ``calibration`` (Brier score and
        reliability curve of the positive-class probability at both levels,
        see :func:`~stbsm_mm.evaluation.calibration.calibration_summary`)
        and the settings used.
    """
    records = read_predictions_csv(predictions)
    if patient_labels is not None:
        wanted = {str(record['patient_id']) for record in records}
        patient_labels = {pid: label for pid, label in patient_labels.items()
                          if pid in wanted}
    common = dict(classes=classes, positive_class=positive_class,
                  threshold=threshold)
    image = figures_with_intervals(records, level='image',
                                   n_resamples=n_resamples, seed=seed,
                                   **common)
    patient = figures_with_intervals(records, level='patient',
                                     n_resamples=n_resamples, seed=seed,
                                     method=aggregation,
                                     patient_labels=patient_labels, **common)
    patient_points = patient_level_figures(records, method=aggregation,
                                           patient_labels=patient_labels,
                                           **common)
    calibration = calibration_summary(records, classes, positive_class,
                                      aggregation=aggregation,
                                      patient_labels=patient_labels)
    return {
        'positive_class': positive_class,
        'threshold': threshold,
        'aggregation': aggregation,
        'n_resamples': n_resamples,
        'seed': seed,
        'n_images': len(records),
        'n_patients': patient_points['n_patients'],
        'image': image,
        'patient': patient,
        'patient_figures': patient_points,
        'calibration': calibration,
    }


def summary_markdown(summary: dict) -> str:
    """Return a Markdown table: figure x (image level, patient level)."""
    def cell(entry) -> str:
        if entry is None or entry.get('value') is None:
            return 'undefined'
        text = f'{100 * entry["value"]:.1f}'
        if entry.get('low') is not None and entry.get('high') is not None:
            text += f' ({100 * entry["low"]:.1f}-{100 * entry["high"]:.1f})'
        return text

    lines = [
        f'| figure | image level (n={summary["n_images"]}) | patient level '
        f'(n={summary["n_patients"]}) | interval |',
        '|---|---|---|---|',
    ]
    for name in TABLE_FIGURES:
        image = summary['image'].get(name)
        patient = summary['patient'].get(name)
        method = (image or {}).get('method', '')
        lines.append(f'| {name} | {cell(image)} | {cell(patient)} | '
                     f'{method} |')
    lines.append('')
    lines.append(
        f'Percent with 95% confidence intervals; positive class '
        f'{summary["positive_class"]}, threshold {summary["threshold"]}. '
        f'A patient\'s score is the {summary["aggregation"]} of its ROI '
        f'scores. Bootstrap: {summary["n_resamples"]} resamples of patients, '
        f'seed {summary["seed"]}.')
    calibration = summary.get('calibration')
    if calibration is not None:
        lines.append('')
        lines.append(
            f'Brier score of the {summary["positive_class"]} probability '
            f'(0 is perfect, a constant 0.5 gives 0.25): image level '
            f'{calibration["image"]["brier"]:.4f}, patient level '
            f'{calibration["patient"]["brier"]:.4f}.')
    return '\n'.join(lines) + '\n'

"""Summaries of a patient-grouped cross-validation.

Each fold's validation figures come from its own ``metrics.json``; the
summary reports every figure per fold and as mean and sample standard
deviation over the folds where it is defined. AUC is undefined on a fold
whose validation part holds one class only: such a fold is left out of the
AUC mean (never counted as 0.5 or 1), and the number of folds used is
reported beside each mean.
"""
import math
from typing import Dict, List, Optional, Sequence

from .binary_figures import compute_binary_figures

SUMMARY_FIGURES = ('accuracy', 'precision', 'sensitivity', 'specificity',
                   'f1', 'npv', 'macro_precision', 'macro_sensitivity',
                   'macro_f1', 'auc')


def summarize_folds(fold_figures: Sequence[dict],
                    figures: Sequence[str] = SUMMARY_FIGURES) -> dict:
    """Return per-fold values, mean, standard deviation and folds used.

    Args:
        fold_figures: One figures dict per fold, as written to
            ``metrics.json`` by :class:`~stbsm_mm.evaluation.DiagnosisMetric`
            (undefined figures are ``None``).
        figures: Names of the figures to summarise.

    Returns:
        dict: for each figure, ``{'per_fold': [...], 'mean': m, 'std': s,
        'n_folds_used': k, 'n_folds': n}``. ``std`` is the sample standard
        deviation (``ddof=1``) and ``None`` with fewer than two defined
        folds; ``mean`` is ``None`` when no fold defines the figure.

    Examples:
        >>> summary = summarize_folds([{'auc': 0.8}, {'auc': None},
        ...                            {'auc': 0.6}], figures=['auc'])
        >>> summary['auc']['mean'], summary['auc']['n_folds_used']
        (0.7, 2)
    """
    if not fold_figures:
        raise ValueError('fold_figures is empty; give one dict per fold.')

    summary = {}
    for name in figures:
        values = [fold.get(name) for fold in fold_figures]
        defined = [float(value) for value in values if value is not None]
        mean = math.fsum(defined) / len(defined) if defined else None
        std = None
        if len(defined) > 1:
            std = math.sqrt(
                math.fsum((value - mean)**2 for value in defined) /
                (len(defined) - 1))
        summary[name] = {
            'per_fold': values,
            'mean': mean,
            'std': std,
            'n_folds_used': len(defined),
            'n_folds': len(values),
        }
    return summary


def pooled_figures(records: Sequence[dict], classes: Sequence[str],
                   positive_class, threshold: float = 0.5) -> dict:
    """Compute the figures of the out-of-fold predictions pooled together.

    Args:
        records: Rows of the folds' ``predictions.csv`` files (each ROI of
            the development set appears once, in the fold that held it out).
        classes: Class names in index order.
        positive_class: Name or index of the positive class.
        threshold: Decision threshold on the positive-class score.
    """
    labels = [int(record['label_index']) for record in records]
    scores = [[float(record[f'score_{name}']) for name in classes]
              for record in records]
    return compute_binary_figures(labels, scores, classes, positive_class,
                                  threshold)


def check_out_of_fold(records: Sequence[dict]) -> Optional[List[str]]:
    """Return the roi_ids predicted in more than one fold, or None."""
    seen: Dict[str, int] = {}
    for record in records:
        seen[record['roi_id']] = seen.get(record['roi_id'], 0) + 1
    repeated = sorted(roi for roi, count in seen.items() if count > 1)
    return repeated or None

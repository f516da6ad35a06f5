"""Calibration of the positive-class probability: Brier score and bins.

A calibrated model's images scored 0.8 are positive 80% of the time. The
Brier score (Brier 1950) is the mean squared difference between the
positive-class probability and the outcome (1 for the positive class, 0
otherwise). The reliability curve bins the probabilities and sets each
bin's mean probability beside the fraction of positive images in it. Both
come from scikit-learn (``brier_score_loss`` and
``sklearn.calibration.calibration_curve``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from .binary_figures import (SCORE_PREFIX, _check_classes,
                             resolve_positive_index)
from .patient_level import aggregate_by_patient
from .threshold import _check_binary_inputs

#: Ways to place the bin edges of :func:`reliability_curve`.
BIN_STRATEGIES = ('uniform', 'quantile')


def brier_score(labels: Any, positive_scores: Any) -> float:
    """Compute the Brier score of the positive-class probability.

    Args:
        labels (array-like of bool or int, shape (N,)): 1 or ``True`` for
            an image of the positive class, 0 or ``False`` otherwise.
        positive_scores (array-like of float, shape (N,)): Positive-class
            probability of each image, in [0, 1].

    Returns:
        float: Mean of ``(score - label) ** 2``, in [0, 1]. 0 is perfect,
        and a constant 0.5 scores 0.25.

    Raises:
        ValueError: If the inputs differ in length, are empty, a score lies
            outside [0, 1] or a label is not 0 or 1.

    Examples:
        >>> brier_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5])
        0.115
    """
    labels, positive_scores = _check_binary_inputs(labels, positive_scores)
    return float(brier_score_loss(labels, positive_scores, pos_label=1))


def reliability_curve(labels: Any,
                      positive_scores: Any,
                      n_bins: int = 10,
                      strategy: str = 'uniform') -> dict[str, Any]:
    """Bin the positive-class probabilities and count positives per bin.

    With ``strategy='uniform'`` the bins split [0, 1] into ``n_bins`` equal
    widths. With ``'quantile'`` the edges are quantiles of the scores, so
    the bins hold about the same number of images, and tied scores can
    make some edges equal. A score equal to an inner edge falls into the
    lower bin, as in ``sklearn.calibration.calibration_curve``. Empty bins
    are left out of the per-bin lists.

    Args:
        labels (array-like of bool or int, shape (N,)): 1 or ``True`` for
            an image of the positive class, 0 or ``False`` otherwise.
        positive_scores (array-like of float, shape (N,)): Positive-class
            probability of each image, in [0, 1].
        n_bins (int): Number of bins, at least 1. Defaults to 10.
        strategy (str): ``'uniform'`` or ``'quantile'``. Defaults to
            ``'uniform'``.

    Returns:
        dict[str, Any]: ``n_bins``, ``strategy``, ``bin_edges`` (``n_bins +
        1`` floats), then one entry per non-empty bin in ascending order:
        ``mean_predicted`` (mean score), ``observed_fraction`` (fraction of
        positive images) and ``counts`` (images), and ``brier``, the Brier
        score of all images.

    Raises:
        ValueError: If ``n_bins`` or ``strategy`` is invalid, or as
            :func:`brier_score`.

    Examples:
        >>> curve = reliability_curve([0, 0, 1, 1], [0.1, 0.3, 0.7, 0.9],
        ...                           n_bins=2)
        >>> curve['bin_edges'], curve['counts']
        ([0.0, 0.5, 1.0], [2, 2])
        >>> curve['mean_predicted'], curve['observed_fraction']
        ([0.2, 0.8], [0.0, 1.0])
    """
    labels, positive_scores = _check_binary_inputs(labels, positive_scores)
    if (not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool)
            or n_bins < 1):
        raise ValueError(
            f'n_bins must be a positive integer, got {n_bins!r}. Pass e.g. '
            f'10.')
    if strategy not in BIN_STRATEGIES:
        raise ValueError(
            f'strategy must be one of {BIN_STRATEGIES}, got {strategy!r}.')
    n_bins = int(n_bins)

    observed_fraction, mean_predicted = calibration_curve(
        labels, positive_scores, pos_label=1, n_bins=n_bins,
        strategy=strategy)

    # calibration_curve returns no edges or counts, so they are rebuilt
    # with its own binning rule: searchsorted over the inner edges.
    if strategy == 'uniform':
        bin_edges = np.linspace(0.0, 1.0, n_bins + 1)
    else:
        bin_edges = np.percentile(positive_scores,
                                  np.linspace(0.0, 100.0, n_bins + 1))
    bin_indices = np.searchsorted(bin_edges[1:-1], positive_scores)
    counts = np.bincount(bin_indices, minlength=n_bins)
    counts = counts[counts > 0]

    return {
        'n_bins': n_bins,
        'strategy': strategy,
        'bin_edges': [float(edge) for edge in bin_edges],
        'mean_predicted': [float(value) for value in mean_predicted],
        'observed_fraction': [float(value) for value in observed_fraction],
        'counts': [int(count) for count in counts],
        'brier': brier_score(labels, positive_scores),
    }


def calibration_summary(records: Sequence[Mapping[str, Any]],
                        classes: Sequence[str],
                        positive_class: str | int,
                        aggregation: str = 'mean',
                        patient_labels: Mapping[Any, str | int] | None = None,
                        n_bins: int = 10,
                        strategy: str = 'uniform') -> dict[str, Any]:
    """Compute the Brier score and reliability curve per ROI and per patient.

    Args:
        records (Sequence[Mapping[str, Any]]): Rows of ``predictions.csv``,
            one per ROI.
        classes (Sequence[str]): The two class names in score-column order.
        positive_class (str | int): Name or index of the positive class.
        aggregation (str): How a patient's score is formed from its ROI
            scores, ``'mean'`` or ``'max'``, see
            :func:`~stbsm_mm.evaluation.aggregate_by_patient`.
        patient_labels (Mapping, optional): Patient id -> class name or
            index, see :func:`~stbsm_mm.evaluation.aggregate_by_patient`.
        n_bins (int): Bins of the reliability curves. Defaults to 10.
        strategy (str): Bin placement, see :func:`reliability_curve`.

    Returns:
        dict[str, Any]: ``{'image': {'brier', 'reliability'}, 'patient':
        {'brier', 'reliability'}}``, where ``reliability`` is the output of
        :func:`reliability_curve`.

    Examples:
        >>> rows = [
        ...     dict(patient_id='p1', label_index=0, score_STB=0.9,
        ...          score_SM=0.1),
        ...     dict(patient_id='p1', label_index=0, score_STB=0.5,
        ...          score_SM=0.5),
        ...     dict(patient_id='p2', label_index=1, score_STB=0.2,
        ...          score_SM=0.8),
        ... ]
        >>> result = calibration_summary(rows, ('STB', 'SM'), 'STB')
        >>> round(result['image']['brier'], 4)
        0.1
        >>> round(result['patient']['brier'], 4)
        0.065
    """
    classes = _check_classes(classes)
    positive_index = resolve_positive_index(positive_class, classes)
    patients = aggregate_by_patient(records, classes, method=aggregation,
                                    positive_index=positive_index,
                                    patient_labels=patient_labels)

    column = SCORE_PREFIX + classes[positive_index]
    result = {}
    for level, rows in (('image', records), ('patient', patients)):
        labels = [int(row['label_index']) == positive_index for row in rows]
        scores = [float(row[column]) for row in rows]
        curve = reliability_curve(labels, scores, n_bins=n_bins,
                                  strategy=strategy)
        result[level] = {'brier': curve['brier'], 'reliability': curve}
    return result

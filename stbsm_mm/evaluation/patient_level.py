"""Patient-level figures and figures with confidence intervals.

A patient has several ROIs (lesion crops), and the ROIs of one patient are
not independent. This module aggregates the ROI scores of each patient into
one patient score and computes the diagnostic figures per patient. It also
gives every figure a confidence interval. The proportions get the Wilson
score interval (Wilson 1927), and AUC, F1 and the macro averages get the
percentile bootstrap over patients.

The input is the rows of ``predictions.csv`` as returned by
:func:`~stbsm_mm.evaluation.read_predictions_csv`: mappings with
``patient_id``, ``label_index`` and one ``score_<class>`` value per class.
"""
from __future__ import annotations

import numbers
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.stats import rankdata

from .binary_figures import (SCORE_PREFIX, _check_classes,
                             compute_binary_figures, resolve_positive_index,
                             validate_threshold)
from .statistics import bootstrap_intervals, wilson_interval

#: Ways to turn the ROI scores of a patient into one patient score.
AGGREGATION_METHODS = ('mean', 'max')

#: Levels at which :func:`figures_with_intervals` counts cases.
LEVELS = ('image', 'patient')

#: Proportions from the confusion matrix: figure -> (numerator cells,
#: denominator cells), with cells named by tp, fn, fp and tn.
WILSON_FIGURES = {
    'accuracy': (('tp', 'tn'), ('tp', 'fn', 'fp', 'tn')),
    'precision': (('tp', ), ('tp', 'fp')),
    'sensitivity': (('tp', ), ('tp', 'fn')),
    'specificity': (('tn', ), ('tn', 'fp')),
    'npv': (('tn', ), ('tn', 'fn')),
}

#: Figures whose interval comes from the patient bootstrap.
BOOTSTRAP_FIGURES = ('auc', 'f1', 'macro_precision', 'macro_sensitivity',
                     'macro_f1')


def aggregate_by_patient(
        records: Sequence[Mapping[str, Any]],
        classes: Sequence[str],
        method: str = 'mean',
        positive_index: int = 0,
        patient_labels: Mapping[Any, str | int] | None = None
) -> list[dict[str, Any]]:
    """Aggregate the ROI predictions of each patient into one record.

    With ``method='mean'`` a patient's score of each class is the mean of
    its ROI scores. With ``method='max'`` the positive-class score is the
    maximum over its ROIs ("the patient is positive if any lesion is") and
    the other class gets 1 minus that.

    The patient's label is the label of its ROIs, which must all agree,
    unless ``patient_labels`` gives it.

    Parameters
    ----------
    records : sequence of mapping
        One row of ``predictions.csv`` per ROI, with ``patient_id``,
        ``label_index`` (index into ``classes``) and ``score_<class>`` for
        both classes. ``site`` is optional.
    classes : sequence of str
        The two class names in score-column order, e.g. ``('STB', 'SM')``.
    method : {'mean', 'max'}, default='mean'
        How the ROI scores of a patient are combined.
    positive_index : int, default=0
        Index in ``classes`` of the class whose score ``'max'`` takes.
    patient_labels : mapping, optional
        Patient id -> class name or index. When given, it sets every
        patient's label, and it must cover every patient in ``records``.

    Returns
    -------
    list of dict
        One record per patient, in order of first appearance, with
        ``patient_id``, ``site`` (``None`` when its ROIs name different
        sites), ``label``, ``label_index``, ``score_<class>`` for both
        classes and ``n_rois``.

    Raises
    ------
    ValueError
        If a record lacks a column, ``method`` is unknown, or the ROIs of a
        patient carry different labels and ``patient_labels`` is not given.
        The message names the patient.

    Examples
    --------
    >>> rows = [
    ...     dict(patient_id='p1', label_index=0, score_STB=0.9, score_SM=0.1),
    ...     dict(patient_id='p1', label_index=0, score_STB=0.5, score_SM=0.5),
    ...     dict(patient_id='p2', label_index=1, score_STB=0.2, score_SM=0.8),
    ... ]
    >>> patients = aggregate_by_patient(rows, ('STB', 'SM'))
    >>> [(p['patient_id'], p['score_STB'], p['n_rois']) for p in patients]
    [('p1', 0.7, 2), ('p2', 0.2, 1)]
    >>> by_max = aggregate_by_patient(rows, ('STB', 'SM'), method='max')
    >>> by_max[0]['score_STB'], by_max[0]['n_rois']
    (0.9, 2)
    """
    classes = _check_classes(classes)
    if method not in AGGREGATION_METHODS:
        raise ValueError(
            f'method must be one of {AGGREGATION_METHODS}, got {method!r}.')
    positive_index = _check_positive_index(positive_index)
    labels, scores, patient_ids = _read_records(records, classes)

    # Group the ROIs by patient in order of first appearance.
    rows_of_patient: dict[Any, list[int]] = {}
    for row, patient_id in enumerate(patient_ids):
        rows_of_patient.setdefault(patient_id, []).append(row)

    if patient_labels is not None:
        patient_label_indices = _resolve_patient_labels(
            patient_labels, list(rows_of_patient), classes)

    patients = []
    for patient_id, rows in rows_of_patient.items():
        if patient_labels is not None:
            label_index = patient_label_indices[patient_id]
        else:
            label_index = _single_label(patient_id, labels[rows], classes)

        patient_scores = scores[rows]
        if method == 'mean':
            aggregated = patient_scores.mean(axis=0)
        else:
            aggregated = np.empty(2)
            positive_scores = patient_scores[:, positive_index]
            aggregated[positive_index] = positive_scores.max()
            aggregated[1 - positive_index] = 1.0 - aggregated[positive_index]

        sites = {records[row].get('site') for row in rows}
        patient = {
            'patient_id': patient_id,
            'site': sites.pop() if len(sites) == 1 else None,
            'label': classes[label_index],
            'label_index': label_index,
        }
        for index, name in enumerate(classes):
            patient[SCORE_PREFIX + name] = float(aggregated[index])
        patient['n_rois'] = len(rows)
        patients.append(patient)
    return patients


def patient_level_figures(
        records: Sequence[Mapping[str, Any]],
        classes: Sequence[str],
        positive_class: str | int,
        threshold: float = 0.5,
        method: str = 'mean',
        patient_labels: Mapping[Any, str | int] | None = None
) -> dict[str, Any]:
    """Compute the diagnostic figures with one case per patient.

    The ROI predictions are aggregated with :func:`aggregate_by_patient`,
    and :func:`~stbsm_mm.evaluation.compute_binary_figures` counts each
    patient once, so a patient with many ROIs weighs no more than one with
    a single ROI.

    Parameters
    ----------
    records : sequence of mapping
        Rows of ``predictions.csv``, one per ROI.
    classes : sequence of str
        The two class names in score-column order.
    positive_class : str or int
        Name or index of the class that counts as positive.
    threshold : float, default=0.5
        Decision threshold on the patient's positive-class score.
    method : {'mean', 'max'}, default='mean'
        How the ROI scores of a patient are combined.
    patient_labels : mapping, optional
        Patient id -> class name or index, see :func:`aggregate_by_patient`.

    Returns
    -------
    dict
        The figures of :func:`~stbsm_mm.evaluation.compute_binary_figures`,
        where ``n_images`` counts patients, plus ``n_patients``, ``n_rois``,
        ``level`` (``'patient'``) and ``aggregation`` (``method``).

    Examples
    --------
    >>> rows = [
    ...     dict(patient_id='p1', label_index=0, score_STB=0.9, score_SM=0.1),
    ...     dict(patient_id='p1', label_index=0, score_STB=0.3, score_SM=0.7),
    ...     dict(patient_id='p2', label_index=1, score_STB=0.2, score_SM=0.8),
    ... ]
    >>> figures = patient_level_figures(rows, ('STB', 'SM'), 'STB')
    >>> figures['n_patients'], figures['sensitivity'], figures['specificity']
    (2, 1.0, 1.0)
    """
    classes = _check_classes(classes)
    positive_index = resolve_positive_index(positive_class, classes)
    patients = aggregate_by_patient(records, classes, method=method,
                                    positive_index=positive_index,
                                    patient_labels=patient_labels)

    labels, scores, _ = _read_records(patients, classes)
    figures = compute_binary_figures(labels, scores, classes, positive_index,
                                     threshold=threshold)
    figures.update(n_patients=len(patients),
                   n_rois=sum(patient['n_rois'] for patient in patients),
                   level='patient', aggregation=method)
    return figures


def figures_with_intervals(
        records: Sequence[Mapping[str, Any]],
        classes: Sequence[str],
        positive_class: str | int,
        threshold: float = 0.5,
        n_resamples: int = 2000,
        seed: int | None = 0,
        level: str = 'image',
        confidence: float = 0.95,
        method: str = 'mean',
        patient_labels: Mapping[Any, str | int] | None = None
) -> dict[str, dict[str, Any]]:
    """Compute every diagnostic figure with a confidence interval.

    Accuracy, precision, sensitivity, specificity and NPV are proportions
    of confusion-matrix cells and get the Wilson score interval (Wilson
    1927). AUC, F1 and the macro averages are no simple proportions and get
    the percentile bootstrap that resamples patients (Efron & Tibshirani
    1993), see :func:`~stbsm_mm.evaluation.statistics.bootstrap_interval`.

    NOTE: at ``level='image'`` the Wilson intervals treat the ROIs as
    independent. ROIs of one patient are correlated, so these intervals are
    too narrow when patients have several ROIs. The patient-bootstrap
    intervals allow for this, and ``level='patient'`` avoids it.

    Parameters
    ----------
    records : sequence of mapping
        Rows of ``predictions.csv``, one per ROI, each with a
        ``patient_id``.
    classes : sequence of str
        The two class names in score-column order.
    positive_class : str or int
        Name or index of the class that counts as positive.
    threshold : float, default=0.5
        Decision threshold on the positive-class score.
    n_resamples : int, default=2000
        Number of bootstrap resamples.
    seed : int or None, default=0
        Seed of the bootstrap. The same seed gives the same intervals.
    level : {'image', 'patient'}, default='image'
        ``'image'`` counts each ROI as a case. ``'patient'`` first
        aggregates the ROIs of each patient with :func:`aggregate_by_patient`.
    confidence : float, default=0.95
        Confidence level in (0, 1).
    method : {'mean', 'max'}, default='mean'
        Aggregation of ROI scores at ``level='patient'``.
    patient_labels : mapping, optional
        Patient labels at ``level='patient'``, see
        :func:`aggregate_by_patient`.

    Returns
    -------
    dict
        Figure name -> ``{'value', 'low', 'high', 'method', 'confidence'}``
        for accuracy, precision, sensitivity, specificity, npv, auc, f1,
        macro_precision, macro_sensitivity and macro_f1. ``method`` is
        ``'wilson'`` (with ``successes`` and ``total``) or ``'bootstrap
        (patients)'`` (with ``n_valid``, ``n_resamples`` and
        ``n_patients``). An undefined figure has ``None`` as value and
        bounds.

    Examples
    --------
    >>> rows = [dict(patient_id=f'p{i // 2}', label_index=i % 2,
    ...              score_STB=s, score_SM=1 - s)
    ...         for i, s in enumerate([.9, .2, .7, .4, .3, .6, .8, .1])]
    >>> result = figures_with_intervals(rows, ('STB', 'SM'), 'STB',
    ...                                 n_resamples=200)
    >>> result['sensitivity']['method'], result['auc']['method']
    ('wilson', 'bootstrap (patients)')
    >>> result['sensitivity']['successes'], result['sensitivity']['total']
    (3, 4)
    """
    classes = _check_classes(classes)
    positive_index = resolve_positive_index(positive_class, classes)
    threshold = validate_threshold(threshold)
    if level not in LEVELS:
        raise ValueError(f'level must be one of {LEVELS}, got {level!r}.')

    if level == 'patient':
        records = aggregate_by_patient(records, classes, method=method,
                                       positive_index=positive_index,
                                       patient_labels=patient_labels)
    labels, scores, patient_ids = _read_records(records, classes)
    figures = compute_binary_figures(labels, scores, classes, positive_index,
                                     threshold=threshold)

    results = {}
    for name, (numerator, denominator) in WILSON_FIGURES.items():
        successes = sum(figures[cell] for cell in numerator)
        total = sum(figures[cell] for cell in denominator)
        low, high = wilson_interval(successes, total, confidence)
        results[name] = {
            'value': figures[name],
            'low': low,
            'high': high,
            'method': 'wilson',
            'confidence': float(confidence),
            'successes': successes,
            'total': total,
        }

    intervals = bootstrap_intervals(
        labels, scores, patient_ids,
        statistic=lambda sample_labels, sample_scores: _resample_figures(
            sample_labels, sample_scores, positive_index, threshold),
        n_resamples=n_resamples, confidence=confidence, seed=seed)
    for name in BOOTSTRAP_FIGURES:
        interval = intervals[name]
        undefined = figures[name] is None
        results[name] = {
            'value': figures[name],
            'low': None if undefined else interval['low'],
            'high': None if undefined else interval['high'],
            'method': 'bootstrap (patients)',
            'confidence': float(confidence),
            'n_valid': interval['n_valid'],
            'n_resamples': interval['n_resamples'],
            'n_patients': interval['n_patients'],
        }
    return results


def _resample_figures(labels: np.ndarray, scores: np.ndarray,
                      positive_index: int,
                      threshold: float) -> dict[str, float | None]:
    """Compute the bootstrap figures as compute_binary_figures does.

    The confusion counts and a rank-sum AUC replace the nine scikit-learn
    calls of compute_binary_figures, which dominate the time of thousands
    of resamples. The rules are the same. F1 of a class is undefined only
    when the class has no true and no predicted case, and a macro average
    is undefined when either class's figure is.
    """
    is_positive = labels == positive_index
    predicted_positive = scores[:, positive_index] >= threshold
    tp = int(np.sum(is_positive & predicted_positive))
    fn = int(np.sum(is_positive & ~predicted_positive))
    fp = int(np.sum(~is_positive & predicted_positive))
    tn = int(np.sum(~is_positive & ~predicted_positive))

    precision = (_ratio(tp, tp + fp), _ratio(tn, tn + fn))
    recall = (_ratio(tp, tp + fn), _ratio(tn, tn + fp))
    f1 = (_ratio(2 * tp, 2 * tp + fp + fn), _ratio(2 * tn, 2 * tn + fn + fp))

    n_positive, n_negative = tp + fn, tn + fp
    auc = None
    if n_positive and n_negative:
        # Mann-Whitney U over the positive-class score equals the ROC AUC,
        # with ties counted one half.
        ranks = rankdata(scores[:, positive_index])
        rank_sum = ranks[is_positive].sum()
        auc = float((rank_sum - n_positive * (n_positive + 1) / 2) /
                    (n_positive * n_negative))

    return {
        'auc': auc,
        'f1': f1[0],
        'macro_precision': _mean_if_defined(precision),
        'macro_sensitivity': _mean_if_defined(recall),
        'macro_f1': _mean_if_defined(f1),
    }


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def _mean_if_defined(values: tuple[float | None, float | None]
                     ) -> float | None:
    if None in values:
        return None
    return (values[0] + values[1]) / 2.0


def _read_records(records: Sequence[Mapping[str, Any]],
                  classes: tuple[str, ...]
                  ) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """Return label indices (N,), scores (N, 2) and patient ids of rows."""
    if isinstance(records, Mapping) or not isinstance(records, Sequence):
        raise ValueError(
            f'records must be a sequence of rows of predictions.csv, got '
            f'{type(records).__name__}. Read them with read_predictions_csv.')
    if len(records) == 0:
        raise ValueError('records is empty, but at least one ROI is needed.')

    score_columns = [SCORE_PREFIX + name for name in classes]
    labels, scores, patient_ids = [], [], []
    for row, record in enumerate(records):
        missing = [
            column for column in ('patient_id', 'label_index', *score_columns)
            if column not in record
        ]
        if missing:
            raise ValueError(
                f'records[{row}] lacks the columns {missing}, got '
                f'{list(record)}. Pass rows of predictions.csv for the '
                f'classes {classes}.')
        if record['patient_id'] in (None, ''):
            raise ValueError(
                f'records[{row}] has no patient_id (roi_id '
                f'{record.get("roi_id")!r}). Every ROI needs its patient for '
                f'patient-level figures and the patient bootstrap.')
        label_index = record['label_index']
        if (not isinstance(label_index, numbers.Integral)
                or isinstance(label_index, bool) or label_index not in (0, 1)):
            raise ValueError(
                f'records[{row}]["label_index"] must be 0 or 1, got '
                f'{label_index!r}.')
        labels.append(int(label_index))
        scores.append([float(record[column]) for column in score_columns])
        patient_ids.append(record['patient_id'])
    return np.asarray(labels), np.asarray(scores), patient_ids


def _check_positive_index(positive_index: int) -> int:
    is_index = (isinstance(positive_index, numbers.Integral)
                and not isinstance(positive_index, bool))
    if not is_index or positive_index not in (0, 1):
        raise ValueError(
            f'positive_index must be 0 or 1, got {positive_index!r}. Pass '
            f'the index of the positive class in classes.')
    return int(positive_index)


def _resolve_patient_labels(patient_labels: Mapping[Any, str | int],
                            patient_ids: list[Any],
                            classes: tuple[str, ...]) -> dict[Any, int]:
    if not isinstance(patient_labels, Mapping):
        raise ValueError(
            f'patient_labels must be a mapping from patient id to class, got '
            f'{type(patient_labels).__name__}.')
    missing = [
        patient_id for patient_id in patient_ids
        if patient_id not in patient_labels
    ]
    if missing:
        raise ValueError(
            f'patient_labels lacks the patients {missing[:10]}. Give a '
            f'label for every patient in records.')
    label_indices = {}
    for patient_id in patient_ids:
        label = patient_labels[patient_id]
        if label in classes:
            label_indices[patient_id] = classes.index(label)
        elif (isinstance(label, numbers.Integral)
              and not isinstance(label, bool) and label in (0, 1)):
            label_indices[patient_id] = int(label)
        else:
            raise ValueError(
                f'patient_labels[{patient_id!r}] must be one of the classes '
                f'{classes} or its index 0 or 1, got {label!r}.')
    return label_indices


def _single_label(patient_id: Any, labels: np.ndarray,
                  classes: tuple[str, ...]) -> int:
    distinct = sorted(set(labels.tolist()))
    if len(distinct) > 1:
        raise ValueError(
            f'patient {patient_id!r} has ROIs with different labels '
            f'{[classes[index] for index in distinct]}, so it has no single '
            f'patient label. Pass patient_labels to set each patient\'s '
            f'label, e.g. the diagnosis from patients.csv.')
    return distinct[0]

"""Confidence intervals and paired tests for a diagnostic evaluation.

The methods and their sources:

* :func:`wilson_interval`: Wilson score interval of a proportion (Wilson
  1927), for accuracy, sensitivity, specificity, precision and NPV.
* :func:`bootstrap_interval` and :func:`bootstrap_intervals`: percentile
  bootstrap (Efron & Tibshirani 1993) that resamples patients, not ROIs, so
  that the ROIs of one patient stay together as they are not independent.
* :func:`delong_test` and :func:`delong_interval`: DeLong, DeLong &
  Clarke-Pearson (1988) variance of correlated ROC AUCs from placement
  values (structural components).
* :func:`mcnemar_test`: McNemar (1947) test of paired correctness, e.g. the
  model and a radiologist reading the same images.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

import numpy as np
from mmengine.logging import MMLogger
from scipy.stats import binomtest, chi2, norm, rankdata

#: Number of discordant pairs (b + c) below which :func:`mcnemar_test` uses
#: the exact binomial test by default. The cut-off is a common rule of thumb
#: for where the chi-square approximation of McNemar's statistic is poor.
MCNEMAR_EXACT_BELOW = 25


def wilson_interval(successes: int,
                    total: int,
                    confidence: float = 0.95
                    ) -> tuple[float | None, float | None]:
    """Compute the Wilson score interval of a proportion.

    The interval is the set of proportions that a two-sided score test at
    level ``1 - confidence`` does not reject (Wilson 1927, "Probable
    inference, the law of succession, and statistical inference", JASA 22).
    Newcombe (1998, Statistics in Medicine 17) lists it as method 3 of his
    comparison of single-proportion intervals. Unlike the Wald
    interval it stays inside [0, 1] and keeps its coverage near 0 and 1,
    which matters for the sensitivity of a small cohort.

    Parameters
    ----------
    successes : int
        Number of successes, e.g. true positives for sensitivity.
    total : int
        Number of trials, e.g. all images of the positive class.
    confidence : float, default=0.95
        Confidence level in (0, 1).

    Returns
    -------
    tuple of (float or None, float or None)
        ``(low, high)``, or ``(None, None)`` when ``total`` is 0 and the
        proportion is undefined.

    Raises
    ------
    ValueError
        If ``successes`` or ``total`` is not a non-negative integer, if
        ``successes > total`` or if ``confidence`` is not in (0, 1).

    Examples
    --------
    >>> low, high = wilson_interval(81, 263)
    >>> round(low, 4), round(high, 4)
    (0.2553, 0.3662)
    >>> wilson_interval(0, 0)
    (None, None)
    """
    successes = _check_count(successes, 'successes')
    total = _check_count(total, 'total')
    if successes > total:
        raise ValueError(
            f'successes must not exceed total, got successes={successes} '
            f'and total={total}.')
    z = _two_sided_quantile(confidence)

    if total == 0:
        return None, None

    proportion = successes / total
    z_squared = z * z
    denominator = 1.0 + z_squared / total
    centre = (proportion + z_squared / (2.0 * total)) / denominator
    half_width = (z / denominator) * math.sqrt(
        proportion * (1.0 - proportion) / total
        + z_squared / (4.0 * total * total))

    # Set the bounds at 0 and 1 exactly, since the formula leaves a rounding
    # error of about 1e-17 there.
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == total else min(1.0, centre + half_width)
    return low, high


def bootstrap_interval(labels: Any,
                       scores: Any,
                       patient_ids: Any,
                       statistic: Callable[[np.ndarray, np.ndarray], Any],
                       n_resamples: int = 2000,
                       confidence: float = 0.95,
                       seed: int | None = 0) -> dict[str, Any]:
    """Compute a percentile bootstrap interval that resamples patients.

    Each resample draws as many patients as there are, with replacement, and
    keeps all ROIs of every drawn patient (cluster bootstrap). ROIs of one
    patient are correlated, so resampling single ROIs would give intervals
    that are too narrow. The interval is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles of the statistic over the
    resamples on which it is defined (percentile method, Efron &
    Tibshirani 1993, "An Introduction to the Bootstrap", chapter 13).

    NOTE: with few patients (the demo cohort has 13) the coverage of the
    percentile bootstrap falls below ``confidence``. Report the number of
    patients together with the interval.

    Parameters
    ----------
    labels : array-like, shape (N,)
        True label of each ROI.
    scores : array-like, shape (N, ...)
        Scores of each ROI, e.g. class probabilities of shape (N, 2).
    patient_ids : array-like, shape (N,)
        Patient of each ROI. ROIs with the same id are resampled together.
    statistic : callable
        ``statistic(labels, scores)`` returns a float, or ``None`` or NaN
        when it is undefined on a resample (e.g. AUC with one class only).
    n_resamples : int, default=2000
        Number of bootstrap resamples.
    confidence : float, default=0.95
        Confidence level in (0, 1).
    seed : int or None, default=0
        Seed of ``numpy.random.default_rng``. The same seed gives the same
        interval.

    Returns
    -------
    dict
        ``low`` and ``high`` (``None`` when no resample is valid),
        ``estimate`` (the statistic on the full sample), ``n_valid`` (the
        resamples on which the statistic is defined), ``n_resamples``,
        ``n_patients`` and ``confidence``.

    Examples
    --------
    >>> from sklearn.metrics import roc_auc_score
    >>> def auc(labels, scores):
    ...     if len(set(labels)) < 2:
    ...         return None
    ...     return roc_auc_score(labels, scores)
    >>> result = bootstrap_interval(
    ...     labels=[0, 1, 0, 1, 1, 0], scores=[.2, .9, .4, .6, .3, .1],
    ...     patient_ids=['a', 'a', 'b', 'b', 'c', 'c'], statistic=auc,
    ...     n_resamples=200)
    >>> result['n_valid'] <= result['n_resamples'] == 200
    True
    """
    if not callable(statistic):
        raise ValueError(
            f'statistic must be callable as statistic(labels, scores), got '
            f'{statistic!r}.')
    results = bootstrap_intervals(
        labels, scores, patient_ids,
        statistic=lambda sample_labels, sample_scores: {
            'statistic': statistic(sample_labels, sample_scores)
        },
        n_resamples=n_resamples, confidence=confidence, seed=seed)
    return results['statistic']


def bootstrap_intervals(
        labels: Any,
        scores: Any,
        patient_ids: Any,
        statistic: Callable[[np.ndarray, np.ndarray], Mapping[str, Any]],
        n_resamples: int = 2000,
        confidence: float = 0.95,
        seed: int | None = 0) -> dict[str, dict[str, Any]]:
    """Compute patient-bootstrap intervals of several statistics at once.

    The same as :func:`bootstrap_interval`, but ``statistic`` returns a
    mapping from names to values, and every name gets its interval from the
    same resamples. This costs one pass over the resamples for all figures.

    Parameters
    ----------
    labels, scores, patient_ids, n_resamples, confidence, seed
        As in :func:`bootstrap_interval`.
    statistic : callable
        ``statistic(labels, scores)`` returns a mapping from names to a
        float, or to ``None`` or NaN where a value is undefined.

    Returns
    -------
    dict
        One result of :func:`bootstrap_interval` per name.

    Examples
    --------
    >>> import numpy as np
    >>> results = bootstrap_intervals(
    ...     labels=[0, 1, 1, 0], scores=[.1, .8, .7, .4],
    ...     patient_ids=[1, 1, 2, 3],
    ...     statistic=lambda labels, scores: {
    ...         'mean_label': np.mean(labels), 'max_score': np.max(scores)},
    ...     n_resamples=100)
    >>> sorted(results)
    ['max_score', 'mean_label']
    """
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    patient_ids = np.asarray(patient_ids)
    _check_same_length(labels, scores, patient_ids)
    if not callable(statistic):
        raise ValueError(
            f'statistic must be callable as statistic(labels, scores), got '
            f'{statistic!r}.')
    n_resamples = _check_count(n_resamples, 'n_resamples', minimum=1)
    _two_sided_quantile(confidence)

    # Group the ROI indices by patient once. A resample draws patients and
    # concatenates their ROI indices.
    _, patient_of_roi = np.unique(patient_ids, return_inverse=True)
    rois_of_patient = [
        np.flatnonzero(patient_of_roi == patient)
        for patient in range(patient_of_roi.max() + 1)
    ]
    n_patients = len(rois_of_patient)

    estimates = _as_value_mapping(statistic(labels, scores))
    values: dict[str, list[float]] = {name: [] for name in estimates}

    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        drawn = rng.integers(0, n_patients, size=n_patients)
        indices = np.concatenate([rois_of_patient[i] for i in drawn])
        resample = _as_value_mapping(
            statistic(labels[indices], scores[indices]))
        for name in values:
            value = resample.get(name)
            if value is not None:
                values[name].append(value)

    tail = 100.0 * (1.0 - confidence) / 2.0
    results = {}
    for name, valid in values.items():
        low = high = None
        if valid:
            low, high = np.percentile(valid, [tail, 100.0 - tail])
            low, high = float(low), float(high)
        if len(valid) < n_resamples:
            MMLogger.get_current_instance().warning(
                f'Bootstrap of {name}: undefined on '
                f'{n_resamples - len(valid)} of {n_resamples} resamples of '
                f'{n_patients} patients. The interval uses the '
                f'{len(valid)} valid resamples.')
        results[name] = {
            'estimate': estimates[name],
            'low': low,
            'high': high,
            'n_valid': len(valid),
            'n_resamples': n_resamples,
            'n_patients': n_patients,
            'confidence': float(confidence),
        }
    return results


def delong_test(labels: Any,
                scores_a: Any,
                scores_b: Any,
                positive_label: Any = 1) -> dict[str, Any]:
    """Test whether two correlated ROC AUCs on the same images differ.

    Implements DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas
    under two or more correlated receiver operating characteristic curves:
    a nonparametric approach", Biometrics 44(3). For each positive image
    the placement value ``V10`` is the fraction of negative images it
    outscores (ties count one half), and for each negative image ``V01``
    is the fraction of positive images that outscore it. The AUC is the
    mean of ``V10``. The variance of ``AUC_a - AUC_b`` is
    ``var(V10_a - V10_b) / m + var(V01_a - V01_b) / n`` with ``m``
    positive and ``n`` negative images and sample variances (ddof 1). The
    placement values come from midranks, in O(N log N).

    Parameters
    ----------
    labels : array-like, shape (N,)
        True label of each image.
    scores_a, scores_b : array-like of float, shape (N,)
        Scores of the two raters (e.g. two models) for the positive class on
        the same images. Higher means more likely positive.
    positive_label : default=1
        The label value of the positive class.

    Returns
    -------
    dict
        ``auc_a``, ``auc_b``, ``difference`` (``auc_a - auc_b``),
        ``variance_a``, ``variance_b``, ``covariance``,
        ``variance_difference``, ``z``, ``p_value`` (two-sided, normal
        approximation), ``n_positive`` and ``n_negative``. When the
        variance of the difference is 0, ``z`` is 0 and ``p_value`` is 1 if
        the difference is 0 (e.g. identical scores), and both are ``None``
        otherwise, since a z of infinity is no honest p-value.

    Raises
    ------
    ValueError
        If the arrays differ in length, a score is not finite, or there
        are fewer than two positive or two negative images.

    Examples
    --------
    >>> result = delong_test([0, 0, 0, 1, 1, 1],
    ...                      [.1, .4, .35, .8, .7, .3],
    ...                      [.2, .1, .5, .6, .9, .4])
    >>> round(result['auc_a'], 4), round(result['auc_b'], 4)
    (0.7778, 0.8889)
    """
    is_positive = _check_binary_labels(labels, positive_label)
    scores = np.stack([
        _check_scores_1d(scores_a, 'scores_a', len(is_positive)),
        _check_scores_1d(scores_b, 'scores_b', len(is_positive)),
    ])

    v10, v01 = _placement_values(is_positive, scores)
    n_positive, n_negative = v10.shape[1], v01.shape[1]

    auc = v10.mean(axis=1)
    covariance = (np.cov(v10) / n_positive + np.cov(v01) / n_negative)
    # The variance of the difference comes from the placement-value
    # differences directly, so identical scores give exactly 0.
    variance_difference = (np.var(v10[0] - v10[1], ddof=1) / n_positive +
                           np.var(v01[0] - v01[1], ddof=1) / n_negative)
    difference = float(auc[0] - auc[1])

    if variance_difference > 0.0:
        z = difference / math.sqrt(variance_difference)
        p_value = float(2.0 * norm.sf(abs(z)))
    elif difference == 0.0:
        z, p_value = 0.0, 1.0
    else:
        z = p_value = None

    return {
        'auc_a': float(auc[0]),
        'auc_b': float(auc[1]),
        'difference': difference,
        'variance_a': float(covariance[0, 0]),
        'variance_b': float(covariance[1, 1]),
        'covariance': float(covariance[0, 1]),
        'variance_difference': float(variance_difference),
        'z': None if z is None else float(z),
        'p_value': p_value,
        'n_positive': int(n_positive),
        'n_negative': int(n_negative),
        'method': 'DeLong, DeLong & Clarke-Pearson (1988)',
    }


def delong_interval(labels: Any,
                    scores: Any,
                    confidence: float = 0.95,
                    positive_label: Any = 1) -> dict[str, Any]:
    """Compute a confidence interval of one ROC AUC from DeLong's variance.

    The interval is ``AUC -/+ z * sqrt(variance)`` with the variance of
    DeLong, DeLong & Clarke-Pearson (1988), clipped to [0, 1].

    NOTE: this Wald interval on the AUC scale assumes independent images
    and is too narrow near AUC 1 and with few images. The patient bootstrap
    (:func:`bootstrap_interval`) also allows for ROIs of one patient.

    Parameters
    ----------
    labels : array-like, shape (N,)
        True label of each image.
    scores : array-like of float, shape (N,)
        Positive-class score of each image.
    confidence : float, default=0.95
        Confidence level in (0, 1).
    positive_label : default=1
        The label value of the positive class.

    Returns
    -------
    dict
        ``auc``, ``low``, ``high``, ``variance`` and ``confidence``.

    Examples
    --------
    >>> result = delong_interval([0, 0, 0, 1, 1, 1],
    ...                          [.1, .4, .35, .8, .7, .3])
    >>> result['low'] < result['auc'] < result['high']
    True
    """
    z_quantile = _two_sided_quantile(confidence)
    is_positive = _check_binary_labels(labels, positive_label)
    scores = _check_scores_1d(scores, 'scores', len(is_positive))[None, :]

    v10, v01 = _placement_values(is_positive, scores)
    auc = float(v10.mean())
    variance = float(np.var(v10, ddof=1) / v10.shape[1] +
                     np.var(v01, ddof=1) / v01.shape[1])
    half_width = z_quantile * math.sqrt(variance)

    return {
        'auc': auc,
        'low': max(0.0, auc - half_width),
        'high': min(1.0, auc + half_width),
        'variance': variance,
        'confidence': float(confidence),
    }


def mcnemar_test(correct_a: Any,
                 correct_b: Any,
                 exact: bool | None = None) -> dict[str, Any]:
    """Test whether two raters on the same images differ in accuracy.

    McNemar (1947), "Note on the sampling error of the difference between
    correlated proportions or percentages", Psychometrika 12(2). Only the
    discordant images count: ``b`` images that rater A got right and rater
    B wrong, and ``c`` the other way round. Under the null hypothesis each
    discordant image is A's with probability 1/2.

    The exact test is the two-sided binomial test of ``b`` out of ``b + c``
    at 1/2 (``scipy.stats.binomtest``). The asymptotic test is the
    chi-square statistic with continuity correction (Edwards 1948),
    ``(max(|b - c| - 1, 0))^2 / (b + c)``, with one degree of freedom. By
    default the exact test is used when ``b + c < MCNEMAR_EXACT_BELOW``
    (25), where the chi-square approximation is poor, and the chi-square
    test otherwise.

    Parameters
    ----------
    correct_a, correct_b : array-like of bool, shape (N,)
        Whether each rater (e.g. the model and a radiologist) got each
        image right, in the same image order.
    exact : bool or None, default=None
        ``True`` for the exact binomial test, ``False`` for chi-square,
        ``None`` to choose by ``b + c`` as above.

    Returns
    -------
    dict
        ``b``, ``c``, ``statistic`` (``min(b, c)`` for the exact test, the
        chi-square value otherwise), ``p_value`` (1 when ``b + c`` is 0)
        and ``method`` (``'exact binomial'`` or
        ``'chi-square with continuity correction'``).

    Examples
    --------
    >>> result = mcnemar_test([True] * 10 + [False] * 2,
    ...                       [False] * 10 + [True] * 2)
    >>> result['b'], result['c'], result['method']
    (10, 2, 'exact binomial')
    >>> round(result['p_value'], 4)
    0.0386
    """
    correct_a = _check_bool_vector(correct_a, 'correct_a')
    correct_b = _check_bool_vector(correct_b, 'correct_b')
    if len(correct_a) != len(correct_b):
        raise ValueError(
            f'correct_a and correct_b must have one entry per image, got '
            f'{len(correct_a)} and {len(correct_b)}. Pass both raters\' '
            f'results on the same images in the same order.')
    if exact is not None and not isinstance(exact, bool):
        raise ValueError(f'exact must be True, False or None, got {exact!r}.')

    b = int(np.sum(correct_a & ~correct_b))
    c = int(np.sum(~correct_a & correct_b))
    n_discordant = b + c
    if exact is None:
        exact = n_discordant < MCNEMAR_EXACT_BELOW

    if exact:
        method = 'exact binomial'
        statistic = float(min(b, c))
        p_value = (1.0 if n_discordant == 0 else
                   float(binomtest(b, n_discordant, 0.5).pvalue))
    else:
        method = 'chi-square with continuity correction'
        if n_discordant == 0:
            statistic, p_value = 0.0, 1.0
        else:
            statistic = max(abs(b - c) - 1, 0)**2 / n_discordant
            p_value = float(chi2.sf(statistic, df=1))

    return {
        'b': b,
        'c': c,
        'statistic': float(statistic),
        'p_value': p_value,
        'method': method,
    }


def _placement_values(is_positive: np.ndarray,
                      scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return V10 (k, m) and V01 (k, n) for k score rows."""
    n_positive = int(is_positive.sum())
    n_negative = len(is_positive) - n_positive

    v10 = np.empty((len(scores), n_positive))
    v01 = np.empty((len(scores), n_negative))
    for row, row_scores in enumerate(scores):
        positive_scores = row_scores[is_positive]
        negative_scores = row_scores[~is_positive]
        combined_ranks = rankdata(row_scores)
        # A positive's midrank among all images minus its midrank among the
        # positives counts the negatives below it, ties as one half.
        v10[row] = (combined_ranks[is_positive] -
                    rankdata(positive_scores)) / n_negative
        v01[row] = 1.0 - (combined_ranks[~is_positive] -
                          rankdata(negative_scores)) / n_positive
    return v10, v01


def _two_sided_quantile(confidence: float) -> float:
    is_number = (isinstance(confidence, numbers.Real)
                 and not isinstance(confidence, bool))
    if not is_number or not 0.0 < float(confidence) < 1.0:
        raise ValueError(
            f'confidence must be a number in (0, 1), got {confidence!r}. '
            f'Pass e.g. 0.95 for a 95% interval.')
    return float(norm.ppf(0.5 + float(confidence) / 2.0))


def _check_count(value: Any, name: str, minimum: int = 0) -> int:
    is_integer = (isinstance(value, numbers.Integral)
                  and not isinstance(value, bool))
    if not is_integer or int(value) < minimum:
        raise ValueError(
            f'{name} must be an integer >= {minimum}, got {value!r}.')
    return int(value)


def _check_same_length(labels: np.ndarray, scores: np.ndarray,
                       patient_ids: np.ndarray) -> None:
    if labels.ndim != 1 or patient_ids.ndim != 1 or scores.ndim == 0:
        raise ValueError(
            f'labels and patient_ids must have shape (N,) and scores shape '
            f'(N, ...), got {labels.shape}, {patient_ids.shape} and '
            f'{scores.shape}.')
    if len(labels) == 0:
        raise ValueError('labels is empty, but the bootstrap needs at least '
                         'one ROI.')
    if not len(labels) == len(scores) == len(patient_ids):
        raise ValueError(
            f'labels, scores and patient_ids must have one entry per ROI, '
            f'got {len(labels)}, {len(scores)} and {len(patient_ids)}.')
    missing = [index for index, patient_id in enumerate(patient_ids)
               if patient_id is None]
    if missing:
        raise ValueError(
            f'patient_ids must name the patient of every ROI, got None at '
            f'indices {missing[:10]}. The bootstrap resamples patients.')


def _as_value_mapping(values: Any) -> dict[str, float | None]:
    """Turn a statistic's output into floats, with None for undefined."""
    if not isinstance(values, Mapping):
        raise ValueError(
            f'statistic must return a mapping from names to numbers, got '
            f'{values!r}.')
    converted = {}
    for name, value in values.items():
        if value is None:
            converted[name] = None
            continue
        value = float(value)
        converted[name] = None if math.isnan(value) else value
    return converted


def _check_binary_labels(labels: Any, positive_label: Any) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(
            f'labels must have shape (N,), got shape {labels.shape}.')
    is_positive = labels == positive_label
    n_positive = int(is_positive.sum())
    n_negative = len(labels) - n_positive
    if n_positive < 2 or n_negative < 2:
        raise ValueError(
            f'labels must contain at least two positive (== '
            f'{positive_label!r}) and two negative images for the DeLong '
            f'variance, got {n_positive} positive and {n_negative} '
            f'negative. Check positive_label.')
    return is_positive


def _check_scores_1d(scores: Any, name: str, n_images: int) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) != n_images:
        raise ValueError(
            f'{name} must have shape ({n_images},), one positive-class score '
            f'per image, got shape {scores.shape}.')
    if not np.isfinite(scores).all():
        raise ValueError(
            f'{name} must be finite, got {scores[~np.isfinite(scores)][0]}.')
    return scores


def _check_bool_vector(values: Any, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(
            f'{name} must have shape (N,), got shape {values.shape}.')
    if values.dtype != bool and not np.isin(values, (0, 1)).all():
        raise ValueError(
            f'{name} must be booleans (True = correct), got values '
            f'{np.unique(values)[:5].tolist()}.')
    return values.astype(bool)

"""Tests of the interval and test statistics against hand-computed values.

Reference values are literal: published Wilson intervals (Newcombe 1998,
Statistics in Medicine 17, method 3), binomial and chi-square
p-values worked out by hand, and DeLong placement values computed by hand
or with a separate O(n^2) implementation in this file.
"""
import doctest
import math
import uuid
from statistics import NormalDist

import numpy as np
import pytest
from mmengine.logging import MMLogger
from sklearn.metrics import f1_score, roc_auc_score

from stbsm_mm.evaluation import (bootstrap_interval, bootstrap_intervals,
                                 delong_interval, delong_test, mcnemar_test,
                                 wilson_interval)
from stbsm_mm.evaluation import statistics as statistics_module

Z_95 = 1.959963984540054


def wilson_by_quadratic(successes, total, z=Z_95):
    """Solve (p - pi)^2 = z^2 pi (1 - pi) / n for pi, the Wilson bounds."""
    p = successes / total
    a = 1 + z * z / total
    b = -(2 * p + z * z / total)
    c = p * p
    roots = sorted(np.roots([a, b, c]).real)
    return roots[0], roots[1]


# ----------------------------------------------------------------- Wilson


@pytest.mark.parametrize('successes, total, low, high', [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_newcombe_values(successes, total, low, high):
    result = wilson_interval(successes, total)
    assert round(result[0], 4) == low
    assert round(result[1], 4) == high


@pytest.mark.parametrize('successes, total', [(81, 263), (15, 148), (3, 4),
                                              (1, 29), (28, 29)])
def test_wilson_matches_quadratic(successes, total):
    low, high = wilson_interval(successes, total)
    expected_low, expected_high = wilson_by_quadratic(successes, total)
    assert low == pytest.approx(expected_low, abs=1e-12)
    assert high == pytest.approx(expected_high, abs=1e-12)


@pytest.mark.parametrize('successes, total', [(0, 10), (1, 10), (5, 10),
                                              (9, 10), (10, 10), (1, 1)])
def test_wilson_contains_estimate(successes, total):
    low, high = wilson_interval(successes, total)
    assert 0.0 <= low <= successes / total <= high <= 1.0


def test_wilson_bounds_at_zero_and_all():
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == 1.0


def test_wilson_empty_total():
    assert wilson_interval(0, 0) == (None, None)


def test_wilson_wider_at_higher_confidence():
    low_95, high_95 = wilson_interval(15, 148, confidence=0.95)
    low_99, high_99 = wilson_interval(15, 148, confidence=0.99)
    z_99 = NormalDist().inv_cdf(0.995)
    expected_low, expected_high = wilson_by_quadratic(15, 148, z=z_99)
    assert low_99 < low_95
    assert high_99 > high_95
    assert low_99 == pytest.approx(expected_low, abs=1e-12)
    assert high_99 == pytest.approx(expected_high, abs=1e-12)


@pytest.mark.parametrize('arguments, name', [
    ((11, 10), 'successes'),
    ((-1, 10), 'successes'),
    ((1, 2.5), 'total'),
    ((1, 10, 1.5), 'confidence'),
    ((1, 10, 0.0), 'confidence'),
])
def test_wilson_invalid_input(arguments, name):
    with pytest.raises(ValueError, match=name):
        wilson_interval(*arguments)


# ---------------------------------------------------------------- McNemar


def paired_correctness(b, c, both_right=0, both_wrong=0):
    correct_a = [True] * b + [False] * c + [True] * both_right + \
        [False] * both_wrong
    correct_b = [False] * b + [True] * c + [True] * both_right + \
        [False] * both_wrong
    return correct_a, correct_b


def test_mcnemar_exact_small_case():
    # Two-sided binomial p of 10 vs 2 out of 12 at 1/2:
    # 2 * (C(12,0) + C(12,1) + C(12,2)) / 2^12 = 2 * 79 / 4096.
    result = mcnemar_test(*paired_correctness(10, 2))
    assert result['b'] == 10
    assert result['c'] == 2
    assert result['method'] == 'exact binomial'
    assert result['p_value'] == pytest.approx(158 / 4096, rel=1e-12)
    assert round(result['p_value'], 4) == 0.0386


def test_mcnemar_chi_square_large_case():
    # (|30 - 10| - 1)^2 / 40 = 361 / 40, and for one degree of freedom
    # P(chi2 > x) = erfc(sqrt(x / 2)).
    result = mcnemar_test(*paired_correctness(30, 10))
    assert result['method'] == 'chi-square with continuity correction'
    assert result['statistic'] == pytest.approx(9.025, rel=1e-12)
    assert result['p_value'] == pytest.approx(
        math.erfc(math.sqrt(9.025 / 2)), rel=1e-9)


def test_mcnemar_forced_methods():
    chi_square = mcnemar_test(*paired_correctness(10, 2), exact=False)
    assert chi_square['statistic'] == pytest.approx(49 / 12, rel=1e-12)
    assert chi_square['method'] == 'chi-square with continuity correction'

    exact = mcnemar_test(*paired_correctness(30, 10), exact=True)
    tail = sum(math.comb(40, k) for k in range(11)) / 2**40
    assert exact['method'] == 'exact binomial'
    assert exact['p_value'] == pytest.approx(2 * tail, rel=1e-9)


def test_mcnemar_default_switch_at_25():
    assert mcnemar_test(*paired_correctness(20, 4))['method'] == \
        'exact binomial'
    assert mcnemar_test(*paired_correctness(20, 5))['method'] == \
        'chi-square with continuity correction'


def test_mcnemar_ignores_concordant_images():
    alone = mcnemar_test(*paired_correctness(10, 2))
    with_concordant = mcnemar_test(
        *paired_correctness(10, 2, both_right=50, both_wrong=7))
    assert with_concordant == alone


def test_mcnemar_no_discordant_images():
    for exact in (True, False):
        result = mcnemar_test(*paired_correctness(0, 0, both_right=5),
                              exact=exact)
        assert result['p_value'] == 1.0
        assert result['statistic'] == 0.0


def test_mcnemar_invalid_input():
    with pytest.raises(ValueError, match='correct_a and correct_b'):
        mcnemar_test([True, False], [True])
    with pytest.raises(ValueError, match='correct_b'):
        mcnemar_test([True, False], [0.5, 1])
    with pytest.raises(ValueError, match='exact'):
        mcnemar_test([True], [False], exact='yes')


# ----------------------------------------------------------------- DeLong

HAND_LABELS = [0, 0, 0, 1, 1, 1]
HAND_A = [.1, .4, .35, .8, .7, .3]
HAND_B = [.2, .1, .5, .6, .9, .4]


def delong_by_pairs(labels, scores_a, scores_b):
    """DeLong's z and p from the O(n^2) kernel psi(x, y), for reference."""
    labels = np.asarray(labels)
    scores = np.stack([scores_a, scores_b]).astype(float)
    positives = scores[:, labels == 1]
    negatives = scores[:, labels == 0]
    m, n = positives.shape[1], negatives.shape[1]

    v10 = np.zeros((2, m))
    v01 = np.zeros((2, n))
    for k in range(2):
        for i in range(m):
            for j in range(n):
                x, y = positives[k, i], negatives[k, j]
                if x > y:
                    psi = 1.0
                elif x == y:
                    psi = 0.5
                else:
                    psi = 0.0
                v10[k, i] += psi / n
                v01[k, j] += psi / m

    s10 = np.cov(v10)
    s01 = np.cov(v01)
    variance = ((s10[0, 0] + s10[1, 1] - 2 * s10[0, 1]) / m +
                (s01[0, 0] + s01[1, 1] - 2 * s01[0, 1]) / n)
    difference = v10[0].mean() - v10[1].mean()
    z = difference / math.sqrt(variance)
    return z, math.erfc(abs(z) / math.sqrt(2)), variance


def test_delong_hand_case():
    # V10_a = [1, 1, 1/3] and V10_b = [1, 1, 2/3], so their difference has
    # sample variance 1/27. V01_a = [1, 2/3, 2/3] and V01_b = [1, 1, 2/3],
    # so theirs has 1/27 too. Var = 1/27/3 + 1/27/3 = 2/81, and
    # z = (7/9 - 8/9) / sqrt(2/81) = -1/sqrt(2).
    result = delong_test(HAND_LABELS, HAND_A, HAND_B)
    assert result['auc_a'] == pytest.approx(7 / 9, rel=1e-12)
    assert result['auc_b'] == pytest.approx(8 / 9, rel=1e-12)
    assert result['variance_difference'] == pytest.approx(2 / 81, rel=1e-12)
    assert result['z'] == pytest.approx(-1 / math.sqrt(2), rel=1e-12)
    assert result['p_value'] == pytest.approx(math.erfc(0.5), rel=1e-9)


def test_delong_auc_equals_sklearn():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 60)
    scores_a = np.round(rng.random(60) + 0.3 * labels, 1)  # with ties
    scores_b = rng.random(60)
    result = delong_test(labels, scores_a, scores_b)
    assert result['auc_a'] == pytest.approx(roc_auc_score(labels, scores_a),
                                            abs=1e-12)
    assert result['auc_b'] == pytest.approx(roc_auc_score(labels, scores_b),
                                            abs=1e-12)


def test_delong_matches_pairwise_reference():
    rng = np.random.default_rng(11)
    labels = np.array([0] * 17 + [1] * 13)
    scores_a = np.round(rng.random(30) + 0.5 * labels, 1)  # with ties
    scores_b = rng.random(30) + 0.2 * labels
    z, p_value, variance = delong_by_pairs(labels, scores_a, scores_b)
    result = delong_test(labels, scores_a, scores_b)
    assert result['variance_difference'] == pytest.approx(variance,
                                                          rel=1e-9)
    assert result['z'] == pytest.approx(z, rel=1e-9)
    assert result['p_value'] == pytest.approx(p_value, rel=1e-9)


def test_delong_symmetric():
    forward = delong_test(HAND_LABELS, HAND_A, HAND_B)
    backward = delong_test(HAND_LABELS, HAND_B, HAND_A)
    assert backward['p_value'] == pytest.approx(forward['p_value'])
    assert backward['z'] == pytest.approx(-forward['z'])
    assert backward['difference'] == pytest.approx(-forward['difference'])


def test_delong_identical_scores():
    result = delong_test(HAND_LABELS, HAND_A, HAND_A)
    assert result['difference'] == 0.0
    assert result['variance_difference'] == 0.0
    assert result['z'] == 0.0
    assert result['p_value'] == 1.0


def test_delong_zero_variance_difference():
    # A separates perfectly and B ties every image, so AUCs 1 and 0.5 with a
    # variance of exactly 0: no finite z exists.
    result = delong_test(HAND_LABELS, HAND_A[:3] + [.9, .95, .99],
                         [.5] * 6)
    assert result['difference'] == 0.5
    assert result['z'] is None
    assert result['p_value'] is None


def test_delong_positive_label():
    names = ['STB' if label else 'SM' for label in HAND_LABELS]
    by_name = delong_test(names, HAND_A, HAND_B, positive_label='STB')
    assert by_name['auc_a'] == pytest.approx(7 / 9)
    assert by_name['z'] == pytest.approx(-1 / math.sqrt(2))


def test_delong_invalid_input():
    with pytest.raises(ValueError, match='two positive'):
        delong_test([0, 0, 0, 1], [.1, .2, .3, .4], [.1, .2, .3, .4])
    with pytest.raises(ValueError, match='scores_b'):
        delong_test(HAND_LABELS, HAND_A, HAND_B[:5])
    with pytest.raises(ValueError, match='scores_a'):
        delong_test(HAND_LABELS, [np.nan] + HAND_A[1:], HAND_B)


def test_delong_interval_hand_case():
    # V10_a = [1, 1, 1/3] has sample variance 12/81 and V01_a = [1, 2/3, 2/3]
    # has 3/81, so Var(AUC_a) = 12/81/3 + 3/81/3 = 5/81.
    result = delong_interval(HAND_LABELS, HAND_A)
    assert result['auc'] == pytest.approx(7 / 9)
    assert result['variance'] == pytest.approx(5 / 81, rel=1e-12)
    assert result['low'] == pytest.approx(7 / 9 - Z_95 * math.sqrt(5) / 9,
                                          rel=1e-9)
    assert result['high'] == 1.0
    paired = delong_test(HAND_LABELS, HAND_A, HAND_B)
    assert paired['variance_a'] == pytest.approx(5 / 81, rel=1e-12)


# -------------------------------------------------------------- Bootstrap


def auc_or_none(labels, scores):
    if len(np.unique(labels)) < 2:
        return None
    return roc_auc_score(labels, scores)


def realistic_sample(n_patients=30, seed=5):
    """Patients with 1 to 6 ROIs each, one label per patient."""
    rng = np.random.default_rng(seed)
    labels, scores, patient_ids = [], [], []
    for patient in range(n_patients):
        label = patient % 2
        for _ in range(rng.integers(1, 7)):
            labels.append(label)
            scores.append(min(1.0, max(0.0, rng.normal(0.4 + 0.25 * label,
                                                       0.2))))
            patient_ids.append(f'p{patient}')
    return np.array(labels), np.array(scores), patient_ids


def test_bootstrap_reproducible_by_seed():
    labels, scores, patient_ids = realistic_sample()
    first = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                               n_resamples=150, seed=7)
    second = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                                n_resamples=150, seed=7)
    other = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                               n_resamples=150, seed=8)
    assert first == second
    assert (other['low'], other['high']) != (first['low'], first['high'])


def test_bootstrap_resamples_whole_patients():
    # Patient 'big' has ROIs 0-9, and five patients have one ROI each. A
    # resample draws 6 patients: k times 'big' gives 10k + (6 - k) ROIs.
    patient_ids = ['big'] * 10 + ['s1', 's2', 's3', 's4', 's5']
    roi_numbers = np.arange(15)
    labels = np.zeros(15, dtype=int)
    sizes, big_counts = [], []

    def size(sample_labels, sample_rois):
        sizes.append(len(sample_rois))
        big_counts.append(int(np.sum(sample_rois < 10)))
        return len(sample_rois)

    result = bootstrap_interval(labels, roi_numbers, patient_ids, size,
                                n_resamples=400, seed=1)
    resample_sizes = sizes[1:]  # The first call is the full sample.
    assert len(resample_sizes) == 400
    assert all((value - 6) % 9 == 0 for value in resample_sizes)
    assert all(count % 10 == 0 for count in big_counts)
    assert len(set(resample_sizes)) > 2
    # Resampling single ROIs would keep every resample at 15 ROIs.
    assert result['low'] < 15 < result['high']
    assert result['estimate'] == 15
    assert result['n_patients'] == 6


def test_bootstrap_counts_undefined_resamples():
    # One all-positive and one all-negative patient: AUC is undefined
    # whenever a resample draws the same patient twice.
    labels = np.array([1, 1, 1, 0, 0])
    scores = np.array([.9, .8, .3, .4, .1])
    patient_ids = ['pos'] * 3 + ['neg'] * 2
    defined = []

    def recorded_auc(sample_labels, sample_scores):
        value = auc_or_none(sample_labels, sample_scores)
        defined.append(value is not None)
        return value

    result = bootstrap_interval(labels, scores, patient_ids, recorded_auc,
                                n_resamples=500, seed=2)
    assert result['n_resamples'] == 500
    assert result['n_valid'] == sum(defined[1:])
    assert 150 < result['n_valid'] < 350
    assert result['low'] == result['high'] == pytest.approx(5 / 6)


def test_bootstrap_nan_counts_as_undefined():
    result = bootstrap_interval([0, 1], [.2, .7], ['a', 'b'],
                                lambda labels, scores: float('nan'),
                                n_resamples=50)
    assert result['n_valid'] == 0
    assert result['low'] is None
    assert result['high'] is None


def test_bootstrap_contains_auc_and_f1():
    labels, scores, patient_ids = realistic_sample()
    auc = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                             n_resamples=500)
    f1 = bootstrap_interval(
        labels, scores, patient_ids,
        lambda sample_labels, sample_scores: f1_score(
            sample_labels, sample_scores >= 0.5, zero_division=np.nan),
        n_resamples=500)
    auc_value = roc_auc_score(labels, scores)
    f1_value = f1_score(labels, scores >= 0.5)
    assert 0.5 < auc_value < 1.0
    assert auc['low'] < auc_value < auc['high']
    assert f1['low'] < f1_value < f1['high']
    assert auc['n_valid'] == 500


def test_bootstrap_intervals_share_resamples():
    labels, scores, patient_ids = realistic_sample()
    together = bootstrap_intervals(
        labels, scores, patient_ids,
        lambda sample_labels, sample_scores: {
            'auc': auc_or_none(sample_labels, sample_scores),
            'mean_score': np.mean(sample_scores),
        },
        n_resamples=200, seed=4)
    alone = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                               n_resamples=200, seed=4)
    assert together['auc'] == alone
    assert together['mean_score']['low'] < np.mean(scores) < \
        together['mean_score']['high']


def test_bootstrap_narrower_at_lower_confidence():
    labels, scores, patient_ids = realistic_sample()
    wide = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                              n_resamples=200, confidence=0.95)
    narrow = bootstrap_interval(labels, scores, patient_ids, auc_or_none,
                                n_resamples=200, confidence=0.5)
    assert wide['low'] < narrow['low'] < narrow['high'] < wide['high']


def test_bootstrap_invalid_input():
    with pytest.raises(ValueError, match='patient_ids'):
        bootstrap_interval([0, 1], [.1, .2], ['a'], auc_or_none)
    with pytest.raises(ValueError, match='patient_ids'):
        bootstrap_interval([0, 1], [.1, .2], ['a', None], auc_or_none)
    with pytest.raises(ValueError, match='statistic'):
        bootstrap_interval([0, 1], [.1, .2], ['a', 'b'], 'auc')
    with pytest.raises(ValueError, match='n_resamples'):
        bootstrap_interval([0, 1], [.1, .2], ['a', 'b'], auc_or_none,
                           n_resamples=0)
    with pytest.raises(ValueError, match='confidence'):
        bootstrap_interval([0, 1], [.1, .2], ['a', 'b'], auc_or_none,
                           confidence=95)


def test_statistics_docstring_examples():
    # The examples define no undefined resample, so the module logs nothing
    # at WARNING level into the output that doctest compares.
    MMLogger.get_instance(f'quiet-{uuid.uuid4().hex}', log_level='WARNING')

    result = doctest.testmod(statistics_module)

    assert result.attempted > 0
    assert result.failed == 0

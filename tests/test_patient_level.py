"""Tests of patient-level aggregation and figures with intervals.

Hand cases check the aggregation and the Wilson counts. The real SPIDER
demo cohort supplies real patient ids and per-ROI labels (13 patients, 92
ROIs, some patients with both labels), with seeded random scores in place
of a trained model.
"""
import csv
import doctest
import uuid
from collections import Counter

import numpy as np
import pytest
from mmengine.logging import MMLogger

from stbsm_mm.evaluation import (aggregate_by_patient, bootstrap_intervals,
                                 compute_binary_figures,
                                 figures_with_intervals,
                                 patient_level_figures, read_predictions_csv,
                                 write_predictions_csv)
from stbsm_mm.evaluation import patient_level

CLASSES = ('STB', 'SM')
DEMO_CLASSES = ('modic', 'no_modic')
FIGURE_NAMES = ('accuracy', 'precision', 'sensitivity', 'specificity', 'npv',
                'auc', 'f1', 'macro_precision', 'macro_sensitivity',
                'macro_f1')


def row(patient_id, label_index, stb_score, roi_id=None, site='site-A'):
    return dict(roi_id=roi_id, patient_id=patient_id, site=site,
                label=CLASSES[label_index], label_index=label_index,
                score_STB=stb_score, score_SM=1.0 - stb_score,
                pred_label=CLASSES[0 if stb_score >= 0.5 else 1])


# Patient p1 (STB) has three ROIs, p2 (SM) two and p3 (STB) one.
HAND_ROWS = [
    row('p1', 0, 0.9),
    row('p1', 0, 0.2),
    row('p1', 0, 0.4),
    row('p2', 1, 0.3),
    row('p2', 1, 0.6),
    row('p3', 0, 0.7),
]


# ------------------------------------------------------------ aggregation


def test_aggregate_one_record_per_patient():
    patients = aggregate_by_patient(HAND_ROWS, CLASSES)
    assert [patient['patient_id'] for patient in patients] == \
        ['p1', 'p2', 'p3']
    assert [patient['n_rois'] for patient in patients] == [3, 2, 1]
    assert [patient['label'] for patient in patients] == ['STB', 'SM', 'STB']


def test_aggregate_mean():
    patients = aggregate_by_patient(HAND_ROWS, CLASSES, method='mean')
    assert patients[0]['score_STB'] == pytest.approx(0.5)
    assert patients[0]['score_SM'] == pytest.approx(0.5)
    assert patients[1]['score_STB'] == pytest.approx(0.45)
    assert patients[2]['score_STB'] == pytest.approx(0.7)


def test_aggregate_max_of_positive_class():
    by_stb = aggregate_by_patient(HAND_ROWS, CLASSES, method='max',
                                  positive_index=0)
    assert by_stb[0]['score_STB'] == pytest.approx(0.9)
    assert by_stb[0]['score_SM'] == pytest.approx(0.1)
    assert by_stb[1]['score_STB'] == pytest.approx(0.6)

    by_sm = aggregate_by_patient(HAND_ROWS, CLASSES, method='max',
                                 positive_index=1)
    assert by_sm[0]['score_SM'] == pytest.approx(0.8)
    assert by_sm[0]['score_STB'] == pytest.approx(0.2)
    assert by_sm[1]['score_SM'] == pytest.approx(0.7)


def test_aggregate_conflicting_labels_raise():
    rows = HAND_ROWS + [row('p3', 1, 0.1)]
    with pytest.raises(ValueError, match="patient 'p3'"):
        aggregate_by_patient(rows, CLASSES)


def test_aggregate_patient_labels_override():
    rows = HAND_ROWS + [row('p3', 1, 0.1)]
    patients = aggregate_by_patient(
        rows, CLASSES, patient_labels={'p1': 'STB', 'p2': 1, 'p3': 'SM'})
    assert [patient['label_index'] for patient in patients] == [0, 1, 1]
    assert patients[2]['n_rois'] == 2

    with pytest.raises(ValueError, match='p3'):
        aggregate_by_patient(rows, CLASSES,
                             patient_labels={'p1': 'STB', 'p2': 'SM'})
    with pytest.raises(ValueError, match='patient_labels'):
        aggregate_by_patient(rows, CLASSES, patient_labels={
            'p1': 'STB', 'p2': 'SM', 'p3': 'TB'})


def test_aggregate_site_per_patient():
    rows = [row('p1', 0, 0.9, site='A'), row('p1', 0, 0.4, site='B'),
            row('p2', 1, 0.2, site='A')]
    patients = aggregate_by_patient(rows, CLASSES)
    assert patients[0]['site'] is None
    assert patients[1]['site'] == 'A'


def test_aggregate_invalid_input():
    with pytest.raises(ValueError, match='method'):
        aggregate_by_patient(HAND_ROWS, CLASSES, method='median')
    with pytest.raises(ValueError, match='positive_index'):
        aggregate_by_patient(HAND_ROWS, CLASSES, positive_index=2)
    with pytest.raises(ValueError, match='score_SM'):
        aggregate_by_patient([dict(patient_id='p1', label_index=0,
                                   score_STB=1.0)], CLASSES)
    with pytest.raises(ValueError, match='patient_id'):
        aggregate_by_patient([row(None, 0, 0.5, roi_id='r7')], CLASSES)
    with pytest.raises(ValueError, match='records is empty'):
        aggregate_by_patient([], CLASSES)


# ------------------------------------------------------ patient figures


def test_patient_figures_count_each_patient_once():
    # Mean STB scores 0.5, 0.45, 0.7: both STB patients are called STB and
    # p2 is called SM, so every patient is right. Per image, 2 of the 6
    # ROIs are wrong.
    figures = patient_level_figures(HAND_ROWS, CLASSES, 'STB')
    assert figures['n_patients'] == 3
    assert figures['n_rois'] == 6
    assert figures['confusion_matrix'] == [[2, 0], [0, 1]]
    assert figures['accuracy'] == 1.0
    assert figures['level'] == 'patient'


def test_patient_figures_mean_vs_max():
    # With max, p2's STB score is 0.6, so p2 is called STB.
    figures = patient_level_figures(HAND_ROWS, CLASSES, 'STB', method='max')
    assert figures['confusion_matrix'] == [[2, 0], [1, 0]]
    assert figures['specificity'] == 0.0
    assert figures['aggregation'] == 'max'


# ---------------------------------------------------- figures with intervals


def test_intervals_wilson_counts():
    # Per image: STB ROIs score 0.9, 0.2, 0.4, 0.7 (tp 2, fn 2) and SM ROIs
    # 0.3, 0.6 (tn 1, fp 1).
    result = figures_with_intervals(HAND_ROWS, CLASSES, 'STB',
                                    n_resamples=100)
    expected = {
        'accuracy': (3, 6),
        'sensitivity': (2, 4),
        'specificity': (1, 2),
        'precision': (2, 3),
        'npv': (1, 3),
    }
    for name, (successes, total) in expected.items():
        figure = result[name]
        assert figure['method'] == 'wilson', name
        assert (figure['successes'], figure['total']) == \
            (successes, total), name
        assert figure['value'] == pytest.approx(successes / total), name
        assert figure['low'] < figure['value'] < figure['high'], name


def test_intervals_methods_per_figure():
    result = figures_with_intervals(HAND_ROWS, CLASSES, 'STB',
                                    n_resamples=100)
    assert set(result) == set(FIGURE_NAMES)
    for name in ('auc', 'f1', 'macro_precision', 'macro_sensitivity',
                 'macro_f1'):
        assert result[name]['method'] == 'bootstrap (patients)', name
        assert result[name]['n_patients'] == 3, name


def test_intervals_bootstrap_matches_binary_figures():
    # The fast bootstrap figures must equal compute_binary_figures on the
    # same resamples, undefined resamples included.
    rows = [row(f'p{i // 2}', (i // 2) % 2, score) for i, score in
            enumerate([.9, .6, .2, .55, .7, .1, .3, .45, .8, .65])]
    result = figures_with_intervals(rows, CLASSES, 'STB', n_resamples=150,
                                    seed=3)

    labels = np.array([r['label_index'] for r in rows])
    scores = np.array([[r['score_STB'], r['score_SM']] for r in rows])
    patient_ids = [r['patient_id'] for r in rows]

    names = ('auc', 'f1', 'macro_precision', 'macro_sensitivity',
             'macro_f1')

    def figures(sample_labels, sample_scores):
        all_figures = compute_binary_figures(sample_labels, sample_scores,
                                             CLASSES, 'STB')
        return {name: all_figures[name] for name in names}

    reference = bootstrap_intervals(labels, scores, patient_ids, figures,
                                    n_resamples=150, seed=3)
    for name in names:
        assert result[name]['n_valid'] == reference[name]['n_valid'], name
        assert result[name]['low'] == pytest.approx(reference[name]['low'],
                                                    abs=1e-12), name
        assert result[name]['high'] == pytest.approx(
            reference[name]['high'], abs=1e-12), name
    assert result['auc']['n_valid'] < 150


def test_intervals_reproducible_by_seed():
    first = figures_with_intervals(HAND_ROWS, CLASSES, 'SM', n_resamples=100,
                                   seed=9)
    second = figures_with_intervals(HAND_ROWS, CLASSES, 'SM',
                                    n_resamples=100, seed=9)
    assert first == second


def test_intervals_undefined_figure():
    rows = [row('p1', 0, 0.9), row('p2', 0, 0.7), row('p3', 0, 0.2)]
    result = figures_with_intervals(rows, CLASSES, 'STB', n_resamples=50)
    for name in ('specificity', 'auc', 'macro_sensitivity'):
        assert result[name]['value'] is None, name
        assert result[name]['low'] is None, name
        assert result[name]['high'] is None, name


def test_intervals_invalid_level():
    with pytest.raises(ValueError, match='level'):
        figures_with_intervals(HAND_ROWS, CLASSES, 'STB', level='lesion')


def test_patient_level_docstring_examples():
    MMLogger.get_instance(f'quiet-{uuid.uuid4().hex}', log_level='WARNING')

    result = doctest.testmod(patient_level)

    assert result.attempted > 0
    assert result.failed == 0


# ------------------------------------------------------ real demo cohort


@pytest.fixture(scope='module')
def demo_predictions(demo_cohort, tmp_path_factory):
    """predictions.csv rows for the real cohort's ROIs, random scores."""
    with open(demo_cohort / 'rois.csv', newline='') as file:
        rois = list(csv.DictReader(file))

    rng = np.random.default_rng(2024)
    records = []
    for roi in rois:
        label_index = DEMO_CLASSES.index(roi['label'])
        # Scores lean towards the true label, as a weak model's would.
        modic_score = float(np.clip(
            rng.normal(0.6 if label_index == 0 else 0.4, 0.2), 0.0, 1.0))
        records.append(dict(
            roi_id=roi['roi_id'], patient_id=roi['patient_id'], site=None,
            label=roi['label'], label_index=label_index,
            score_modic=modic_score, score_no_modic=1.0 - modic_score,
            pred_label=DEMO_CLASSES[0 if modic_score >= 0.5 else 1]))

    path = tmp_path_factory.mktemp('demo_predictions') / 'predictions.csv'
    write_predictions_csv(path, records)
    return read_predictions_csv(path)


@pytest.fixture(scope='module')
def demo_patient_labels(demo_predictions):
    """A patient is modic when any of its disc levels is."""
    labels = {}
    for record in demo_predictions:
        if record['label'] == 'modic':
            labels[record['patient_id']] = 'modic'
        else:
            labels.setdefault(record['patient_id'], 'no_modic')
    return labels


def test_demo_cohort_mixed_labels_raise(demo_predictions):
    assert len(demo_predictions) == 92
    with pytest.raises(ValueError, match='different labels'):
        aggregate_by_patient(demo_predictions, DEMO_CLASSES)


def test_demo_cohort_patient_figures(demo_predictions, demo_patient_labels):
    rois_per_patient = Counter(r['patient_id'] for r in demo_predictions)
    for method in ('mean', 'max'):
        figures = patient_level_figures(
            demo_predictions, DEMO_CLASSES, 'modic', method=method,
            patient_labels=demo_patient_labels)
        assert figures['n_patients'] == 13
        assert figures['n_images'] == 13
        assert figures['n_rois'] == 92
        assert sum(map(sum, figures['confusion_matrix'])) == 13
    patients = aggregate_by_patient(demo_predictions, DEMO_CLASSES,
                                    patient_labels=demo_patient_labels)
    assert {p['patient_id']: p['n_rois'] for p in patients} == \
        dict(rois_per_patient)
    # Patients 67 and 108 have no Modic change at any disc level.
    assert sorted(p['patient_id'] for p in patients
                  if p['label'] == 'no_modic') == ['108', '67']


@pytest.mark.parametrize('level', ['image', 'patient'])
def test_demo_cohort_intervals_contain_value(demo_predictions,
                                             demo_patient_labels, level):
    result = figures_with_intervals(
        demo_predictions, DEMO_CLASSES, 'modic', n_resamples=500, seed=0,
        level=level, patient_labels=demo_patient_labels)
    assert set(result) == set(FIGURE_NAMES)
    for name, figure in result.items():
        if figure['value'] is None:
            continue
        assert figure['low'] <= figure['value'] <= figure['high'], name
        assert 0.0 <= figure['low'] <= figure['high'] <= 1.0, name
    assert result['auc']['n_patients'] == 13
    if level == 'image':
        assert result['accuracy']['total'] == 92
    else:
        assert result['accuracy']['total'] == 13

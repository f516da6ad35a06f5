"""Tests of DiagnosisMetric and the binary figures behind it.

The metric is driven as MMEngine drives it: ``process`` on data samples made
by ``mmpretrain.structures.DataSample.to_dict()``, then ``compute_metrics``.
"""
import doctest
import json
import logging
import uuid

import numpy as np
import pytest
import torch
from mmengine.logging import MMLogger
from mmpretrain.registry import METRICS
from mmpretrain.structures import DataSample
from sklearn.metrics import (accuracy_score, confusion_matrix, f1_score,
                             precision_score, recall_score, roc_auc_score)

from stbsm_mm.evaluation import (DiagnosisMetric, compute_binary_figures,
                                 read_predictions_csv, write_predictions_csv)
from stbsm_mm.evaluation import binary_figures, diagnosis_metric

CLASSES = ('STB', 'SM')
STB, SM = 0, 1

# STB-class scores that put an image on the intended side of 0.5.
TP_SCORE, FN_SCORE, FP_SCORE, TN_SCORE = 0.9, 0.3, 0.7, 0.1


def make_sample(label: int, stb_score: float, index: int,
                site: str | None = 'site-A') -> dict:
    sample = DataSample().set_gt_label(label).set_pred_score(
        torch.tensor([stb_score, 1.0 - stb_score]))
    # DataSample.set_metainfo returns None in mmpretrain 1.2.0, so it cannot
    # be chained.
    sample.set_metainfo(
        dict(roi_id=f'roi{index:03d}', patient_id=f'p{index // 2:03d}',
             site=site))
    return sample.to_dict()


def samples_from_matrix(tp: int, fn: int, fp: int, tn: int) -> list[dict]:
    """Build data samples whose STB-positive confusion matrix is given."""
    cases = ([(STB, TP_SCORE)] * tp + [(STB, FN_SCORE)] * fn +
             [(SM, FP_SCORE)] * fp + [(SM, TN_SCORE)] * tn)
    return [
        make_sample(label, score, index)
        for index, (label, score) in enumerate(cases)
    ]


def run_metric(samples: list[dict], **kwargs) -> dict:
    metric = DiagnosisMetric(**kwargs)
    metric.dataset_meta = {'classes': CLASSES}
    metric.process(None, samples[:3])
    metric.process(None, samples[3:])
    return metric.compute_metrics(metric.results)


def percent(value: float) -> float:
    return round(100 * value, 1)


# Published figures of a clinical study (in percent) and the confusion
# matrices behind them, with STB as the positive class.
EXTERNAL_TEST_SET = [
    pytest.param((37, 8, 13, 41), 78.8, 74.0, 82.2, 77.9, id='resnet34'),
    pytest.param((38, 7, 12, 42), 80.8, 76.0, 84.4, 80.0, id='resnet101'),
    # The published table gives an F1 of 91.5 for this row, but the harmonic
    # mean of its own precision 80.4 and sensitivity 91.1 is 85.4.
    pytest.param((41, 4, 10, 44), 85.9, 80.4, 91.1, 85.4,
                 id='efficientnet-b3'),
    pytest.param((43, 2, 6, 48), 91.9, 87.8, 95.6, 91.5, id='mvitv2'),
]

INTERNAL_VALIDATION_SET = [
    pytest.param((30, 1, 2, 43), 96.1, 95.7, 96.2, 95.9,
                 id='efficientnet-b3'),
    pytest.param((31, 0, 1, 44), 98.7, 98.4, 98.9, 98.6, id='mvitv2'),
]


@pytest.mark.parametrize(
    'matrix, accuracy, precision, sensitivity, f1', EXTERNAL_TEST_SET)
def test_published_external_figures(matrix, accuracy, precision, sensitivity,
                                    f1):
    metrics = run_metric(samples_from_matrix(*matrix), positive_class='STB')

    assert percent(metrics['accuracy']) == accuracy
    assert percent(metrics['precision']) == precision
    assert percent(metrics['sensitivity']) == sensitivity
    assert percent(metrics['f1']) == f1


@pytest.mark.parametrize(
    'matrix, accuracy, macro_precision, macro_sensitivity, macro_f1',
    INTERNAL_VALIDATION_SET)
def test_published_internal_macro_figures(matrix, accuracy, macro_precision,
                                          macro_sensitivity, macro_f1):
    metrics = run_metric(samples_from_matrix(*matrix), positive_class='STB')

    assert percent(metrics['accuracy']) == accuracy
    assert percent(metrics['macro_precision']) == macro_precision
    assert percent(metrics['macro_sensitivity']) == macro_sensitivity
    assert percent(metrics['macro_f1']) == macro_f1


def test_confusion_matrix_layout():
    metrics = run_metric(samples_from_matrix(37, 8, 13, 41))

    # Rows are true classes, columns predicted classes, both STB then SM.
    assert metrics['confusion_matrix'] == [[37, 8], [13, 41]]
    assert metrics['positive_class'] == 'STB'
    assert list(metrics)[0] == 'accuracy'


def test_saved_predictions_reproduce_figures(tmp_path):
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=40)
    stb_scores = np.clip(0.5 + (0.5 - labels) * 0.4 +
                         rng.normal(0.0, 0.25, size=40), 0.0, 1.0)
    samples = [
        make_sample(int(label), float(score), index,
                    site=None if index % 5 == 0 else f'site-{index % 3}')
        for index, (label, score) in enumerate(zip(labels, stb_scores))
    ]

    metrics = run_metric(samples, output_dir=str(tmp_path))
    figures = json.loads((tmp_path / 'metrics.json').read_text())
    records = read_predictions_csv(tmp_path / 'predictions.csv')

    assert sorted(path.name for path in tmp_path.iterdir()) == [
        'metrics.json', 'predictions.csv'
    ]
    assert len(records) == 40
    assert [record['roi_id'] for record in records] == [
        sample['roi_id'] for sample in samples
    ]
    assert records[0]['site'] is None
    assert records[1]['site'] == 'site-1'

    y_true = np.array([record['label_index'] for record in records])
    y_pred = np.array(
        [CLASSES.index(record['pred_label']) for record in records])
    stb_column = np.array([record['score_STB'] for record in records])
    sm_column = np.array([record['score_SM'] for record in records])

    assert [record['label'] for record in records] == [
        CLASSES[label] for label in y_true
    ]
    np.testing.assert_array_equal(y_pred, np.where(stb_column >= 0.5, 0, 1))
    np.testing.assert_allclose(stb_column + sm_column, 1.0, atol=1e-6)

    expected = {
        'accuracy': accuracy_score(y_true, y_pred),
        'precision': precision_score(y_true, y_pred, pos_label=STB),
        'sensitivity': recall_score(y_true, y_pred, pos_label=STB),
        'specificity': recall_score(y_true, y_pred, pos_label=SM),
        'f1': f1_score(y_true, y_pred, pos_label=STB),
        'npv': precision_score(y_true, y_pred, pos_label=SM),
        'macro_precision': precision_score(y_true, y_pred, average='macro'),
        'macro_sensitivity': recall_score(y_true, y_pred, average='macro'),
        'macro_f1': f1_score(y_true, y_pred, average='macro'),
        'auc': roc_auc_score(y_true == STB, stb_column),
    }
    for name, value in expected.items():
        assert figures[name] == pytest.approx(value), name
        if name != 'npv':
            assert metrics[name] == pytest.approx(value), name

    matrix = confusion_matrix(y_true, y_pred, labels=[STB, SM])
    assert figures['confusion_matrix'] == matrix.tolist()
    assert metrics['confusion_matrix'] == matrix.tolist()
    assert figures['tp'] == matrix[0, 0]
    assert figures['fn'] == matrix[0, 1]
    assert figures['fp'] == matrix[1, 0]
    assert figures['tn'] == matrix[1, 1]
    assert figures['n_images'] == 40
    assert figures['positive_class'] == 'STB'
    assert figures['classes'] == list(CLASSES)
    assert figures['auc_undefined_reason'] is None
    assert 'positive class STB' in figures['averaging']


@pytest.mark.parametrize('positive_class', ['SM', 1])
def test_positive_class_switch(positive_class):
    samples = samples_from_matrix(37, 8, 13, 41)

    stb = run_metric(samples, positive_class='STB')
    sm = run_metric(samples, positive_class=positive_class)

    assert sm['positive_class'] == 'SM'
    assert sm['sensitivity'] == stb['specificity']
    assert sm['specificity'] == stb['sensitivity']
    assert sm['precision'] == pytest.approx(41 / (41 + 8))
    assert stb['precision'] == pytest.approx(37 / (37 + 13))
    assert sm['f1'] == pytest.approx(2 * 41 / (2 * 41 + 8 + 13))
    assert sm['accuracy'] == stb['accuracy']
    assert sm['macro_f1'] == stb['macro_f1']
    assert sm['auc'] == pytest.approx(stb['auc'])
    assert sm['confusion_matrix'] == stb['confusion_matrix']


def test_auc_undefined_one_class(tmp_path):
    samples = [make_sample(STB, score, index)
               for index, score in enumerate([0.9, 0.8, 0.3, 0.6])]

    metrics = run_metric(samples, output_dir=str(tmp_path))
    figures = json.loads((tmp_path / 'metrics.json').read_text())

    assert 'auc' not in metrics
    assert figures['auc'] is None
    assert 'only class index 0' in figures['auc_undefined_reason']
    # No SM image, so specificity has a zero denominator.
    assert figures['specificity'] is None
    assert 'specificity' not in metrics
    assert metrics['sensitivity'] == pytest.approx(0.75)
    assert metrics['accuracy'] == pytest.approx(0.75)


def test_auc_hand_case():
    # STB-class scores 0.1, 0.4, 0.35, 0.8 for SM, SM, STB, STB images: three
    # of the four (STB, SM) pairs are ranked correctly.
    samples = [
        make_sample(label, score, index) for index, (label, score) in
        enumerate([(SM, 0.1), (SM, 0.4), (STB, 0.35), (STB, 0.8)])
    ]

    metrics = run_metric(samples)

    assert metrics['auc'] == pytest.approx(0.75)


def test_threshold_moves_calls():
    # An SM image at 0.6 and an STB image exactly at 0.5.
    samples = [
        make_sample(SM, 0.6, 0),
        make_sample(STB, 0.5, 1),
        make_sample(STB, 0.9, 2),
        make_sample(SM, 0.1, 3),
    ]

    default = run_metric(samples)
    strict = run_metric(samples, threshold=0.7)

    # A score equal to the threshold is called positive.
    assert default['confusion_matrix'] == [[2, 0], [1, 1]]
    assert strict['confusion_matrix'] == [[1, 1], [0, 2]]
    assert default['sensitivity'] == 1.0
    assert strict['sensitivity'] == 0.5
    assert default['specificity'] == 0.5
    assert strict['specificity'] == 1.0
    assert default['auc'] == strict['auc']


def test_undefined_precision_is_none():
    # No image is called STB, so STB precision has a zero denominator.
    figures = compute_binary_figures(
        labels=[STB, SM], scores=[[0.2, 0.8], [0.1, 0.9]], classes=CLASSES,
        positive_class='STB')

    assert figures['precision'] is None
    assert figures['sensitivity'] == 0.0
    assert figures['f1'] == 0.0
    assert figures['npv'] == 0.5
    # The macro average is undefined when one class's precision is.
    assert figures['macro_precision'] is None
    assert figures['macro_sensitivity'] == 0.5


VALID = dict(labels=[0, 1], scores=[[0.8, 0.2], [0.3, 0.7]], classes=CLASSES,
             positive_class='STB', threshold=0.5)


@pytest.mark.parametrize('changes, argument', [
    (dict(labels=[0, 1, 1]), 'labels'),
    (dict(labels=[0, 2]), 'labels'),
    (dict(labels=[0.0, 1.0]), 'labels'),
    (dict(labels=[], scores=np.zeros((0, 2))), 'labels'),
    (dict(scores=[[1.2, -0.2], [0.3, 0.7]]), 'scores'),
    (dict(scores=[[0.8, 0.8], [0.3, 0.7]]), 'scores'),
    (dict(scores=[[0.8, 0.1, 0.1], [0.3, 0.3, 0.4]]), 'scores'),
    (dict(classes=('STB', 'SM', 'other')), 'classes'),
    (dict(classes=('STB', 'STB')), 'classes'),
    (dict(positive_class='TB'), 'positive_class'),
    (dict(positive_class=2), 'positive_class'),
    (dict(threshold=1.5), 'threshold'),
], ids=lambda value: value if isinstance(value, str) else None)
def test_invalid_figures_input(changes, argument):
    with pytest.raises(ValueError, match=argument):
        compute_binary_figures(**{**VALID, **changes})


@pytest.mark.parametrize('kwargs, argument', [
    (dict(threshold=2.0), 'threshold'),
    (dict(positive_class=2), 'positive_class'),
    (dict(positive_class=True), 'positive_class'),
])
def test_invalid_metric_args(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        DiagnosisMetric(**kwargs)


def test_invalid_metric_inputs():
    samples = samples_from_matrix(2, 1, 1, 2)

    with pytest.raises(ValueError, match='positive_class'):
        run_metric(samples, positive_class='TB')

    metric = DiagnosisMetric()
    metric.dataset_meta = {'classes': ('STB', 'SM', 'other')}
    metric.process(None, samples)
    with pytest.raises(ValueError, match='classes'):
        metric.compute_metrics(metric.results)

    no_score = dict(samples[0])
    del no_score['pred_score']
    with pytest.raises(ValueError, match='pred_score'):
        DiagnosisMetric().process(None, [no_score])


def test_missing_classes_falls_back(tmp_path):
    logger = MMLogger.get_instance(f'diagnosis-{uuid.uuid4().hex}')
    messages = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = lambda record: messages.append(record.getMessage())
    logger.addHandler(handler)

    metric = DiagnosisMetric(positive_class='SM')
    metric.process(None, samples_from_matrix(2, 1, 1, 2))
    metrics = metric.compute_metrics(metric.results)

    assert metrics['positive_class'] == 'SM'
    assert len(messages) == 1
    assert "('STB', 'SM')" in messages[0]


def test_metric_builds_from_registry():
    metric = METRICS.build(
        dict(type='DiagnosisMetric', positive_class='SM', threshold=0.4))
    metric.dataset_meta = {'classes': CLASSES}
    samples = samples_from_matrix(3, 1, 2, 4)
    metric.process(None, samples)

    metrics = metric.evaluate(size=len(samples))

    assert isinstance(metric, DiagnosisMetric)
    assert metric.threshold == 0.4
    assert metrics['diagnosis/positive_class'] == 'SM'
    assert metrics['diagnosis/accuracy'] == pytest.approx(7 / 10)


def test_predictions_csv_round_trip(tmp_path):
    records = [
        dict(roi_id='roi1', patient_id='p1', site=None, label='STB',
             label_index=0, score_STB=1 / 3, score_SM=2 / 3,
             pred_label='SM'),
        dict(roi_id=None, patient_id='p2', site='site-B', label='SM',
             label_index=1, score_STB=np.float32(0.25),
             score_SM=np.float32(0.75), pred_label='SM'),
    ]
    path = tmp_path / 'predictions.csv'

    write_predictions_csv(path, records)

    assert read_predictions_csv(path) == records
    assert [item.name for item in tmp_path.iterdir()] == ['predictions.csv']
    with pytest.raises(ValueError, match='extra'):
        write_predictions_csv(path, [{**records[0], 'note': 'x'}])
    with pytest.raises(ValueError, match='records'):
        write_predictions_csv(path, [])


@pytest.mark.parametrize('module', [binary_figures, diagnosis_metric],
                         ids=['binary_figures', 'diagnosis_metric'])
def test_docstring_examples(module):
    # A WARNING-level logger keeps the metric's INFO log out of the output
    # that doctest compares.
    MMLogger.get_instance(f'quiet-{uuid.uuid4().hex}', log_level='WARNING')

    result = doctest.testmod(module)

    assert result.attempted > 0
    assert result.failed == 0

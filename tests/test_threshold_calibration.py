"""Tests of the Youden threshold, threshold.json and calibration figures.

Every expected value is worked out by hand in a comment beside the case.
"""
import doctest
import importlib.util
import json
import logging
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT
from stbsm_mm.evaluation import (apply_threshold, brier_score,
                                 calibration_summary, compute_binary_figures,
                                 read_predictions_csv, read_threshold_json,
                                 reliability_curve, write_metrics_json,
                                 write_predictions_csv, write_threshold_json,
                                 youden_threshold, youden_threshold_of_records)
from stbsm_mm.evaluation import calibration as calibration_module
from stbsm_mm.evaluation import threshold as threshold_module
from stbsm_mm.evaluation.summary import (summarize_predictions,
                                         summary_markdown)

CLASSES = ('STB', 'SM')


def row(roi_id, patient_id, label_index, stb_score):
    return dict(roi_id=roi_id, patient_id=patient_id, site='site-A',
                label=CLASSES[label_index], label_index=label_index,
                score_STB=stb_score, score_SM=1.0 - stb_score,
                pred_label=CLASSES[0 if stb_score >= 0.5 else 1])


# ---------------------------------------------------------------- Youden


def test_youden_six_scores():
    # Candidates and J = TPR - FPR: 0.9 -> 1/3, 0.8 -> 2/3, 0.6 -> 1/3,
    # 0.4 -> 0, 0.35 -> 1/3, 0.1 -> 0. The maximum is at 0.8.
    labels = [0, 0, 1, 1, 0, 1]
    scores = [0.1, 0.4, 0.35, 0.8, 0.6, 0.9]
    assert youden_threshold(labels, scores) == 0.8


def test_youden_tie_closest_to_half():
    # 0.8 and 0.35 both reach J = 0.5; 0.35 is 0.15 from 0.5, 0.8 is 0.3.
    assert youden_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.35


def test_youden_tie_equidistant_takes_higher():
    # 0.8 and 0.2 both reach J = 0.5 and lie 0.3 from 0.5.
    assert youden_threshold([0, 1, 0, 1], [0.1, 0.2, 0.7, 0.8]) == 0.8


def test_youden_accepts_booleans():
    labels = [False, False, True, True]
    assert youden_threshold(labels, [0.2, 0.3, 0.6, 0.7]) == 0.6


def test_youden_gives_best_sum():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 40)
    scores = np.clip(labels * 0.3 + rng.random(40) * 0.7, 0, 1)
    chosen = youden_threshold(labels, scores)

    def youden_j(threshold):
        called = scores >= threshold
        sensitivity = called[labels == 1].mean()
        specificity = (~called[labels == 0]).mean()
        return sensitivity + specificity - 1

    best = max(youden_j(score) for score in scores)
    assert youden_j(chosen) == pytest.approx(best)


@pytest.mark.parametrize('labels', [[1, 1, 1], [0, 0]])
def test_youden_one_class_rejected(labels):
    with pytest.raises(ValueError, match='no Youden threshold exists'):
        youden_threshold(labels, [0.5] * len(labels))


@pytest.mark.parametrize('labels, scores, message', [
    ([0, 1], [0.5], 'one entry per image'),
    ([0, 1], [0.5, 1.5], r'positive_scores\[1\] = 1.5'),
    ([0, 2], [0.5, 0.6], r'got the values \[0, 2\]'),
    ([], [], 'empty'),
])
def test_youden_invalid_inputs(labels, scores, message):
    with pytest.raises(ValueError, match=message):
        youden_threshold(labels, scores)


def test_youden_of_records_positive_sm():
    # With SM positive the labels flip: SM images are p2's 0.3 and 0.1
    # STB scores, i.e. SM scores 0.7 and 0.9, against 0.2 and 0.4.
    rows = [row('r1', 'p1', 0, 0.8), row('r2', 'p1', 0, 0.6),
            row('r3', 'p2', 1, 0.3), row('r4', 'p2', 1, 0.1)]
    threshold = youden_threshold_of_records(rows, CLASSES, 'SM')
    assert threshold == pytest.approx(0.7)


# ------------------------------------------------------ threshold.json


def test_threshold_json_round_trip(tmp_path):
    path = write_threshold_json(tmp_path / 'threshold.json', 0.42, 'val',
                                'STB', 15, 'ab' * 32)
    record = read_threshold_json(path)
    assert record == {'threshold': 0.42, 'method': 'youden', 'split': 'val',
                      'positive_class': 'STB', 'n_images': 15,
                      'checkpoint_sha256': 'ab' * 32}


def test_threshold_json_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match='--threshold youden'):
        read_threshold_json(tmp_path / 'none.json')


@pytest.mark.parametrize('content, message', [
    ('{"threshold": 0.4}', 'lacks the keys'),
    ('[1, 2]', 'must contain a JSON object'),
    ('not json', 'is not valid JSON'),
])
def test_threshold_json_invalid(tmp_path, content, message):
    path = tmp_path / 'threshold.json'
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_threshold_json(path)


def test_threshold_json_out_of_range(tmp_path):
    path = write_threshold_json(tmp_path / 'threshold.json', 0.4, 'val',
                                'STB', 4, 'cd' * 32)
    record = json.loads(path.read_text())
    record['threshold'] = 1.5
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match='has threshold 1.5'):
        read_threshold_json(path)


def test_apply_threshold_rewrites_outputs(tmp_path):
    rows = [row('r1', 'p1', 0, 0.9), row('r2', 'p1', 0, 0.55),
            row('r3', 'p2', 1, 0.6), row('r4', 'p2', 1, 0.2)]
    labels = [r['label_index'] for r in rows]
    scores = [[r['score_STB'], r['score_SM']] for r in rows]
    write_predictions_csv(tmp_path / 'predictions.csv', rows)
    write_metrics_json(tmp_path / 'metrics.json',
                       compute_binary_figures(labels, scores, CLASSES, 'STB'))

    # At 0.58: r1 and r3 are called STB, r2 and r4 SM.
    figures = apply_threshold(tmp_path, 0.58)

    saved = json.loads((tmp_path / 'metrics.json').read_text())
    assert saved == figures
    assert saved['threshold'] == 0.58
    assert saved['sensitivity'] == 0.5
    assert saved['specificity'] == 0.5
    assert saved['confusion_matrix'] == [[1, 1], [1, 1]]
    calls = [r['pred_label'] for r in read_predictions_csv(
        tmp_path / 'predictions.csv')]
    assert calls == ['STB', 'SM', 'STB', 'SM']


def test_apply_threshold_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match='predictions.csv not found'):
        apply_threshold(tmp_path, 0.5)


# ---------------------------------------------------------- calibration


def test_brier_four_images():
    # (0.1^2 + 0.2^2 + 0.4^2 + 0.5^2) / 4 = 0.46 / 4
    assert brier_score([1, 0, 1, 0], [0.9, 0.2, 0.6, 0.5]) == pytest.approx(
        0.115)


def test_brier_one_class():
    # (0.1^2 + 0.3^2) / 2
    assert brier_score([0, 0], [0.1, 0.3]) == pytest.approx(0.05)


def test_brier_invalid_score():
    with pytest.raises(ValueError, match='in \\[0, 1\\]'):
        brier_score([0, 1], [0.1, -0.2])


def test_reliability_uniform_bins():
    # Edges 0, .2, .4, .6, .8, 1. Bins 0, 2 and 4 hold two images each.
    curve = reliability_curve([0, 0, 1, 1, 1, 0],
                              [0.05, 0.15, 0.45, 0.55, 0.95, 0.9], n_bins=5)
    assert curve['n_bins'] == 5
    assert curve['strategy'] == 'uniform'
    assert curve['bin_edges'] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    assert curve['counts'] == [2, 2, 2]
    assert curve['mean_predicted'] == pytest.approx([0.1, 0.5, 0.925])
    assert curve['observed_fraction'] == pytest.approx([0.0, 1.0, 0.5])
    # (0.05^2 + 0.15^2 + 0.55^2 + 0.45^2 + 0.05^2 + 0.9^2) / 6
    assert curve['brier'] == pytest.approx(1.3425 / 6)


def test_reliability_edge_goes_low():
    # 0.2 sits on the edge between bins 0 and 1 and falls into bin 0.
    curve = reliability_curve([1, 0], [0.2, 0.3], n_bins=5)
    assert curve['counts'] == [1, 1]
    assert curve['mean_predicted'] == pytest.approx([0.2, 0.3])
    assert curve['observed_fraction'] == [1.0, 0.0]


def test_reliability_quantile_bins():
    curve = reliability_curve([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], n_bins=2,
                              strategy='quantile')
    assert curve['bin_edges'] == pytest.approx([0.1, 0.25, 0.4])
    assert curve['counts'] == [2, 2]
    assert curve['observed_fraction'] == [0.5, 0.5]


@pytest.mark.parametrize('options, message', [
    (dict(n_bins=0), 'n_bins must be a positive integer'),
    (dict(n_bins=2.5), 'n_bins must be a positive integer'),
    (dict(strategy='kmeans'), "got 'kmeans'"),
])
def test_reliability_invalid_options(options, message):
    with pytest.raises(ValueError, match=message):
        reliability_curve([0, 1], [0.2, 0.8], **options)


def test_calibration_both_levels():
    # Image: (0.1^2 + 0.5^2 + 0.2^2) / 3 = 0.1. Patient p1 (STB) has mean
    # STB score 0.7 and p2 (SM) 0.2: (0.3^2 + 0.2^2) / 2 = 0.065.
    rows = [row('r1', 'p1', 0, 0.9), row('r2', 'p1', 0, 0.5),
            row('r3', 'p2', 1, 0.2)]
    result = calibration_summary(rows, CLASSES, 'STB')
    assert result['image']['brier'] == pytest.approx(0.1)
    assert result['patient']['brier'] == pytest.approx(0.065)
    assert result['patient']['reliability']['counts'] == [1, 1]
    assert result['image']['reliability']['brier'] == result['image']['brier']


def test_calibration_max_aggregation():
    # With max, p1's STB score is 0.9: (0.1^2 + 0.2^2) / 2 = 0.025.
    rows = [row('r1', 'p1', 0, 0.9), row('r2', 'p1', 0, 0.5),
            row('r3', 'p2', 1, 0.2)]
    result = calibration_summary(rows, CLASSES, 'STB', aggregation='max')
    assert result['patient']['brier'] == pytest.approx(0.025)


def test_summary_has_calibration(tmp_path):
    rows = [row('r1', 'p1', 0, 0.9), row('r2', 'p1', 0, 0.5),
            row('r3', 'p2', 1, 0.2), row('r4', 'p3', 1, 0.4)]
    path = write_predictions_csv(tmp_path / 'predictions.csv', rows)
    summary = summarize_predictions(path, CLASSES, 'STB', n_resamples=50)

    # Image: (0.01 + 0.25 + 0.04 + 0.16) / 4 = 0.115. Patients: p1 0.7,
    # p2 0.2, p3 0.4: (0.09 + 0.04 + 0.16) / 3.
    calibration = summary['calibration']
    assert calibration['image']['brier'] == pytest.approx(0.115)
    assert calibration['patient']['brier'] == pytest.approx(0.29 / 3)
    assert calibration['image']['reliability']['n_bins'] == 10
    assert sum(calibration['patient']['reliability']['counts']) == 3
    json.dumps(summary, allow_nan=False)

    text = summary_markdown(summary)
    assert 'image level 0.1150, patient level 0.0967' in text


# ------------------------------------------------------- tools/test.py
# Option errors are raised before any model is built, so tools/test.py runs
# in this process here. tests/test_pipeline_real.py runs it end to end.


def load_test_tool():
    spec = importlib.util.spec_from_file_location(
        'test_tool', REPO_ROOT / 'tools' / 'test.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def run_test_tool(monkeypatch, *args):
    # parse_args sets LOCAL_RANK; monkeypatch restores it afterwards.
    monkeypatch.setenv('LOCAL_RANK', '0')
    monkeypatch.setattr(sys, 'argv',
                        ['tools/test.py', *[str(arg) for arg in args]])
    load_test_tool().main()


def test_test_tool_options_exclusive(monkeypatch, capsys):
    with pytest.raises(SystemExit) as error:
        run_test_tool(monkeypatch, 'configs/stbsm/resnet34_stbsm.py',
                      'model.pth', '--threshold', 'youden',
                      '--threshold-file', 'threshold.json')
    assert error.value.code == 2
    assert 'not allowed with argument --threshold' in capsys.readouterr().err


@pytest.mark.parametrize('value', ['1.5', 'best', 'nan'])
def test_test_tool_threshold_invalid(monkeypatch, capsys, value):
    with pytest.raises(SystemExit):
        run_test_tool(monkeypatch, 'configs/stbsm/resnet34_stbsm.py',
                      'model.pth', '--threshold', value)
    assert f'invalid threshold {value!r}' in capsys.readouterr().err


def test_test_tool_threshold_file_missing(monkeypatch, tmp_path):
    checkpoint = tmp_path / 'model.pth'
    checkpoint.write_bytes(b'')
    with pytest.raises(SystemExit) as error:
        run_test_tool(monkeypatch, 'configs/stbsm/resnet34_stbsm.py',
                      checkpoint, '--threshold-file', tmp_path / 't.json')
    assert str(error.value) == (
        f'error: threshold file {tmp_path / "t.json"} not found. Write it '
        f'first with tools/test.py --threshold youden on the validation '
        f'split.')


def test_test_tool_sets_threshold():
    from mmengine.config import Config
    cfg = Config.fromfile(REPO_ROOT / 'configs/stbsm/resnet34_stbsm.py')
    load_test_tool().set_evaluator_threshold(cfg, 0.37)
    assert cfg.test_evaluator.threshold == 0.37


def test_module_examples():
    for module in (threshold_module, calibration_module):
        result = doctest.testmod(module)
        assert result.failed == 0, module.__name__
        assert result.attempted > 0, module.__name__


@pytest.mark.parametrize('sensitivity, specificity, warned', [
    (1.0, 0.0, True),
    (0.4, 0.5, True),
    (0.8, 0.7, False),
])
def test_youden_log_warns_uninformative(sensitivity, specificity, warned):
    from mmengine.logging import MMLogger

    logger = MMLogger.get_instance('youden_log_test')
    messages = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(
        (record.levelno, record.getMessage()))
    logger.addHandler(handler)
    try:
        load_test_tool().log_youden_threshold(
            0.25, dict(sensitivity=sensitivity, specificity=specificity,
                       auc=0.4), 'val')
    finally:
        logger.removeHandler(handler)

    infos = [text for level, text in messages if level == logging.INFO]
    warnings = [text for level, text in messages if level == logging.WARNING]
    assert any('Youden threshold on split val: 0.25' in t for t in infos)
    assert bool(warnings) is warned
    if warned:
        assert 'not informative' in warnings[0]


def test_summary_markdown_lists_npv(tmp_path):
    # Threshold 0.5 on STB scores: r1 and r2 are called STB (both STB),
    # r3 and r4 are called SM (both SM), so NPV = TN / (TN + FN) = 2 / 2.
    rows = [row('r1', 'p1', 0, 0.9), row('r2', 'p1', 0, 0.5),
            row('r3', 'p2', 1, 0.2), row('r4', 'p3', 1, 0.4)]
    path = write_predictions_csv(tmp_path / 'predictions.csv', rows)
    summary = summarize_predictions(path, CLASSES, 'STB', n_resamples=50)

    lines = summary_markdown(summary).splitlines()
    npv = [line for line in lines if line.startswith('| npv |')]
    assert len(npv) == 1
    assert npv[0].startswith('| npv | 100.0 (')

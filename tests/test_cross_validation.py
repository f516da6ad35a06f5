"""Cross-validation summaries and tools/cross_validate.py on real crops."""
import csv
import json
import statistics

import pytest

from conftest import run_tool
from stbsm_mm.evaluation.cross_validation import (check_out_of_fold,
                                                  summarize_folds)

TINY = [
    'train_cfg.max_epochs=1',
    'train_dataloader.dataset.times=1',
    'train_dataloader.batch_size=8',
    'train_dataloader.dataset.dataset.indices=8',
]


def test_undefined_auc_left_out_of_mean():
    summary = summarize_folds([{'auc': 0.9}, {'auc': None}, {'auc': 0.5}],
                              figures=['auc'])
    assert summary['auc']['per_fold'] == [0.9, None, 0.5]
    assert summary['auc']['mean'] == pytest.approx(0.7)
    assert summary['auc']['std'] == pytest.approx(statistics.stdev([0.9,
                                                                    0.5]))
    assert summary['auc']['n_folds_used'] == 2
    assert summary['auc']['n_folds'] == 3


def test_figure_undefined_in_every_fold():
    summary = summarize_folds([{'auc': None}, {'auc': None}],
                              figures=['auc'])
    assert summary['auc']['mean'] is None
    assert summary['auc']['std'] is None
    assert summary['auc']['n_folds_used'] == 0


def test_single_defined_fold_has_no_std():
    summary = summarize_folds([{'accuracy': 0.5}], figures=['accuracy'])
    assert summary['accuracy']['mean'] == 0.5
    assert summary['accuracy']['std'] is None


def test_empty_folds_rejected():
    with pytest.raises(ValueError, match='fold_figures'):
        summarize_folds([])


def test_repeated_roi_detected():
    assert check_out_of_fold([{'roi_id': 'a'}, {'roi_id': 'b'}]) is None
    assert check_out_of_fold([{'roi_id': 'a'}, {'roi_id': 'a'}]) == ['a']


def test_cross_validate_two_folds(spider_prepared, tmp_path):
    result = run_tool('tools/cross_validate.py',
                      'configs/stbsm/resnet34_stbsm.py', '--data-root',
                      spider_prepared, '--work-dir', tmp_path, '--folds', 0,
                      1, '--cfg-options', *TINY)
    assert 'Cross-validation results written' in result.output

    summary = json.loads((tmp_path / 'cv_summary.json').read_text())
    assert summary['folds'] == [0, 1]
    fold_metrics = [
        json.loads((tmp_path / f'fold{k}' / 'val' / 'metrics.json').read_text())
        for k in (0, 1)
    ]
    accuracy = summary['summary']['accuracy']
    assert accuracy['per_fold'] == [m['accuracy'] for m in fold_metrics]
    assert accuracy['mean'] == pytest.approx(
        statistics.mean(m['accuracy'] for m in fold_metrics))

    # Each held-out ROI is predicted once, by the fold that held it out.
    annotations = spider_prepared / 'annotations'
    held_out = []
    for k in (0, 1):
        data = json.loads((annotations / f'fold{k}_val.json').read_text())
        held_out += [info['roi_id'] for info in data['data_list']]
    with open(tmp_path / 'cv_predictions.csv', newline='') as file:
        pooled = [row['roi_id'] for row in csv.DictReader(file)]
    assert sorted(pooled) == sorted(held_out)
    assert summary['pooled_out_of_fold']['n_images'] == len(held_out)

    again = run_tool('tools/cross_validate.py',
                     'configs/stbsm/resnet34_stbsm.py', '--data-root',
                     spider_prepared, '--work-dir', tmp_path, '--folds', 0,
                     1, '--cfg-options', *TINY)
    assert 'fold 0: reusing' in again.output
    assert 'fold 1: reusing' in again.output


def test_cross_validate_unknown_fold(spider_prepared, tmp_path):
    result = run_tool('tools/cross_validate.py',
                      'configs/stbsm/resnet34_stbsm.py', '--data-root',
                      spider_prepared, '--work-dir', tmp_path, '--folds', 7,
                      expect_ok=False)
    assert result.returncode == 1
    assert 'folds [7] do not exist' in result.output
